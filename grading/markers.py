"""Solution regions: find them in the reference, stub them for a release, take a submission's bodies back out,
and graft bodies into a fresh copy of the reference.

Reference files mark each student exercise as ::

    # TODO: one line saying what to implement
    # BEGIN SOLUTION <id>
    ...reference body...
    # END SOLUTION

Released (starter) files keep the TODO line and carry ``# BEGIN TODO <id>`` / ``# END TODO <id>`` around a stub that
raises ``NotImplementedError("TODO <id>: ...")``. Markers in the reference are found as COMMENT tokens (stdlib
``tokenize``), so a docstring that mentions them is ignored; a submission may not tokenize (a student's syntax error),
so its markers are found line by line. We write this small stripper ourselves because otter-grader and nbgrader strip
only notebooks (nbgrader copies ``.py`` files verbatim, jupyter/nbgrader#1237).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

REGION_ID = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_BEGIN = re.compile(r"^# BEGIN SOLUTION(?:\s+(?P<id>\S+))?\s*$")
_END = re.compile(r"^# END SOLUTION\s*$")
_TODO = re.compile(r"^\s*# TODO:\s*(?P<hint>.+?)\s*$")
_ID = re.compile(rf"^{REGION_ID}$")
# Top-level import lines: a student adds the imports their code needs (the starter drops the solution's own),
# so these never count as an outside edit; grading carries the allowed ones over (grading.grade).
_IMPORT_LINE = re.compile(r"^(import \S|from \S+ import )")


class MarkerError(ValueError):
    """A reference or submitted file whose markers are malformed (the message names file and line)."""


@dataclass(frozen=True)
class Region:
    """One solution region of a reference file. Lines are 1-based; ``begin``/``end`` are the marker lines."""

    id: str
    path: str  # posix path relative to the tree root
    begin: int
    end: int
    indent: str
    hint: str  # the ``# TODO:`` line above the region
    body: str  # the reference lines between the markers (with their newlines)
    defines: tuple[str, ...] = ()  # names the region binds that later code in the same function reads


def _comment_lines(text: str, path: str) -> list[tuple[int, str]]:
    """(line number, comment text) of every full-line comment, via tokenize."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as err:
        raise MarkerError(f"{path}: cannot tokenize ({err})") from None
    lines = text.splitlines()
    out = []
    for tok in tokens:
        if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1].strip() == tok.string.strip():
            out.append((tok.start[0], tok.string.strip()))
    return out


def find_regions(text: str, path: str) -> list[Region]:
    """All regions of a reference file, validated: ids present and well formed, balanced, not nested, TODO line."""
    lines = text.splitlines(keepends=True)
    regions, open_at, open_id = [], 0, ""
    for lineno, comment in _comment_lines(text, path):
        begin, end = _BEGIN.match(comment), _END.match(comment)
        if begin:
            if open_at:
                raise MarkerError(f"{path}:{lineno}: BEGIN SOLUTION inside the region opened at line {open_at}")
            open_id = begin.group("id") or ""
            if not _ID.match(open_id):
                raise MarkerError(f"{path}:{lineno}: BEGIN SOLUTION needs an id like 'sds-loss', got {open_id!r}")
            open_at = lineno
        elif end:
            if not open_at:
                raise MarkerError(f"{path}:{lineno}: END SOLUTION without a BEGIN SOLUTION")
            todo = _TODO.match(lines[open_at - 2]) if open_at >= 2 else None
            if not todo:
                raise MarkerError(f"{path}:{open_at}: region {open_id!r} needs a '# TODO: ...' line right above it")
            indent = lines[open_at - 1][: len(lines[open_at - 1]) - len(lines[open_at - 1].lstrip())]
            regions.append(Region(open_id, path, open_at, lineno, indent, todo.group("hint"),
                                  "".join(lines[open_at:lineno - 1])))
            open_at = 0
    if open_at:
        raise MarkerError(f"{path}:{open_at}: region {open_id!r} is never closed by '# END SOLUTION'")
    return [_with_defines(r, text) for r in regions]


def _with_defines(region: Region, text: str) -> Region:
    """Region plus the names it binds that later statements of its enclosing function load."""
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise MarkerError(f"{region.path}: reference does not parse ({err})") from None
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.lineno < region.begin and n.end_lineno > region.end]
    if not funcs:
        return region
    func = max(funcs, key=lambda n: n.lineno)  # innermost
    bound, loaded = set(), set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            if region.begin < node.lineno < region.end and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif node.lineno > region.end and isinstance(node.ctx, ast.Load):
                loaded.add(node.id)
    defines = tuple(sorted(bound & loaded))
    return Region(**{**region.__dict__, "defines": defines})


def stub_lines(region: Region) -> str:
    """The starter's body for a region: placeholders for names later code reads, then the raise."""
    message = f"TODO {region.id}: {region.hint}".replace("\\", "\\\\").replace('"', '\\"')
    out = ""
    if region.defines:
        out += f"{region.indent}{' = '.join(region.defines)} = None  # set these in your code\n"
    return out + f'{region.indent}raise NotImplementedError("{message}")\n'


