"""Repository-wide rules: lint clean, small modules, no pickle loading, balanced solution markers, float options
that refuse NaN/inf, strict JSON writes."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grading import markers

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization", "grading"]
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_top_level_layout():
    required = set(PACKAGES) | {"tests", "pyproject.toml", "README.md"}
    present = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    assert required <= present
    allowed = {"docs", "benchmarks", "outputs", "build"} | {p for p in present if p.endswith(".egg-info")}
    extra = present - required - allowed
    assert not extra, f"unexpected top-level entries: {sorted(extra)}"


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff not installed")
    result = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small_and_safe(path):
    text = path.read_text()
    assert text.count("\n") <= 400, "modules stay under 400 lines: split them by concern"
    assert not re.search(r"\bpickle\.load|\btorch\.load\(", text), "load safetensors/JSON only, never pickle"


ASSIGNMENTS = ["gan", "ddpm_ddim", "dps", "distillation", "synchronization"]


def _regions_by_file() -> dict[Path, list[markers.Region]]:
    """Every solution region of the tree, validated by the grading package's own parser."""
    out = {}
    for path in SOURCES:
        regions = markers.find_regions(path.read_text(), str(path.relative_to(ROOT)))
        if regions:
            out[path] = regions
    return out


def test_solution_regions_have_unique_ids_and_live_in_assignment_packages():
    found = _regions_by_file()
    ids = [r.id for regions in found.values() for r in regions]
    assert len(ids) == len(set(ids)), f"duplicate region ids: {sorted({i for i in ids if ids.count(i) > 1})}"
    outside = [str(p.relative_to(ROOT)) for p in found if p.relative_to(ROOT).parts[0] not in ASSIGNMENTS]
    assert not outside, f"solution regions outside the assignment packages: {outside}"
    for regions in found.values():
        for r in regions:
            assert "nan_to_num" not in r.body, f"{r.path}:{r.begin}: nan_to_num in region {r.id} hides a NaN"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _solution_names() -> dict[str, set[str]]:
    """module -> top-level functions and classes that contain a solution region."""
    out: dict[str, set[str]] = {}
    for path, regions in _regions_by_file().items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and any(
                    node.lineno < r.begin <= node.end_lineno for r in regions):
                out.setdefault(_module_name(path), set()).add(node.name)
    return out


def test_no_module_outside_a_package_uses_its_solution_marked_code():
    """Stubbing one homework's regions must break only that homework: nothing else imports region code."""
    marked = _solution_names()
    files = SOURCES + sorted((ROOT / "benchmarks").rglob("*.py"))
    bad = []
    for path in files:
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "grading":
            continue  # the grader runs region code on purpose (in its sandbox)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in marked and node.level == 0:
                if node.module.split(".")[0] == rel.parts[0]:
                    continue  # a package may call its own exercises
                hits = {a.name for a in node.names} & marked[node.module]
                bad += [f"{rel}:{node.lineno} imports {node.module}.{name}" for name in sorted(hits)]
    assert not bad, "\n".join(bad)


def test_common_imports_no_assignment_package():
    bad = []
    for path in (p for p in SOURCES if p.relative_to(ROOT).parts[0] == "common"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in ASSIGNMENTS + ["grading"]]
    assert not bad, "\n".join(bad)


BENCHMARK_SOURCES = sorted((ROOT / "benchmarks").rglob("*.py"))


def _dotted(node: ast.AST) -> str:
    """``click.option`` for an attribute chain or a name; "" for anything else."""
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return node.id if isinstance(node, ast.Name) else ""


def _nan_friendly_type(call: ast.Call) -> str | None:
    """Why a ``click.option``/``click.argument`` call takes NaN/inf: ``type=float``, a bare ``FloatRange``, a
    float tuple, or a float default without a type (click infers ``FLOAT``); None when it does not."""
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    kind = kw.get("type")
    if kind is None:
        default = kw.get("default")
        flag = isinstance(kw.get("is_flag"), ast.Constant) and kw["is_flag"].value
        if isinstance(default, ast.Constant) and type(default.value) is float and not flag:
            return f"default={default.value!r} without a type (click infers FLOAT)"
        return None
    for node in kind.elts if isinstance(kind, ast.Tuple) else [kind]:
        name = _dotted(node.func if isinstance(node, ast.Call) else node)
        if name in ("float", "click.FLOAT"):
            return f"type={name}"
        if name.split(".")[-1] == "FloatRange":
            return "a bare click.FloatRange"
    return None


def test_float_options_refuse_nan_and_inf():
    """Every float option goes through ``common.cli.finite(...)``: ``type=float`` and ``click.FloatRange`` accept
    ``nan`` (which passes any range check) and ``inf``."""
    bad = []
    for path in SOURCES + BENCHMARK_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1] in ("option", "argument"):
                why = _nan_friendly_type(node)
                if why:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {why}; use common.cli.finite(...)")
    assert not bad, "\n".join(bad)


def _strict(call: ast.Call) -> bool:
    return any(k.arg == "allow_nan" and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in call.keywords)


def _json_calls(node: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and _dotted(n.func) == f"json.{name}"]


def test_json_written_to_files_refuses_nan():
    """``json.dump`` (and ``json.dumps`` written with ``.write``/``.write_text``/``print(file=)``) pass
    ``allow_nan=False``, or use ``common.runs.write_json_atomic``: NaN is not JSON, and a reader chokes on it.
    ``common/runs.py`` (the strict writer) and ``grading`` (its own checked writers) are exempt."""
    bad = []
    for path in SOURCES + BENCHMARK_SOURCES:
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "grading" or rel.as_posix() == "common/runs.py":
            continue
        tree = ast.parse(path.read_text())
        calls = _json_calls(tree, "dump")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            writes = isinstance(node.func, ast.Attribute) and node.func.attr in ("write", "write_text", "write_bytes")
            prints = _dotted(node.func) == "print" and any(k.arg == "file" for k in node.keywords)
            if writes or prints:
                calls += [c for arg in node.args for c in _json_calls(arg, "dumps")]
        bad += [f"{rel}:{c.lineno}: json.{_dotted(c.func)[5:]} to a file without allow_nan=False "
                "(or use common.runs.write_json_atomic)" for c in calls if not _strict(c)]
    assert not bad, "\n".join(sorted(set(bad)))
