"""The release gate (issue #15 part 3): run a built release the way a student and the grader will, before writing it.

(a) the starter parses, every stub raises its TODO, ruff's F rules are clean on the stubbed files; (b) every public
test fails on the raw starter; (c) the reference bodies survive the submission round trip and, grafted back, pass
every public test; (d) every CLI of the shipped packages still runs on the raw starter (plus a 2-step toy DPS run
where DPS ships); (e) ``grading.grade.grade_reference_and_starter`` gives the reference full marks and the starter
zero, once that function exists. Each step is a function; the first failure raises :class:`GateError` (one line).
Subprocesses run with ``cwd`` and ``PYTHONPATH`` at the tree under test, and (d) checks where packages came from.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import UserError
from grading import markers, tree
from grading.tree import write_tree

if TYPE_CHECKING:
    from grading.release import Release


class GateError(UserError):
    """A release gate step failed (one line naming the step)."""


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(cmd: list[str], root: Path, timeout: int, step: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GateError(f"release gate ({step}) ran past --timeout {timeout} s") from None


def gate_static(rel: Release, root: Path, timeout: int = 600) -> str:
    """(a) Every Python file of the starter parses, every stub raises its TODO, ruff's F rules are clean."""
    py = [p for p in rel.student if p.endswith(".py")]
    for path in py:
        try:
            ast.parse(rel.student[path], path)
        except SyntaxError as err:
            raise GateError(f"release gate (a): {path} does not parse ({err.msg}, line {err.lineno})") from None
    stubs = 0
    for path, s in rel.stripped.items():
        for region in s.regions:
            if not stub_raises(s.starter, region.id):
                raise GateError(f"release gate (a): stub of {region.id} in {path} does not raise its TODO")
            stubs += 1
    linted = sorted(set(rel.stripped) | set(rel.stubbed))
    ruff = _ruff()
    if ruff is None:
        return f"{len(py)} Python files parse, {stubs} stubs raise; ruff not installed: lint skipped"
    out = _run([*ruff, "check", "--no-cache", "--select", "F", "--output-format", "concise", *linted], root,
               timeout, "a")
    errors = [line for line in out.stdout.splitlines() if line.strip() and ": F" in line]
    if out.returncode != 0:
        first = errors[0] if errors else (out.stderr.strip().splitlines() or ["ruff failed"])[-1]
        raise GateError(f"release gate (a): starter lint: {first} ({len(errors)} error(s))")
    return f"{len(py)} Python files parse, {stubs} stubs raise, ruff F clean on {len(linted)} stubbed files"


def _ruff() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    return [found] if found else None


_RUNNER = r"""
import contextlib, io, json, runpy, sys
commands, packages, pytest_args = json.loads(sys.argv[1])
results, outcomes = [], {}
for argv in commands:  # each like ``python -m argv[0] argv[1:]``, output captured
    sys.argv, buf, code = list(argv), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException as exc:
        code, _ = 1, buf.write(f"\n{type(exc).__name__}: {exc}")
    results.append([code, (buf.getvalue().strip().splitlines() or [""])[-1]])


class Record:  # test node id -> passed / failed / skipped; a file that cannot be collected -> uncollectable
    def pytest_runtest_logreport(self, report):
        if report.failed:
            outcomes[report.nodeid] = "failed"
        elif report.skipped and outcomes.get(report.nodeid) != "failed":
            outcomes[report.nodeid] = "skipped"
        elif report.when == "call" and report.nodeid not in outcomes:
            outcomes[report.nodeid] = "passed"

    def pytest_collectreport(self, report):
        if report.failed:
            outcomes[report.nodeid or "<collection>"] = "uncollectable"


if pytest_args is not None:
    import pytest
    sys.argv = ["pytest"]
    pytest.main(pytest_args, plugins=[Record()])
origins = {p: getattr(sys.modules.get(p), "__file__", None) for p in packages}
print("GATE-RUN " + json.dumps({"results": results, "outcomes": outcomes, "origins": origins}))
"""


@dataclass(frozen=True)
class TreeRun:
    """What one process in a release tree did: each command's (exit code, last output line), each test's outcome
    (node id -> passed / failed / skipped / uncollectable), and the file each top-level package was imported from."""

    results: tuple[tuple[int, str], ...]
    outcomes: dict[str, str]
    origins: dict[str, str | None]