def _replace(text: str, regions: list[Region], bodies: dict[str, str], begin_fmt: str, end_fmt: str) -> str:
    """Rewrite ``text`` with each region's markers and body replaced (regions in file order)."""
    lines = text.splitlines(keepends=True)
    out, pos = [], 0
    for r in regions:
        out.extend(lines[pos:r.begin - 1])
        out.append(f"{r.indent}{begin_fmt.format(id=r.id)}\n")
        out.append(bodies[r.id])
        out.append(f"{r.indent}{end_fmt.format(id=r.id)}\n")
        pos = r.end
    out.extend(lines[pos:])
    return "".join(out)


def strip(text: str, path: str) -> str:
    """Starter text: every region's body becomes its stub, markers become ``# BEGIN TODO <id>``/``# END TODO <id>``."""
    regions = find_regions(text, path)
    return _replace(text, regions, {r.id: stub_lines(r) for r in regions}, "# BEGIN TODO {id}", "# END TODO {id}")


def graft(reference: str, path: str, bodies: dict[str, str]) -> str:
    """Reference text with every region's body replaced by ``bodies[id]``; a region not given gets its stub, never
    the reference body (grading must not hand a student the answer for a region they left out)."""
    regions = find_regions(reference, path)
    chosen = {r.id: bodies.get(r.id, stub_lines(r)) for r in regions}
    return _replace(reference, regions, chosen, "# BEGIN SOLUTION {id}", "# END SOLUTION")


def reference_bodies(text: str, path: str) -> dict[str, str]:
    """id -> reference body of every region of a reference file (for the release gate and the reference run)."""
    return {r.id: r.body for r in find_regions(text, path)}


def normalise(text: str) -> str:
    """CRLF/CR to LF, trailing white space removed, tabs kept: how submissions are compared and grafted."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


@dataclass(frozen=True)
class Extraction:
    """A submitted file read against its starter: region bodies, regions not found, outside edits."""

    bodies: dict[str, str]
    missing: tuple[str, ...]  # region ids whose markers are missing, duplicated or out of order
    outside_edited: bool  # anything outside the regions differs from the starter


def _todo_spans(lines: list[str], ids: list[str]) -> dict[str, tuple[int, int]]:
    """0-based (begin, end) marker line indices of each id that appears exactly once, in order, well formed."""
    begins = {i: [k for k, s in enumerate(lines) if s.strip() == f"# BEGIN TODO {i}"] for i in ids}
    ends = {i: [k for k, s in enumerate(lines) if s.strip() == f"# END TODO {i}"] for i in ids}
    spans, last = {}, -1
    for i in ids:
        if len(begins[i]) == 1 and len(ends[i]) == 1 and last < begins[i][0] < ends[i][0]:
            spans[i] = (begins[i][0], ends[i][0])
            last = ends[i][0]
    return spans


def extract(submitted: str, starter: str) -> Extraction:
    """Bodies between ``# BEGIN TODO <id>`` / ``# END TODO <id>`` of a submission, checked against its starter."""
    sub_lines = normalise(submitted).splitlines(keepends=True)
    start_lines = normalise(starter).splitlines(keepends=True)
    ids = [s.strip()[len("# BEGIN TODO "):] for s in start_lines if s.strip().startswith("# BEGIN TODO ")]
    sub_spans, start_spans = _todo_spans(sub_lines, ids), _todo_spans(start_lines, ids)
    bodies = {i: "".join(sub_lines[b + 1:e]) for i, (b, e) in sub_spans.items()}
    missing = tuple(i for i in ids if i not in sub_spans)
    return Extraction(bodies, missing, _outside(sub_lines, sub_spans) != _outside(start_lines, start_spans))


def _outside(lines: list[str], spans: dict[str, tuple[int, int]]) -> list[str]:
    """The lines outside every region body (marker lines included), for the outside-edit comparison."""
    inside = {k for b, e in spans.values() for k in range(b + 1, e)}
    return [s for k, s in enumerate(lines) if k not in inside and s.strip() and not _IMPORT_LINE.match(s)]


def outside_diff(submitted: str, starter: str, path: str, context: int = 2) -> str:
    """Unified diff of the submission against the starter with every region body blanked on both sides."""
    import difflib

    def blank(text: str) -> list[str]:
        lines = normalise(text).splitlines(keepends=True)
        ids = [s.strip()[len("# BEGIN TODO "):] for s in lines if s.strip().startswith("# BEGIN TODO ")]
        spans = _todo_spans(lines, ids)
        inside = {k for b, e in spans.values() for k in range(b + 1, e)}
        return [s for k, s in enumerate(lines) if k not in inside]

    return "".join(difflib.unified_diff(blank(starter), blank(submitted), f"starter/{path}", f"submitted/{path}",
                                        n=context))


def fill(starter: str, bodies: dict[str, str]) -> str:
    """A starter with the given bodies written between its ``# BEGIN TODO <id>`` / ``# END TODO <id>`` markers
    (what a student hands in); regions not given keep their stub."""
    lines = normalise(starter).splitlines(keepends=True)
    ids = [s.strip()[len("# BEGIN TODO "):] for s in lines if s.strip().startswith("# BEGIN TODO ")]
    spans = _todo_spans(lines, ids)
    out, pos = [], 0
    for rid, (b, e) in sorted(spans.items(), key=lambda kv: kv[1]):
        out.extend(lines[pos:b + 1])
        out.append(bodies[rid] if rid in bodies else "".join(lines[b + 1:e]))
        pos = e
    out.extend(lines[pos:])
    return "".join(out)
