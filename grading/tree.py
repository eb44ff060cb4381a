"""Source transformations of a homework release: strip regions into stubs, stub leaked helpers, keep the starter
lint-clean, and pick the files a release ships (public tests with their helpers, the student-side ``grading``).

The functions are pure (text in, text out, or sorted repo paths; :func:`write_tree` aside), so the release is
byte-identical for the same checkout. Python sources are read with ``ast`` only; nothing is imported or executed.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from grading import markers
from grading.lint_clean import lint_clean, remove_unused_imports  # noqa: F401 (tree.remove_unused_imports)

SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "outputs", "build"})
SKIP_SUFFIXES = (".pyc", ".pyo", ".tmp")
# What a student needs of ``grading`` (the rest -- release, grade, cases -- stays with the instructor).
STUDENT_GRADING = ("__init__.py", "__main__.py", "cli.py", "markers.py", "spec.py", "scan.py", "check.py",
                   "submit.py", "homeworks")
HIDDEN_GRADING = ("cases",)
EXECUTABLE = frozenset({".ci/env", "setup.sh", "run_autograder"})  # written 0755 in trees and zips
Files = dict[str, bytes]  # posix path relative to a tree's root -> content


def package_files(repo: Path, package: str) -> list[str]:
    """Sorted posix paths (relative to ``repo``) of a package's files, without caches and build outputs."""
    root = repo / package
    if not (root / "__init__.py").is_file():
        raise ValueError(f"{package} is not a package of {repo} (no {package}/__init__.py)")
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(repo)
        if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in rel.parts[:-1]) or not path.is_file():
            continue
        if path.suffix not in SKIP_SUFFIXES and not path.is_symlink():
            out.append(rel.as_posix())
    return sorted(out)


@dataclass(frozen=True)
class Stripped:
    """One file with regions: the reference (hints of non-task regions marked), its starter and its graded form."""

    path: str
    reference: str  # repo text, non-task hints suffixed "(not part of <hw>)"
    starter: str  # the student's file: stubs between BEGIN/END TODO markers, lint-clean
    graded: str  # reference with task bodies kept and non-task regions stubbed (autograder source, gate graft)
    regions: tuple[markers.Region, ...]
    task_ids: tuple[str, ...]  # the regions of this file that are tasks of the homework


def mark_not_part(text: str, path: str, task_ids: set[str], hw_id: str) -> str:
    """Append ``(not part of <hw>)`` to the ``# TODO:`` line of every region that is not one of ``task_ids``."""
    lines = text.splitlines(keepends=True)
    for region in markers.find_regions(text, path):
        if region.id not in task_ids:
            k = region.begin - 2  # the TODO line, 0-based
            body = lines[k].rstrip("\r\n")
            lines[k] = f"{body} (not part of {hw_id})" + lines[k][len(body):]
    return "".join(lines)


def strip_file(text: str, path: str, task_ids: set[str], hw_id: str) -> Stripped:
    """Starter and graded text of one file (regions not in ``task_ids`` are stubbed in both)."""
    reference = mark_not_part(text, path, task_ids, hw_id)
    regions = tuple(markers.find_regions(reference, path))
    mine = tuple(r.id for r in regions if r.id in task_ids)
    bodies = {r.id: r.body for r in regions if r.id in task_ids}
    starter = lint_clean(reference, markers.strip(reference, path))
    return Stripped(path, reference, starter, markers.graft(reference, path, bodies), regions, mine)


def stub_function(text: str, path: str, qualname: str, message: str) -> str:
    """``text`` with the body of function ``qualname`` (after its docstring) replaced by a raise of ``message``."""
    tree = ast.parse(text)
    scope, node = tree, None
    for part in qualname.split("."):
        node = next((n for n in ast.iter_child_nodes(scope) if getattr(n, "name", None) == part), None)
        if node is None:
            raise ValueError(f"{path}: no function {qualname!r} to strip")
        scope = node
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError(f"{path}: {qualname!r} is not a function")
    body = node.body
    doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
        body[0].value.value, str)
    first = body[1] if doc and len(body) > 1 else body[0]
    if (doc and len(body) == 1) or first.lineno == node.lineno:
        raise ValueError(f"{path}: cannot strip {qualname!r} (its body must start on a line of its own)")
    lines = text.splitlines(keepends=True)
    indent = " " * first.col_offset
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    lines[first.lineno - 1:node.end_lineno] = [f'{indent}raise NotImplementedError("{escaped}")\n']
    return "".join(lines)


