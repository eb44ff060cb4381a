"""``python -m grading release HW --out DIR`` (issue #15 part 3): the student tree, Gradescope's autograder.zip and
release.json of one homework, written only after a gate has run the release as a student and a grader would.

``DIR/student/``: ``common`` plus the homework's packages with every region stubbed (regions of other homeworks too,
hinted "(not part of HW)"), the homework's ``strip_functions`` stubbed, the public tests with their helpers, the
student-side ``grading``, ``.grading/starter/`` (pristine stubbed files), ``.ci/env``, a trimmed ``pyproject.toml`` and
a README. ``DIR/autograder.zip``: Gradescope's ``/autograder/source`` (``setup.sh`` and ``run_autograder`` at the
root, the graded reference tree, the whole ``grading`` package, ``release.json``). Gate steps: (a) the starter
parses, its stubs raise, ruff F is clean; (b) every public test fails on the raw starter; (c) the reference grafted
back passes them all; (d) every CLI of the shipped packages still runs on the raw starter; (e) the autograder gives
the reference full marks and the starter zero (``grading.grade``, when it exists).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from common.cli import UserError, user_errors
from common.runs import write_json_atomic
from grading import markers, tree
from grading.gate import run_gate, stub_callers
from grading.lint_clean import lint_clean
from grading.spec import Homework, Task
from grading.tree import EXECUTABLE, Files, json_bytes, write_tree

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
STORED = (".safetensors", ".png", ".gz", ".zip")  # already compressed: zip them as they are
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
OUTPUTS = frozenset({"student", "autograder.zip", "release.json"})
LEFTOVERS = frozenset({".student.partial", "autograder.zip.partial", "release.json.tmp", ".write-probe"})
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 119}  # as grading.cli (no import cycle)


@dataclass
class Release:
    """A homework's release in memory: the student tree and the autograder source, path -> bytes."""

    hw: Homework
    repo: Path
    student: Files
    source: Files
    stripped: dict[str, tree.Stripped]
    stubbed: dict[str, tuple[str, ...]]  # path -> functions of Homework.strip_functions stubbed in it
    tests: tuple[str, ...]  # public test entries (files or node ids)
    warnings: tuple[str, ...]

    def grafted(self, ids: set[str]) -> Files:
        """The student tree with the reference bodies of ``ids`` grafted back (other regions stay stubs)."""
        files = dict(self.student)
        for path, s in self.stripped.items():
            text = markers.graft(s.reference, path, {r.id: r.body for r in s.regions if r.id in ids})
            files[path] = _stub_helpers(self.hw, path, text, self.stubbed.get(path, ())).encode()
        return files


def _stub_helpers(hw: Homework, path: str, text: str, names: tuple[str, ...]) -> str:
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    for name in names:
        message = f"{module}.{name} is not part of the {hw.id} release"
        text = tree.stub_function(text, path, name, message)
    return text


