"""Keep a stubbed starter lint-clean: drop the imports stubbing left unused, mark the locals it left unread.

Stubbing a region body (``markers.strip``) can leave imports and locals the starter no longer reads; ruff's F401 and
F841 would then flag a file the student has not touched. Sources are read with ``ast`` only (text in, text out).
"""

from __future__ import annotations

import ast

NOQA_UNUSED = "  # noqa: F841"


def lint_clean(original: str, stubbed: str) -> str:
    """``stubbed`` without the imports stubbing left unused, and with locals it left unread marked ``noqa``."""
    return silence_unused_locals(original, remove_unused_imports(original, stubbed))


def _annotation_names(tree: ast.AST) -> set[str]:
    """Names inside string annotations (``x: "torch.Tensor"``), which ruff counts as uses."""
    out = set()
    for node in ast.walk(tree):
        notes = [getattr(node, "annotation", None), getattr(node, "returns", None)]
        for note in notes:
            for sub in ast.walk(note) if note is not None else ():
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    try:
                        out |= {n.id for n in ast.walk(ast.parse(sub.value, mode="eval")) if isinstance(n, ast.Name)}
                    except SyntaxError:
                        pass
    return out


def _used_names(tree: ast.Module) -> set[str]:
    """Every name the module reads (loads, string annotations, ``__all__`` entries)."""
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            used |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return used | _annotation_names(tree)


def _bound(alias: ast.alias, node: ast.stmt) -> str:
    if isinstance(node, ast.Import):
        return alias.asname or alias.name.split(".")[0]
    return alias.asname or alias.name


def _import_text(node: ast.stmt, keep: list[ast.alias], indent: str) -> str:
    """One import statement with only ``keep`` (wrapped in parentheses past 119 columns)."""
    names = [f"{a.name} as {a.asname}" if a.asname else a.name for a in keep]
    if isinstance(node, ast.Import):
        return f"{indent}import {', '.join(names)}\n"
    head = f"{indent}from {'.' * node.level}{node.module or ''} import "
    one = head + ", ".join(names)
    if len(one) <= 119:
        return one + "\n"
    return head + "(\n" + "".join(f"{indent}    {n},\n" for n in names) + f"{indent})\n"


def remove_unused_imports(original: str, stubbed: str) -> str:
    """Drop module-level imports (or single names of them) read in ``original`` but no longer in ``stubbed``.

    Imports unused already in the original (re-exports, side effects) and ``from __future__`` stay.
    """
    tree, before = ast.parse(stubbed), _used_names(ast.parse(original))
    after = _used_names(tree)
    lines = stubbed.splitlines(keepends=True)
    nodes = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
             and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    for node in reversed(nodes):
        keep = [a for a in node.names if _bound(a, node) in after or _bound(a, node) not in before]
        if len(keep) == len(node.names) or _shares_a_line(lines, node):
            continue
        first, last = node.lineno - 1, node.end_lineno
        new = _import_text(node, keep, " " * node.col_offset) if keep else ""
        lines[first:last] = [new] if new else []
        if not new and 0 < first < len(lines) and not lines[first - 1].strip() and not lines[first].strip():
            del lines[first]  # the import was a group of its own: keep one blank line between groups
    return "".join(lines)


def _shares_a_line(lines: list[str], node: ast.stmt) -> bool:
    """True when the statement shares a line with another (``import a; x = 1``): left alone."""
    first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
    return bool(first[:node.col_offset].strip()) or ";" in last[node.end_col_offset:].split("#")[0]


def _functions(tree: ast.AST, prefix: str = "") -> dict[str, ast.AST]:
    """qualified name (``Class.method#k``) -> function node, for every function of the module."""
    out: dict[str, ast.AST] = {}
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            key = next(f"{name}#{k}" for k in range(len(out) + 1) if f"{name}#{k}" not in out)
            if not isinstance(node, ast.ClassDef):
                out[key] = node
            out.update(_functions(node, name + "."))
        else:
            out.update(_functions(node, prefix))
    return out


def _locals(func: ast.AST) -> tuple[dict[str, list[int]], set[str]]:
    """(name -> lines where it is stored, names read) of one function, nested scopes included."""
    stored: dict[str, list[int]] = {}
    read, declared = set(), set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stored.setdefault(node.id, []).append(node.lineno)
        elif isinstance(node, ast.Name):
            read.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared |= set(node.names)
    return {k: v for k, v in stored.items() if k not in declared and not k.startswith("_")}, read


def silence_unused_locals(original: str, stubbed: str) -> str:
    """Append ``# noqa: F841`` to assignments of locals the original read but the stub no longer does.

    These are values the starter hands the student (``index = ...`` before a region that uses it) and the
    placeholders the stub sets for later code; ruff's F841 would flag them in the starter.
    """
    old, new = _functions(ast.parse(original)), _functions(ast.parse(stubbed))
    lines = stubbed.splitlines(keepends=True)
    flag: set[int] = set()
    for key, func in new.items():
        if key not in old:
            continue
        stored, read = _locals(func)
        _, read_before = _locals(old[key])
        for name, at in stored.items():
            if name not in read and name in read_before:
                flag |= set(at)
    for lineno in sorted(flag):
        text = lines[lineno - 1].rstrip("\r\n")
        if "# noqa" not in text and not text.endswith("\\"):
            lines[lineno - 1] = text + NOQA_UNUSED + lines[lineno - 1][len(text):]
    return "".join(lines)