def resolve_function(repo: Path, dotted: str) -> tuple[str, str]:
    """``common.r1.r1_penalty`` -> (``common/r1.py``, ``r1_penalty``): the longest module prefix that is a file."""
    parts = dotted.split(".")
    for k in range(len(parts) - 1, 0, -1):
        for rel in ("/".join(parts[:k]) + ".py", "/".join(parts[:k]) + "/__init__.py"):
            if (repo / rel).is_file():
                return rel, ".".join(parts[k:])
    raise ValueError(f"strip_functions entry {dotted!r} names no module of the repository")


def _imported_modules(text: str) -> set[str]:
    """Absolute module names a file imports (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def public_test_files(repo: Path, entries: list[str]) -> list[str]:
    """Public test files (entries may be node ids ``file::test``) plus the conftests and helper modules they use."""
    todo = []
    for entry in entries:
        rel = entry.split("::")[0]
        if not (repo / rel).is_file() or not rel.startswith("tests/"):
            raise ValueError(f"public test {entry!r} is not a file under tests/ of the repository")
        todo.append(rel)
    out: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in out:
            continue
        out.add(rel)
        folder = Path(rel).parent
        for up in [folder, *folder.parents]:
            if (repo / up / "conftest.py").is_file():
                todo.append((up / "conftest.py").as_posix())
        for module in _imported_modules((repo / rel).read_text()):
            for cand in (folder / (module.replace(".", "/") + ".py"), Path(module.replace(".", "/") + ".py")):
                if cand.parts and cand.parts[0] == "tests" and (repo / cand).is_file():
                    todo.append(cand.as_posix())
    return sorted(out)


def grading_files(repo: Path) -> tuple[list[str], list[str]]:
    """(student-side ``grading`` files, all ``grading`` files). The student side is ``STUDENT_GRADING`` plus every
    ``grading`` module they import, transitively (not the command modules ``cli.py`` registers: :func:`student_cli`
    drops those that are not shipped); reaching the hidden cases is an error."""
    everything = package_files(repo, "grading")
    chosen = {p for p in everything for s in STUDENT_GRADING if p == f"grading/{s}" or p.startswith(f"grading/{s}/")}
    todo = sorted(chosen)
    while todo:
        rel = todo.pop()
        if not rel.endswith(".py") or rel == "grading/cli.py":
            continue
        for module in sorted(_imported_modules((repo / rel).read_text())):
            if not module.startswith("grading."):
                continue
            if module.split(".")[1] in HIDDEN_GRADING:
                raise ValueError(f"{rel} imports {module}: the student-side grading must not need the hidden cases")
            base = module.replace(".", "/")
            for cand in (f"{base}.py", f"{base}/__init__.py"):
                if cand in everything and cand not in chosen:
                    chosen.add(cand)
                    todo.append(cand)
    return sorted(chosen), everything


def student_cli(text: str, shipped: set[str]) -> str:
    """``grading/cli.py`` without the commands whose modules the student tree does not ship.

    Drops module-level ``from grading.X import Y`` lines for an unshipped ``grading.X`` and every ``main.add_command``
    call that names only names those lines bound.
    """
    tree = ast.parse(text)
    dropped: set[str] = set()
    cut: list[tuple[int, int]] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("grading."):
            if node.module.replace(".", "/") + ".py" not in shipped and \
                    node.module.replace(".", "/") + "/__init__.py" not in shipped:
                dropped |= {a.asname or a.name for a in node.names}
                cut.append((node.lineno, node.end_lineno))
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_command":
            names = {n.id for a in call.args for n in ast.walk(a) if isinstance(n, ast.Name)}
            if names and names <= dropped:
                cut.append((node.lineno, node.end_lineno))
    lines = text.splitlines(keepends=True)
    for first, last in sorted(cut, reverse=True):
        del lines[first - 1:last]
    return re.sub(r"\n{3,}", "\n\n\n", "".join(lines)).rstrip("\n") + "\n"


def trim_pyproject(text: str, packages: list[str]) -> str:
    """``pyproject.toml`` whose setuptools ``include`` lists only ``packages`` (plus their subpackages)."""
    include = ", ".join(f'"{p}*"' for p in packages)
    new, count = re.subn(r"(?m)^include = \[[^\]]*\]$", f"include = [{include}]", text)
    if count != 1:
        raise ValueError("pyproject.toml needs one 'include = [...]' line under [tool.setuptools.packages.find]")
    return new


def requirements(pyproject: str) -> str:
    """``requirements.txt`` text: the project's dependencies and its ``dev`` extra (for the autograder image)."""
    import tomllib

    project = tomllib.loads(pyproject).get("project", {})
    deps = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("dev", []))
    return "".join(f"{d}\n" for d in deps)