def build(hw: Homework, repo: Path) -> Release:
    """Read the checkout and assemble the student tree and the autograder source (no gate, nothing written)."""
    for pkg in hw.packages:
        if pkg in ("common", "grading") or not (repo / pkg / "__init__.py").is_file():
            raise ValueError(f"{hw.id} ships {pkg!r}, which is not an assignment package of {repo}")
    packages = ["common", *hw.packages]
    student: Files = {}
    source: Files = {}
    stripped: dict[str, tree.Stripped] = {}
    for rel in (p for pkg in packages for p in tree.package_files(repo, pkg)):
        data = student[rel] = source[rel] = (repo / rel).read_bytes()
        if rel.endswith(".py") and b"SOLUTION" in data and markers.find_regions(data.decode(), rel):
            s = stripped[rel] = tree.strip_file(data.decode(), rel, set(hw.region_ids), hw.id)
            student[rel], source[rel] = s.starter.encode(), s.graded.encode()
    _check_regions(hw, stripped)
    stubbed = _strip_functions(hw, repo, student)
    for rel in sorted(set(stripped) | set(stubbed)):
        student[f".grading/starter/{rel}"] = source[f".grading/starter/{rel}"] = student[rel]
    shipped, everything = tree.grading_files(repo)
    for rel in everything:
        source[rel] = (repo / rel).read_bytes()
    for rel in shipped:
        student[rel] = source[rel]
    student["grading/cli.py"] = tree.student_cli(source["grading/cli.py"].decode(), set(shipped)).encode()
    entries = tuple(dict.fromkeys(e for t in hw.tasks for e in t.public_tests))
    for rel in tree.public_test_files(repo, list(entries)):
        student[rel] = source[rel] = (repo / rel).read_bytes()
    if entries:
        existing = student.get("tests/conftest.py", b"").decode()
        student["tests/conftest.py"] = source["tests/conftest.py"] = tree.public_conftest(
            existing, hw.id, entries).encode()
    pyproject = (repo / "pyproject.toml").read_text()
    student["pyproject.toml"] = source["pyproject.toml"] = tree.trim_pyproject(
        pyproject, packages + ["grading"]).encode()
    source["requirements.txt"] = tree.requirements(pyproject).encode()
    student[".ci/env"] = (repo / ".ci/env").read_bytes()
    student[".gitignore"] = (TEMPLATES / "gitignore").read_bytes()
    student["README.md"] = render_readme(hw, stripped, stubbed).encode()
    torch = _torch_pins((repo / ".ci/env").read_text())
    for name in ("setup.sh", "run_autograder"):
        source[name] = tree.fill((TEMPLATES / name).read_text(), hw_id=hw.id, **torch).encode()
    warnings = tree.unshipped_imports(student, packages + ["grading"]) + stub_callers(student, stubbed)
    return Release(hw, repo, student, source, stripped, stubbed, entries, tuple(warnings))


def _check_regions(hw: Homework, stripped: dict[str, tree.Stripped]) -> None:
    found = [r.id for s in stripped.values() for r in s.regions]
    dup = sorted({i for i in found if found.count(i) > 1})
    if dup:
        raise ValueError(f"region ids used twice in the shipped packages: {', '.join(dup)}")
    missing = [i for i in hw.region_ids if i not in found]
    if missing:
        raise ValueError(f"{hw.id} tasks name regions no shipped file has: {', '.join(missing)}")


def _strip_functions(hw: Homework, repo: Path, student: Files) -> dict[str, tuple[str, ...]]:
    """Stub ``Homework.strip_functions`` in the student tree (then drop imports that became unused)."""
    by_path: dict[str, list[str]] = {}
    for dotted in hw.strip_functions:
        rel, name = tree.resolve_function(repo, dotted)
        if rel not in student:
            raise ValueError(f"strip_functions entry {dotted!r} is in {rel}, which {hw.id} does not ship")
        by_path.setdefault(rel, []).append(name)
    for rel, names in by_path.items():
        text = _stub_helpers(hw, rel, student[rel].decode(), tuple(names))
        student[rel] = lint_clean((repo / rel).read_text(), text).encode()
    return {rel: tuple(names) for rel, names in sorted(by_path.items())}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|") if text else "-"


def _title(task: Task) -> str:
    optional = " (optional)" if task.optional and "optional" not in task.title.lower() else ""
    return f"{_cell(task.title)}{optional} (`{task.id}`)"


def _commands(command: str) -> str:
    lines = "".join(f"bash .ci/env {c.strip()}\n" for c in command.split(" && "))
    return f"```bash\n{lines}```\n"


def _task_section(task: Task) -> str:
    """One task of the README: its commands on the toy default and on the real model, and its public tests."""
    out = f"### {_title(task)}\n\n"
    if task.command:
        out += f"Toy model (the default):\n\n{_commands(task.command)}\n"
    if task.real_command:
        out += f"Real model (a GPU):\n\n{_commands(task.real_command)}\n"
    tests = "".join(f"- `{e}`\n" for e in task.public_tests)
    return out + (f"Public tests:\n\n{tests}" if tests else "Graded by the hidden tests and by hand.\n")