def run_in_tree(root: Path, commands: list[tuple[str, ...]], timeout: int, step: str, pytest_args: list[str] | None
                = None) -> TreeRun:
    """Run ``commands`` (module argv, like ``python -m``), then ``pytest -q pytest_args`` if given (``[]`` is the
    student's ``python -m pytest -q``), in one fresh process in ``root``."""
    packages = sorted({p.parent.name for p in root.glob("*/__init__.py")})
    args = None if pytest_args is None else ["-q", "-p", "no:cacheprovider", *pytest_args]
    out = _run([sys.executable, "-c", _RUNNER, json.dumps([commands, packages, args])], root, timeout, step)
    line = next((s for s in out.stdout.splitlines() if s.startswith("GATE-RUN ")), None)
    if line is None:
        tail = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()[-1]
        raise GateError(f"release gate ({step}): the run in the {root.name} tree crashed: {tail}")
    report = json.loads(line[len("GATE-RUN "):])
    return TreeRun(tuple(map(tuple, report["results"])), report["outcomes"], report["origins"])


def check_collected(outcomes: dict[str, str], entries: tuple[str, ...], step: str) -> None:
    """Every public test entry of the spec was collected by the student's ``pytest`` (and nothing else was)."""
    missing = [e for e in entries if not any(tree.is_public(t, (e,)) for t in outcomes)]
    if missing:
        raise GateError(f"release gate ({step}): public test {missing[0]} is not collected by pytest in the tree")
    extra = sorted(t for t, o in outcomes.items() if o != "uncollectable" and not tree.is_public(t, entries))
    if extra:
        raise GateError(f"release gate ({step}): pytest in the tree runs {extra[0]}, which is not a public test")


def check_starter_tests(outcomes: dict[str, str]) -> str:
    """(b) Every public test fails on the raw starter, and every test file can be collected there."""
    bad = sorted(t for t, o in outcomes.items() if o == "uncollectable")
    if bad:
        raise GateError(f"release gate (b): public tests cannot be collected on the starter: {', '.join(bad)}")
    passing = sorted(t for t, o in outcomes.items() if o == "passed")
    if passing:
        raise GateError(f"release gate (b): {len(passing)} public test(s) pass on the raw starter: "
                        f"{', '.join(passing[:5])}")
    failed = sum(o == "failed" for o in outcomes.values())
    return f"{failed} public tests fail on the raw starter ({len(outcomes) - failed} skipped)"


def check_graft_tests(outcomes: dict[str, str], starter: dict[str, str], expected: bool) -> str:
    """(c) The grafted reference passes every public test, and each of them failed on the starter."""
    failing = sorted(t for t, o in outcomes.items() if o in ("failed", "uncollectable"))
    if failing:
        raise GateError(f"release gate (c): the reference grafted into the starter fails {failing[0]}")
    passed = sorted(t for t, o in outcomes.items() if o == "passed")
    if expected and not passed:
        raise GateError("release gate (c): no public test ran on the grafted reference (all skipped)")
    unchecked = [t for t in passed if starter.get(t) != "failed"]
    if unchecked:
        raise GateError(f"release gate (c): {unchecked[0]} passes on the reference but did not fail on the starter")
    return f"{len(passed)} public tests pass with the reference grafted back ({len(outcomes) - len(passed)} skipped)"


def stub_raises(starter: str, region_id: str) -> bool:
    """True when the starter's TODO block of ``region_id`` ends in ``raise NotImplementedError("TODO <id>: ...")``."""
    lines = [s.strip() for s in starter.splitlines()]
    try:
        begin, end = lines.index(f"# BEGIN TODO {region_id}"), lines.index(f"# END TODO {region_id}")
    except ValueError:
        return False
    body = [s for s in lines[begin + 1:end] if s]
    return bool(body) and body[-1].startswith(f'raise NotImplementedError("TODO {region_id}: ')