def fill(template: str, **values: object) -> str:
    """Replace every ``@@name@@`` of a template; a placeholder without a value is an error."""
    missing = sorted(set(re.findall(r"@@(\w+)@@", template)) - set(values))
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(missing)}")
    return re.sub(r"@@(\w+)@@", lambda m: str(values[m.group(1)]), template)


def write_tree(files: Files, root: Path) -> Path:
    """Write ``files`` under ``root`` in sorted order with fixed permissions (0755 for ``EXECUTABLE``)."""
    for rel in sorted(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
        path.chmod(0o755 if rel in EXECUTABLE else 0o644)
    return root


def json_bytes(record: object) -> bytes:
    """The bytes ``common.runs.write_json_atomic`` writes for a JSON-native record (NaN refused)."""
    return (json.dumps(record, indent=2, allow_nan=False) + "\n").encode()


def unshipped_imports(files: Files, packages: list[str]) -> list[str]:
    """``path: imports X`` for imports of the repository's own packages that the release does not ship."""
    ours = {"common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization", "grading"}
    out = []
    for path, data in sorted(files.items()):
        if path.endswith(".py") and not path.startswith(".grading/"):
            for top in sorted({m.split(".")[0] for m in _imported_modules(data.decode())}):
                if top in ours and top not in packages:
                    out.append(f"{path} imports {top}, which this release does not ship")
    return sorted(set(out))


def is_public(nodeid: str, entries: tuple[str, ...]) -> bool:
    """True when test ``nodeid`` is one of the public ``entries`` (a file, a test, or a test with its parameters)."""
    return any(nodeid == e or nodeid.startswith((e + "::", e + "[")) for e in entries)


_PUBLIC_HOOK = '''

# Added by `python -m grading release`: `python -m pytest` in this tree runs the public tests of @@hw_id@@ only
# (the shipped test files also test other homeworks' regions).
_PUBLIC_TESTS = (
@@entries@@
)


def _is_public(nodeid: str) -> bool:
    return any(nodeid == e or nodeid.startswith((e + "::", e + "[")) for e in _PUBLIC_TESTS)


def pytest_collection_modifyitems(config, items):
    """Deselect the collected tests that are not public tests of this homework."""
    others = [item for item in items if not _is_public(item.nodeid)]
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = [item for item in items if _is_public(item.nodeid)]
'''


def public_conftest(existing: str, hw_id: str, entries: tuple[str, ...]) -> str:
    """``tests/conftest.py`` of the student tree: the repo's (``existing``, may be empty) plus a collection hook that
    keeps only the public tests, so the Quickstart's ``pytest -q`` passes once the homework is done."""
    if "def pytest_collection_modifyitems" in existing:
        raise ValueError("tests/conftest.py already defines pytest_collection_modifyitems; merge the release's hook")
    hook = fill(_PUBLIC_HOOK, hw_id=hw_id, entries="\n".join(f"    {e!r}," for e in entries))
    head = existing.rstrip("\n") + "\n" if existing.strip() else '"""Shared test configuration."""\n'
    return head + hook
