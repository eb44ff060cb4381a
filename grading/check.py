"""``python -m grading check``: what a student sees before submitting.

In the released student tree (or in this repository) it reports, in order: the submission items found and missing,
the zip's size against the handout's cap, edits outside the TODO regions (a diff against the pristine starter),
flagged code in the regions (``grading.scan``), and then runs each task's public tests (pytest in a subprocess,
``-q``, from the tree's root) and prints a table task -> passed / failed -> points. Exit code 0 only when every
public test passes (1 otherwise); an unknown homework or a path that is not a tree is one line and exit code 2.

Starters: a released tree ships the pristine starter files under ``.grading/starter/<path>``; in this repository
the starter is ``markers.strip(reference)`` and the reference itself stands in for a submission (its bodies are
read between ``# BEGIN TODO`` / ``# END TODO`` markers, so the whole pipeline runs on it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from common.cli import UserError, finite, user_errors
from grading import markers
from grading.homeworks import get_homework, node_file
from grading.scan import Flag, scan_region
from grading.spec import Homework, Task
from grading.submit import CONTEXT, MB, build_zip, collect_items, resolve_tree, zip_contents

STARTER_DIR = ".grading/starter"
_TAIL_LINES = 15


@dataclass
class FileReport:
    """One region file of the tree read against its starter."""

    path: str
    missing: tuple[str, ...] = ()  # region ids whose TODO markers are gone, doubled or out of order
    diff: str = ""  # unified diff of the edits outside the regions ("" = none)
    flags: list[tuple[int, str, Flag]] = field(default_factory=list)  # (file line, region id, flag)
    note: str = ""  # why the file could not be (fully) checked


def as_submission(reference: str, path: str) -> str:
    """The reference with ``# BEGIN/END SOLUTION`` turned into the starter's ``# BEGIN/END TODO <id>`` markers."""
    lines = reference.splitlines(keepends=True)
    for r in markers.find_regions(reference, path):
        lines[r.begin - 1] = f"{r.indent}# BEGIN TODO {r.id}\n"
        lines[r.end - 1] = f"{r.indent}# END TODO {r.id}\n"
    return "".join(lines)


def region_texts(root: Path, hw: Homework) -> tuple[str, dict[str, tuple[str | None, str | None]]]:
    """(kind of tree, relpath -> (submitted text or None, starter text or None)) for every region file.

    kind: "release" (starter copies under .grading/starter), "repo" (reference files with SOLUTION markers) or
    "release without starter copies" (TODO markers, no pristine copy: outside edits cannot be checked).
    """
    starters = root / STARTER_DIR
    if starters.is_dir():
        out = {}
        for path in sorted(starters.rglob("*.py")):
            rel = path.relative_to(starters).as_posix()
            mine = root / rel
            out[rel] = (mine.read_text(encoding="utf-8", errors="replace") if mine.is_file() else None,
                        path.read_text(encoding="utf-8"))
        return "release", out
    out, kind = {}, "repo"
    for pkg in hw.packages:
        for path in sorted((root / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            rel = path.relative_to(root).as_posix()
            if "# BEGIN SOLUTION" in text and _has_regions(text, rel):
                out[rel] = (text, None)
            elif "# BEGIN TODO " in text:
                out[rel], kind = (text, None), "release without starter copies"
    return kind, out


def _has_regions(text: str, rel: str) -> bool:
    """A reference file with regions (a file whose markers do not read counts: check_file reports why)."""
    try:
        return bool(markers.find_regions(text, rel))
    except markers.MarkerError:
        return True


def _begin_lines(text: str) -> dict[str, int]:
    """Region id -> 1-based line of its ``# BEGIN TODO <id>`` marker."""
    out = {}
    for k, line in enumerate(markers.normalise(text).splitlines(), 1):
        if line.strip().startswith("# BEGIN TODO "):
            out.setdefault(line.strip()[len("# BEGIN TODO "):], k)
    return out


def check_file(rel: str, submitted: str | None, starter: str | None, hw: Homework) -> FileReport:
    """Missing regions, the outside diff and the scan flags of one file (only the homework's regions are scanned)."""
    report = FileReport(rel)
    if submitted is None:
        report.note = "missing from the tree"
        return report
    if starter is None and "# BEGIN SOLUTION" in submitted:
        try:
            submitted, starter = as_submission(submitted, rel), markers.strip(submitted, rel)
        except markers.MarkerError as err:
            report.note = f"regions not readable ({err})"
            return report
    elif starter is None:
        starter, report.note = submitted, f"no pristine starter in {STARTER_DIR}/: outside edits not checked"
    got = markers.extract(submitted, starter)
    report.missing = tuple(r for r in got.missing if r in hw.region_ids)
    if got.outside_edited:
        report.diff = markers.outside_diff(submitted, starter, rel)
    begins = _begin_lines(submitted)
    for rid, body in sorted(got.bodies.items()):
        if rid in hw.region_ids:
            report.flags += [(begins[rid] + f.line, rid, f) for f in scan_region(body, submitted, hw.forbidden_calls)]
    return report


@dataclass
class TestRun:
    status: str  # "passed", "failed", "missing", "timeout" or "-" (no public tests)
    summary: str = ""
    tail: str = ""


def run_public_tests(root: Path, task: Task, timeout: float) -> TestRun:
    """The task's public tests in a fresh ``python -m pytest -q`` from the tree's root; passed iff exit code 0."""
    if not task.public_tests:
        return TestRun("-")
    absent = sorted({node_file(n) for n in task.public_tests if not (root / node_file(n)).is_file()})
    if absent:
        return TestRun("missing", f"not in this tree: {', '.join(absent)}")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *task.public_tests]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return TestRun("timeout", f"still running after {timeout:g} s")
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    summary = next((ln.strip("= ") for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                    or "error" in ln)), f"pytest exit code {proc.returncode}")
    status = "passed" if proc.returncode == 0 else "failed"
    return TestRun(status, summary, "" if status == "passed" else "\n".join(lines[-_TAIL_LINES:]))