def fill_starter(starter: str, bodies: dict[str, str]) -> str:
    """What a student hands in: the starter with ``bodies`` written between its TODO markers."""
    lines = starter.splitlines(keepends=True)
    for region_id, body in bodies.items():
        stripped = [s.strip() for s in lines]
        begin, end = stripped.index(f"# BEGIN TODO {region_id}"), stripped.index(f"# END TODO {region_id}")
        lines[begin + 1:end] = body.splitlines(keepends=True)
    return "".join(lines)


def check_round_trip(s: tree.Stripped) -> None:
    """The task bodies, written into the starter as a student would, come back out exactly and graft into
    ``s.graded``; raises ValueError otherwise."""
    bodies = {r.id: r.body for r in s.regions if r.id in s.task_ids}
    submitted = fill_starter(s.starter, bodies)
    got = markers.extract(submitted, s.starter)
    if got.missing or got.outside_edited:
        raise ValueError(f"{s.path}: the starter's TODO markers do not round-trip (missing {list(got.missing)})")
    for region_id, body in bodies.items():
        if markers.normalise(got.bodies[region_id]) != markers.normalise(body):
            raise ValueError(f"{s.path}: region {region_id} does not come back out of the starter unchanged")
    if markers.graft(s.reference, s.path, {i: got.bodies[i] for i in bodies}) != s.graded:
        raise ValueError(f"{s.path}: grafting the extracted bodies does not give the graded reference")


def cli_modules(files: dict[str, bytes], packages: list[str]) -> list[str]:
    """Modules of ``packages`` runnable with ``python -m`` (an ``if __name__ == "__main__":`` block or a package
    ``__main__.py``), sorted."""
    out = []
    for path, data in sorted(files.items()):
        if not path.endswith(".py") or path.split("/")[0] not in packages:
            continue
        module = path[:-3].replace("/", ".")
        if path.endswith("/__main__.py"):
            out.append(module[: -len(".__main__")])
        elif re.search(rb"(?m)^if __name__ == ['\"]__main__['\"]:", data):
            out.append(module)
    return sorted(set(out))