def render_readme(hw: Homework, stripped: dict[str, tree.Stripped], stubbed: dict[str, tuple[str, ...]]) -> str:
    """The student README: Quickstart, tasks and points with their commands, the regions, submission and rules."""
    hints = {r.id: (path, r.hint) for path, s in stripped.items() for r in s.regions}
    first = next((t.command.split(" && ")[0] for t in hw.tasks if t.command), f"python -m {hw.packages[0]}.main -h")
    not_part = sorted(i for i, _ in hints.items() if i not in hw.region_ids)
    fixed = [f"`{t.id}`: " + ", ".join(f"`{k}={v}`" for k, v in t.fixed.items()) for t in hw.tasks if t.fixed]
    names = [f"`{p.removesuffix('.py').replace('/', '.')}.{n}`" for p, ns in stubbed.items() for n in ns]
    values = {
        "title": hw.title, "hw_id": hw.id, "handout": hw.handout, "quickstart": first,
        "packages": ", ".join(f"`{p}`" for p in hw.packages), "total_points": f"{hw.total_points:.4g}",
        "task_rows": "\n".join(f"| {_title(t)} | {t.points:.4g} | "
                               f"{', '.join(f'`{r}`' for r in t.regions) or 'graded by hand'} |" for t in hw.tasks),
        "task_sections": "\n".join(_task_section(t) for t in hw.tasks),
        "region_rows": "\n".join(f"- `{i}` in `{hints[i][0]}`: {hints[i][1]}" for i in hw.region_ids),
        "not_part": (f"\nRegions hinted `(not part of {hw.id})` ({', '.join(f'`{i}`' for i in not_part)}) belong to "
                     "other homeworks of the course: leave their stubs as they are.\n") if not_part else "",
        "zip_name": hw.zip_name, "size_cap": f" (at most {hw.size_cap_mb:g} MB)" if hw.size_cap_mb else "",
        "item_rows": "\n".join(f"| `{_cell(i.pattern)}` | {_cell(i.description)} | {'yes' if i.required else 'no'} | "
                               f"{f'{i.max_mb:g} MB' if i.max_mb else '-'} |" for i in hw.items),
        "missing": f"\nEach missing required item costs {100 * hw.missing_item_penalty:g}% of the total.\n"
                   if hw.missing_item_penalty else "",
        "fixed": "; ".join(fixed) or "none beyond the defaults",
        "forbidden": ", ".join(f"`{c}`" for c in hw.forbidden_calls) or "none listed",
        "stripped": f" In this release {', '.join(names)} raise `NotImplementedError`." if names else "",
    }
    return tree.fill((TEMPLATES / "student_readme.md").read_text(), **values)


def _torch_pins(env_script: str) -> dict[str, str]:
    """torch/torchvision versions pinned in ``.ci/env`` and the CPU wheel index (the toy grading needs no GPU)."""
    pins = dict(re.findall(r'"(torch|torchvision)==([^"]+)"', env_script))
    if set(pins) != {"torch", "torchvision"}:
        raise ValueError(".ci/env must pin torch==X and torchvision==Y (the autograder installs the same versions)")
    return {"torch_version": pins["torch"], "torchvision_version": pins["torchvision"], "torch_build": "CPU-only",
            "torch_index": "--index-url https://download.pytorch.org/whl/cpu "}