def report_items(root: Path, hw: Homework) -> int:
    """Print the items and the zip size; returns the number of problems (missing items, links, over a cap)."""
    collected = collect_items(root, hw)
    where = f"under {hw.zip_root}/" if hw.zip_root else "at the zip's root"
    click.echo(f"Submission items (zip {hw.zip_name}, files {where}):")
    for item, found in collected.files:
        state = "ok" if found else ("MISSING" if item.required else "-")
        count = f"{len(found)} file{'s' * (len(found) != 1)}" if found else ("" if item.required else "(optional)")
        click.echo(f"  {state:8s} {item.pattern:40s} {count:11s} {item.description}")
    for line in collected.problems:
        click.echo(f"  PROBLEM  {line}")
    size = len(build_zip(zip_contents(root, hw, collected)))
    cap = f"cap {hw.size_cap_mb:g} MB" if hw.size_cap_mb is not None else "no size cap"
    over = hw.size_cap_mb is not None and size > hw.size_cap_mb * MB
    click.echo(f"Zip size: {size / MB:.2f} MB ({cap}){'  OVER THE CAP' if over else ''}")
    return len(collected.missing) + len(collected.problems) + int(over)


def report_regions(root: Path, hw: Homework) -> int:
    """Print outside edits, missing regions and flags; returns the number of problems."""
    kind, texts = region_texts(root, hw)
    reports = [check_file(rel, sub, start, hw) for rel, (sub, start) in texts.items()]
    click.echo(f"Code ({kind}, {len(reports)} files with TODO regions):")
    problems = 0
    for rep in reports:
        if rep.note:
            click.echo(f"  {rep.path}: {rep.note}")
            problems += rep.note == "missing from the tree" or rep.note.startswith("regions not readable")
        if rep.missing:
            click.echo(f"  {rep.path}: TODO markers missing or moved for {', '.join(rep.missing)} (these regions "
                       "cannot be graded)")
        if rep.diff:
            click.echo(f"  {rep.path}: edited outside the TODO regions (the grader ignores these edits):")
            click.echo("".join(f"    {line}" for line in rep.diff.splitlines(keepends=True)).rstrip())
        for line, rid, flag in rep.flags:
            click.echo(f"  {rep.path}:{line} [{rid}] {flag.kind}: {flag.message}")
        problems += len(rep.missing) + bool(rep.diff) + len(rep.flags)
    if not any(r.note or r.missing or r.diff or r.flags for r in reports):
        click.echo("  no edits outside the TODO regions, no flagged code")
    return problems


def report_tests(root: Path, hw: Homework, tasks: tuple[Task, ...], timeout: float) -> bool:
    """Run and tabulate the public tests; True when every one passed."""
    click.echo("Public tests (python -m pytest -q, one run per task):")
    runs = []
    for task in tasks:
        run = run_public_tests(root, task, timeout)
        runs.append((task, run))
        if run.tail:
            click.echo(f"--- {task.id}: {run.summary}\n{run.tail}\n---")
    click.echo(f"  {'task':22s} {'result':8s} {'points':>7s}  tests")
    for task, run in runs:
        points = f"{task.points:.4g}" + ("*" if task.optional else "")
        click.echo(f"  {task.id:22s} {run.status:8s} {points:>7s}  {run.summary or task.title}")
    click.echo(f"  total {hw.total_points:.4g} points (* = optional). Passing the public tests does not grant the "
               "points: hidden tests and the results decide.")
    return all(run.status in ("passed", "-") for _, run in runs)


def select_tasks(hw: Homework, ids: tuple[str, ...]) -> tuple[Task, ...]:
    unknown = [i for i in ids if i not in {t.id for t in hw.tasks}]
    if unknown:
        raise UserError(f"{hw.id} has no task {unknown[0]!r}; tasks: {', '.join(t.id for t in hw.tasks)}")
    return tuple(t for t in hw.tasks if not ids or t.id in ids)


@click.command("check", context_settings=CONTEXT)
@click.argument("hw")
@click.option("--path", default=".", type=click.Path(path_type=Path), help="The released homework folder.")
@click.option("--task", "task_ids", multiple=True, help="Run only this task's public tests (repeatable).")
@click.option("--timeout", default=600.0, type=finite(min=1), show_default=True,
              help="Seconds allowed per task's tests.")
@user_errors
def check(hw: str, path: Path, task_ids: tuple[str, ...], timeout: float) -> None:
    """Check homework HW before submitting: items, size, edits outside TODO regions, flagged code, public tests.

    Exit code 0 only when every public test passes.

    \b
    Examples:
      python -m grading check kaist-a4
      python -m grading check nycu-lab3 --path ~/lab3 --task task1-sds
      python -m grading check umich-hw5-gan --timeout 300
    """
    homework = get_homework(hw)
    root = resolve_tree(path, homework)
    tasks = select_tasks(homework, task_ids)
    click.echo(f"{homework.id}: {homework.title} ({root.resolve()})")
    problems = report_items(root, homework) + report_regions(root, homework)
    ok = report_tests(root, homework, tasks, timeout)
    click.echo(f"{problems} other problem{'s' * (problems != 1)} above." if problems else "No other problems.")
    if not ok:
        click.get_current_context().exit(1)