def _module(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def stub_callers(files: tree.Files, stubbed: dict[str, tuple[str, ...]]) -> list[str]:
    """``path:line uses name`` for shipped code (not tests) that still reads a helper the release stubs: such code
    raises in the student tree even once the homework is done (recorded as a warning in release.json)."""
    targets = {_module(p): set(names) for p, names in stubbed.items()}
    out = []
    for path, data in sorted(files.items()):
        if not path.endswith(".py") or path.startswith((".grading/", "tests/")):
            continue
        module_tree = ast.parse(data)
        names, aliases = set(targets.get(_module(path), ())), {}
        for node in ast.walk(module_tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names |= {a.asname or a.name for a in node.names if a.name in targets.get(node.module, ())}
                aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname: a.name for a in node.names if a.asname}
        for node in ast.walk(module_tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
                out.append(f"{path}:{node.lineno} uses {node.id}, which this release stubs")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.attr in targets.get(aliases.get(node.value.id, ""), ()):
                out.append(f"{path}:{node.lineno} uses {node.value.id}.{node.attr}, which this release stubs")
    return out


def smoke_commands(rel: Release, scratch: Path) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(argv, regions grafted first) of the outside-task runs: ``--help`` of every CLI of the shipped packages and,
    where DPS ships, a 2-step toy DPS run (``--scale 0`` on the raw starter; with only ``dps-update`` grafted, so
    DPS provably does not need the DDIM homework's regions)."""
    packages = ["common", *rel.hw.packages, "grading"]
    runs = [((module, "--help"), ()) for module in cli_modules(rel.student, packages)]
    if "dps" in rel.hw.packages:
        dps = ("dps.main", "--task", "inpainting", "--num_images", "1", "--batch_size", "1",
               "--num_inference_steps", "2", "--no-progress")
        runs.append(((*dps, "--scale", "0", "--save_dir", str(scratch / "dps-ddim")), ()))
        if "dps-update" in rel.hw.region_ids:
            runs.append(((*dps, "--save_dir", str(scratch / "dps")), ("dps-update",)))
    return runs


def check_smoke(commands: list[tuple[str, ...]], run: TreeRun, root: Path, graft: tuple[str, ...] = ()) -> list[str]:
    """(d) Every command exited 0 and every package came from ``root``; returns the commands as shown."""
    done = []
    for argv, (code, last) in zip(commands, run.results, strict=True):
        shown = "python -m " + " ".join(argv) + (f" (with {', '.join(graft)} grafted)" if graft else "")
        if code != 0:
            raise GateError(f"release gate (d): {shown} exits {code}: {last}")
        done.append(shown.replace(str(root.parent), "<work>"))
    for pkg, origin in sorted(run.origins.items()):
        if origin and not Path(origin).resolve().is_relative_to(root.resolve()):
            raise GateError(f"release gate (d): {pkg} was imported from {origin}, not from the release tree")
    return done


def gate_autograder(rel: Release, work: Path, source: tree.Files) -> dict:
    """(e) Full marks for the reference and zero for the starter through the autograder, when it exists.

    ``grade_reference_and_starter(hw, source_dir)`` gets the unzipped autograder (Gradescope's /autograder/source)
    and returns ``{"reference": points, "starter": points, "total": points, ...}`` (extra keys, e.g. a toy-band
    ``calibration``, go into release.json).
    """
    try:
        grade = importlib.import_module("grading.grade")
    except ImportError:
        grade = None
    check = getattr(grade, "grade_reference_and_starter", None)
    if check is None:
        return {"ok": None, "detail": "autograder gate: not available"}
    result = check(rel.hw, write_tree(source, work / "source"))
    total = result.get("total", rel.hw.total_points) if isinstance(result, dict) else rel.hw.total_points
    if not isinstance(result, dict) or result.get("reference") != total or result.get("starter") != 0:
        raise GateError(f"release gate (e): the autograder gives reference/starter {_summary(result)}, "
                        f"expected {total}/0")
    return {"ok": True, "detail": f"autograder: reference {total}/{total}, starter 0", "result": result}


def _summary(result: object) -> str:
    if isinstance(result, dict):
        return f"{result.get('reference')}/{result.get('starter')}"
    return repr(result)[:80]


def run_gate(rel: Release, work: Path, timeout: int, echo: Callable[[str], None], source: tree.Files,
             autograder: bool = True) -> dict:
    """All gate steps in order; the first failure raises :class:`GateError`. Returns the record for release.json.

    The raw-starter smoke commands of (d) share the process of (b) (one interpreter start less per homework).
    ``source`` is the autograder source for (e), with a preliminary release.json. Seconds go to ``echo`` only (the
    record stays machine-independent).
    """
    clock = time.monotonic()

    def done(step: str, detail: str) -> str:
        echo(f"[gate {step}] {detail} ({time.monotonic() - clock:.0f} s)")
        return detail

    starter = write_tree(rel.student, work / "starter")
    steps = {"a": done("a", gate_static(rel, starter, timeout))}
    smoke = smoke_commands(rel, work / "smoke")
    raw = [argv for argv, graft in smoke if not graft]
    first = run_in_tree(starter, raw, timeout, "b", [])  # the student's `python -m pytest -q`
    check_collected(first.outcomes, rel.tests, "b")
    steps["b"] = done("b", check_starter_tests(first.outcomes))
    for s in rel.stripped.values():
        try:
            check_round_trip(s)
        except ValueError as err:
            raise GateError(f"release gate (c): {err}") from None
    graft = run_in_tree(write_tree(rel.grafted(set(rel.hw.region_ids)), work / "graft"), [], timeout, "c", ["-x"])
    steps["c"] = done("c", check_graft_tests(graft.outcomes, first.outcomes, bool(rel.tests)))
    shown = check_smoke(raw, first, starter)
    for regions in sorted({g for _, g in smoke if g}):
        root = write_tree(rel.grafted(set(regions)), work / ("graft-" + "-".join(regions)))
        commands = [argv for argv, g in smoke if g == regions]
        shown += check_smoke(commands, run_in_tree(root, commands, timeout, "d"), root, regions)
    steps["d"] = done("d", f"{len(shown)} outside-task commands run on the starter")
    auto = gate_autograder(rel, work, source) if autograder else {"ok": None, "detail": "--no-autograder-gate"}
    done("e", auto["detail"])
    return {"skipped": False, "steps": steps, "smoke": shown, "autograder": auto,
            "public_tests": dict(sorted(first.outcomes.items()))}