# ---------------------------------------------------------------- outputs


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def release_record(rel: Release, gate: dict) -> dict:
    """release.json: commit, dirty flag, tasks, regions, bands, sha256 of every starter file, gate record."""
    hw = rel.hw
    tops = sorted({p.split("/")[0] for p in rel.student if not p.startswith(".grading/")})
    commit = _git(rel.repo, "rev-parse", "HEAD")
    status = _git(rel.repo, "status", "--porcelain", "--untracked-files=all", "--", *tops) if commit else None
    files = {p: [r.id for r in s.regions] for p, s in sorted(rel.stripped.items())}
    tasks = [{"id": t.id, "title": t.title, "points": t.points, "optional": t.optional, "regions": list(t.regions),
              "public_tests": list(t.public_tests), "command": t.command, "real_command": t.real_command,
              "fixed": t.fixed, "cases": t.cases, "bands": _bands(t.bands)} for t in hw.tasks]
    return _plain({
        "format": 1, "homework": hw.id, "title": hw.title, "handout": hw.handout,
        "commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip()),
        "packages": ["common", *hw.packages], "total_points": hw.total_points, "tasks": tasks,
        "regions": {"files": files, "graded": list(hw.region_ids),
                    "not_part": sorted(i for ids in files.values() for i in ids if i not in hw.region_ids)},
        "strip_functions": {p: list(n) for p, n in rel.stubbed.items()}, "forbidden_calls": list(hw.forbidden_calls),
        "calibration": _calibration(hw, gate),
        "warnings": list(rel.warnings), "gate": gate,
        "starter_sha256": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(rel.student.items())},
    })


def _calibration(hw: Homework, gate: dict) -> dict:
    """Which tasks' toy bands the release calibrates, and what the autograder gate (e) measured for them."""
    auto = gate.get("autograder")
    result = auto.get("result") if isinstance(auto, dict) else None
    measured = result.get("calibration") if isinstance(result, dict) else None
    return {"tasks": [t.id for t in hw.tasks if t.bands is not None and t.bands.calibrated], "measured": measured,
            "detail": "from the autograder gate (e)" if measured is not None else "not available (needs gate e)"}


def _bands(bands: object) -> dict | None:
    if bands is None:
        return None
    return {"metric": bands.metric, "calibrated": bands.calibrated,
            "bands": [{"lower": b.lower, "fraction": b.fraction} for b in bands.bands]}


def _plain(value: object) -> object:
    """JSON-native copy (tuples -> lists, other objects -> str); NaN or inf raise (allow_nan=False)."""
    return json.loads(json.dumps(value, allow_nan=False, default=str))


