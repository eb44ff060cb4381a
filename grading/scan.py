"""Static scan of one solution-region body: calls that hand over the answer, and constructs no exercise needs.

The body is parsed on its own (dedented and wrapped in a ``def``) and every name is resolved through the imports
of the file it sits in: after ``from common.r1 import r1_penalty`` the call ``r1_penalty(...)`` reads as
``common.r1.r1_penalty``, and after ``import common.tweedie as tw`` the name ``tw.add_noise`` reads as
``common.tweedie.add_noise``. Flags:

* ``forbidden-call``: a name matching one of the homework's ``forbidden_calls`` (an exact dotted name, a module
  prefix such as ``common.ddpm``, or an fnmatch pattern such as ``common.diffaugment.*cutout*``), and any use of a
  diffusers scheduler (every homework asks for the step's math itself);
* ``banned-construct``: what no exercise needs and attacks use -- import statements, ``exec`` / ``eval`` /
  ``compile`` / ``open`` / ``__import__`` / ``globals`` / ``locals`` / ``vars`` / ``getattr`` / ``setattr`` /
  ``delattr`` / ``breakpoint`` / ``input``, dunder names and attributes (``__class__``, ``__globals__``, ...),
  frame and code attributes, ``global`` statements, assignments into imported modules (monkeypatching), and the
  modules ``os``, ``sys``, ``subprocess``, ``socket``, ``builtins``, ``importlib`` (and a few more of their kind);
* ``syntax-error``: the body does not parse.

The scan is advisory (``check`` shows it to the student, ``grade`` to the instructor); the sandbox is the defence.
"""

from __future__ import annotations

import ast
import fnmatch
import textwrap
from dataclasses import dataclass

FORBIDDEN = "forbidden-call"
BANNED = "banned-construct"
SYNTAX = "syntax-error"

BANNED_BUILTINS = frozenset({"exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars", "getattr",
                             "setattr", "delattr", "breakpoint", "input"})
BANNED_MODULES = frozenset({"os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "pickle",
                            "marshal", "shutil", "multiprocessing", "threading", "signal", "inspect", "pty", "gc"})
BANNED_NAMES = ("torch.load", "torch.hub", "torch.utils.cpp_extension")  # pickle loads, downloads, compiled code
FRAME_ATTRIBUTES = frozenset({"f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code",
                              "cr_frame", "tb_frame", "tb_next", "co_code"})
DIFFUSERS_SCHEDULERS = ("diffusers.schedulers", "diffusers.*Scheduler*")
_WRAPPER = "def __region__():\n"


@dataclass(frozen=True)
class Flag:
    """One finding. ``line`` is 1-based within the body (add the BEGIN marker's file line to locate it)."""

    kind: str  # FORBIDDEN, BANNED or SYNTAX
    line: int
    message: str


def matches(dotted: str, pattern: str) -> bool:
    """``dotted`` is ``pattern``, lies inside it (``common.ddpm`` covers ``common.ddpm.x``) or fnmatches it."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(dotted, pattern)
    return dotted == pattern or dotted.startswith(pattern + ".")


def _import_nodes(file_text: str) -> list[ast.stmt]:
    """Every import statement of the file; a file that does not parse is read import by import."""
    try:
        return [n for n in ast.walk(ast.parse(file_text)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    except SyntaxError:
        pass
    nodes, chunk = [], ""
    for line in file_text.splitlines():
        stripped = line.strip()
        if not chunk and not stripped.startswith(("import ", "from ")):
            continue
        chunk += stripped.rstrip("\\") + " "
        if chunk.count("(") <= chunk.count(")") and not stripped.endswith("\\"):
            try:
                nodes += [n for n in ast.parse(chunk).body if isinstance(n, (ast.Import, ast.ImportFrom))]
            except SyntaxError:
                pass
            chunk = ""
    return nodes


def import_aliases(file_text: str) -> dict[str, str]:
    """Local name -> dotted name bound by the file's imports (module level or inside functions; last one wins)."""
    aliases = {}
    for node in _import_nodes(file_text):
        for alias in node.names:
            if isinstance(node, ast.Import):
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
            elif alias.name != "*":
                base = "." * node.level + (node.module or "")
                aliases[alias.asname or alias.name] = f"{base}.{alias.name}" if node.module else base + alias.name
    return aliases


def _parse_body(body: str) -> ast.Module | Flag:
    """The body wrapped in a function (line k of the body is line k + 1 of the tree), or a syntax flag."""
    lines = body.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    candidates = [textwrap.dedent(body), "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines)]
    error: SyntaxError | None = None
    for text in candidates:
        try:
            return ast.parse(_WRAPPER + textwrap.indent(text, "    ", lambda s: True).rstrip() + "\n    pass\n")
        except SyntaxError as err:
            error = error or err
    line = max(1, (error.lineno or 2) - 1)
    return Flag(SYNTAX, line, f"the region does not parse: {error.msg}")


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ['a', 'b', 'c'] for a Name / Attribute chain; None when the base is not a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _resolve(parts: list[str], aliases: dict[str, str]) -> str:
    return ".".join([aliases.get(parts[0], parts[0]), *parts[1:]])


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _construct_flags(node: ast.AST, aliases: dict[str, str]) -> list[tuple[str, str]]:
    """(kind, message) for the banned constructs of one node (names and chains are handled in ``_name_flags``)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(BANNED, "import statement inside the region (use the file's imports)")]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return [(BANNED, f"{type(node).__name__.lower()} statement ({', '.join(node.names)})")]
    out = []
    if isinstance(node, ast.Attribute):
        if _is_dunder(node.attr):
            out.append((BANNED, f"accesses the dunder attribute {node.attr}"))
        elif node.attr in FRAME_ATTRIBUTES:
            out.append((BANNED, f"accesses the frame/code attribute {node.attr}"))
        parts = _chain(node)
        if not isinstance(node.ctx, ast.Load) and parts and parts[0] in aliases:
            out.append((BANNED, f"assigns to {_resolve(parts, aliases)} (monkeypatches an imported module)"))
    elif isinstance(node, ast.Name) and _is_dunder(node.id):
        out.append((BANNED, f"uses the dunder name {node.id}"))
    return out


def _name_flags(parts: list[str], aliases: dict[str, str], forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, message) for one maximal name chain, resolved through the file's imports."""
    dotted, out = _resolve(parts, aliases), []
    if len(parts) == 1 and parts[0] in BANNED_BUILTINS and parts[0] not in aliases:
        out.append((BANNED, f"uses the builtin {parts[0]}"))
    if dotted.split(".")[0] in BANNED_MODULES:
        out.append((BANNED, f"uses the {dotted.split('.')[0]} module ({dotted})"))
    if any(matches(dotted, p) for p in BANNED_NAMES):
        out.append((BANNED, f"uses {dotted}"))
    if any(matches(dotted, p) for p in DIFFUSERS_SCHEDULERS):
        out.append((FORBIDDEN, f"uses the diffusers scheduler {dotted}: write the step's math yourself"))
    elif any(matches(dotted, p) for p in forbidden):
        out.append((FORBIDDEN, f"uses {dotted}, a helper that hands over the answer (forbidden in this homework)"))
    return out


def scan_region(body: str, file_text: str, forbidden: tuple[str, ...] = ()) -> list[Flag]:
    """Flags of one region body (the lines between its markers), sorted by line; [] for a clean body."""
    tree = _parse_body(body)
    if isinstance(tree, Flag):
        return [tree]
    aliases = import_aliases(file_text)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}  # non-maximal chain parts
    found = set()
    for node in ast.walk(tree):
        line = max(1, getattr(node, "lineno", 2) - 1)
        hits = _construct_flags(node, aliases)
        if isinstance(node, (ast.Name, ast.Attribute)) and id(node) not in inner:
            parts = _chain(node)
            hits += _name_flags(parts, aliases, tuple(forbidden)) if parts else []
        found |= {Flag(kind, line, message) for kind, message in hits}
    return sorted(found, key=lambda f: (f.line, f.kind, f.message))