def zip_bytes(files: Files) -> bytes:
    """A deterministic zip: sorted entries, fixed timestamps and permissions, no directories."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel in sorted(files):
            info = zipfile.ZipInfo(rel, ZIP_DATE)
            info.create_system = 3
            info.external_attr = (0o100755 if rel in EXECUTABLE else 0o100644) << 16
            info.compress_type = zipfile.ZIP_STORED if rel.endswith(STORED) else zipfile.ZIP_DEFLATED
            zf.writestr(info, files[rel], compresslevel=6)
    return buf.getvalue()


def prepare_out(out: Path, force: bool, repo: Path) -> bool:
    """Check ``--out`` (empty, or an older release with --force; never around the repo); returns True if created."""
    out = Path(os.path.abspath(out))
    if out == repo or out in repo.parents:
        raise UserError(f"--out {out} contains the repository; choose a folder such as dist/<hw>")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    present = {p.name for p in out.iterdir()} if out.exists() else set()
    if present and not force:
        raise UserError(f"--out {out} is not empty (pass --force to replace the release in it)")
    foreign = present - OUTPUTS - LEFTOVERS
    if foreign:
        raise UserError(f"--out {out} holds files that are not a release ({', '.join(sorted(foreign))})")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to --out {out}: {err.strerror or err}") from None
    return created


def write_release(rel: Release, out: Path, record: dict) -> None:
    """Write student/, autograder.zip and release.json (last: its presence marks a complete release)."""
    data = json_bytes(record)
    partial = out / ".student.partial"
    shutil.rmtree(partial, ignore_errors=True)
    write_tree(rel.student, partial)
    shutil.rmtree(out / "student", ignore_errors=True)
    partial.rename(out / "student")
    (out / "autograder.zip.partial").write_bytes(zip_bytes({**rel.source, "release.json": data}))
    os.replace(out / "autograder.zip.partial", out / "autograder.zip")
    write_json_atomic(out / "release.json", record)
    if (out / "release.json").read_bytes() != data:
        raise RuntimeError("release.json differs from the copy in autograder.zip")


def _homework(hw_id: str) -> Homework:
    try:
        homeworks = importlib.import_module("grading.homeworks")
    except ImportError as err:
        raise UserError(f"no homework specs in this checkout ({err})") from None
    return homeworks.get_homework(hw_id)  # a one-line UserError naming the valid ids for an unknown one


def make_release(hw: Homework, out: Path, repo: Path = REPO, force: bool = False, skip_gate: bool = False,
                 timeout: int = 1800, echo: Callable[[str], None] = print, autograder_gate: bool = True) -> dict:
    """Build, gate and write the release of ``hw`` into ``out``; returns the release.json record."""
    repo = Path(os.path.abspath(repo))
    created = prepare_out(out, force, repo)
    try:
        rel = build(hw, repo)
        echo(f"release {hw.id}: {len(rel.student)} student files, {sum(len(s.regions) for s in rel.stripped.values())}"
             f" regions stubbed ({len(hw.region_ids)} graded), {len(rel.tests)} public tests")
        if skip_gate:
            gate = {"skipped": True, "detail": "--skip-gate (development only: not a release to hand out)"}
            echo("[gate] skipped (--skip-gate)")
        else:
            pending = {**rel.source, "release.json": json_bytes(release_record(rel, {"skipped": False}))}
            with tempfile.TemporaryDirectory(prefix=f"release-{hw.id}-") as work:
                gate = run_gate(rel, Path(work), timeout, echo, pending, autograder_gate)
        record = release_record(rel, gate)
        write_release(rel, Path(out), record)
    except BaseException:
        if created and Path(out).is_dir() and not any(Path(out).iterdir()):
            Path(out).rmdir()
        raise
    echo(f"wrote {out}/student ({len(rel.student)} files), {out}/autograder.zip, {out}/release.json")
    return record


@click.command("release", context_settings=CONTEXT)
@click.argument("hw_id", metavar="HW")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for student/, autograder.zip and release.json (empty, or an older release with --force).")
@click.option("--force", is_flag=True, help="Replace the release already in --out.")
@click.option("--skip-gate", is_flag=True, help="Development only: skip the gate (recorded in release.json).")
@click.option("--autograder-gate/--no-autograder-gate", default=True, show_default=True,
              help="Gate step (e): grade the reference (full marks) and the starter (zero) with the autograder.")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), default=REPO,
              show_default=True, help="Checkout to release from.")
@click.option("--timeout", type=click.IntRange(min=1), default=1800, show_default=True,
              help="Seconds each gate subprocess (pytest, smoke run) may take.")
@user_errors
def release(hw_id: str, out: Path, force: bool, skip_gate: bool, autograder_gate: bool, repo: Path,
            timeout: int) -> None:
    """Release homework HW: the student starter tree, Gradescope's autograder.zip and release.json in --out.

    The gate fails the release with one line unless the starter parses and lints, every public test fails on it,
    the reference grafted back passes them all, the shipped CLIs still run, and (once grading.grade exists) the
    autograder gives the reference full marks and the starter zero. The same commit gives byte-identical files.

    \b
    Examples:
      python -m grading release kaist-a4 --out dist/kaist-a4
      python -m grading release umich-hw5-diffusion --out dist/umich-hw5-diffusion --force
      python -m grading release nycu-lab3 --out /tmp/nycu-lab3 --skip-gate
    """
    make_release(_homework(hw_id), out, repo, force, skip_gate, timeout, lambda s: click.echo(s, err=True),
                 autograder_gate)
