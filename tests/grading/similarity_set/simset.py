"""Build the synthetic similarity benchmark: independent students, disguised copies, zips in the handout layout.

Kinds of submission (``Student.kind``):

* ``independent``: its own choices, names and statement order (:mod:`simset_authors`);
* ``renamed``: a source's choices with new local names;
* ``reformatted``: a source's code with other line breaks, spacing, quotes, redundant parentheses and comments;
* ``reordered``: a source's choices with its independent statements in another order;
* ``disguised``: renamed + reordered + reformatted;
* ``partial``: the largest one or two regions of a source copied (renamed), the others written independently;
* ``nomarkers``: a renamed copy whose ``# BEGIN TODO`` / ``# END TODO`` lines were deleted.

Truth: each copy and its source form a positive pair; every other pair is negative.
"""

from __future__ import annotations

import ast
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import simset_authors as authors
from simset_a4 import pds_loss, sds_loss
from simset_authors import Author
from simset_cutout import diffaugment_cutout
from simset_refs import HOMEWORKS, REGIONS

from grading import markers

GENERATORS = {"gan-g-loss": authors.gan_g_loss, "gan-d-loss": authors.gan_d_loss, "gan-r1": authors.gan_r1,
              "diffaugment-cutout": diffaugment_cutout, "sds-loss": sds_loss, "pds-loss": pds_loss}
COPY_KINDS = ("renamed", "reformatted", "reordered", "disguised", "partial", "nomarkers", "renamed", "partial")
COMMENTS = ["compute the term", "Eq. 3", "vectorised", "see handout", "batch dim first", "stable version",
            "per sample", "TODO check", "shape [B]", "careful with broadcasting"]


@dataclass
class Student:
    key: str
    kind: str
    bodies: dict[str, str]
    source: str | None = None
    regions_copied: tuple[str, ...] = ()


def starters(hw: str) -> dict[str, str]:
    return {rel: markers.strip(text, rel) for rel, text in HOMEWORKS[hw].items()}


def _write_bodies(hw: str, author: Author, skip: tuple[str, ...] = ()) -> dict[str, str]:
    bodies = {rid: GENERATORS[rid](author) for rid in REGIONS[hw] if rid not in skip}
    for body in bodies.values():
        ast.parse("def f():\n" + "\n".join("    " + line for line in body.split("\n")))  # every body parses
    return bodies


def _balanced(code: str) -> bool:
    depth = 0
    for ch in code:
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0:
            return False
    return depth == 0


def _reformat_line(line: str, rng: random.Random) -> list[str]:
    ind = line[: len(line) - len(line.lstrip())]
    code = line.strip()
    if not code or code.endswith(":") or not _balanced(code):
        return [line]
    m = re.match(r"^([\w\.\[\], :()]+?) = (.+)$", code)
    if m and rng.random() < 0.5 and "=" not in m.group(1).replace(" = ", ""):
        code = f"{m.group(1)} = ({m.group(2)})"
    elif code.startswith("return ") and rng.random() < 0.5:
        code = f"return ({code[7:]})"
    if rng.random() < 0.5:
        code = code.replace(", ", ",")
    if rng.random() < 0.5:
        code = code.replace(" * ", "*").replace(" / ", "/")
    code = code.replace('"', "'")
    out = [ind + "# " + rng.choice(COMMENTS)] if rng.random() < 0.25 else []
    depth, cut, quoted = 0, -1, False
    for k, ch in enumerate(code):
        quoted ^= ch == "'"
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth >= 1 and not quoted and k > 20 and rng.random() < 0.5:
            cut = k
            break
    if cut > 0:
        opener = max(code.rfind(b, 0, cut) for b in "([")
        out += [ind + code[: cut + 1], ind + " " * (opener + 1) + code[cut + 1:].lstrip()]
    else:
        out.append(ind + code + (f"  # {rng.choice(COMMENTS)}" if rng.random() < 0.3 else ""))
    return out + ([""] if rng.random() < 0.1 else [])


def reformat(body: str, rng: random.Random) -> str:
    """Same code, other layout: parentheses, spacing, quotes, comments, line breaks, a docstring-like string."""
    lines = [new for line in body.split("\n") for new in _reformat_line(line, rng)]
    if rng.random() < 0.5:
        lines.insert(0, '"""' + rng.choice(COMMENTS).capitalize() + '."""')
    text = "\n".join(lines).rstrip("\n")
    ast.parse("def f():\n" + "\n".join("    " + line for line in text.split("\n")))
    return text


def build(hw: str, n_independent: int, n_copies: int, seed: int = 0) -> list[Student]:
    """``n_independent`` students and ``n_copies`` copies (kinds cycling through COPY_KINDS, distinct sources)."""
    rng = random.Random(f"{hw}-{seed}")
    if n_copies > n_independent:
        raise ValueError("each copy needs its own independent source")
    authors, students = [], []
    for i in range(n_independent):
        choices, names = rng.randrange(10**9), rng.randrange(10**9)
        skip = (rng.choice(REGIONS[hw]),) if rng.random() < 0.08 else ()
        authors.append((choices, names, skip))
        students.append(Student(f"indep{i:03d}", "independent", _write_bodies(hw, Author(choices, names), skip)))
    sources = rng.sample(range(n_independent), n_copies)
    for c, src in enumerate(sources):
        kind = COPY_KINDS[c % len(COPY_KINDS)]
        choices, names, skip = authors[src]
        new_names = rng.randrange(10**9)
        if kind in ("renamed", "nomarkers"):
            bodies = _write_bodies(hw, Author(choices, new_names), skip)
        elif kind == "reformatted":
            bodies = {r: reformat(b, rng) for r, b in students[src].bodies.items()}
        elif kind == "reordered":
            bodies = _write_bodies(hw, Author(choices, names, reorder=True), skip)
        elif kind == "disguised":
            bodies = {r: reformat(b, rng) for r, b in
                      _write_bodies(hw, Author(choices, new_names, reorder=True), skip).items()}
        else:  # partial: the largest region or two copied, the rest written by a fresh author
            own = students[src].bodies
            ranked = sorted(own, key=lambda r: -len(own[r]))
            copied = tuple(ranked[: 1 + (len(ranked) > 2 and rng.random() < 0.5)])
            renamed = _write_bodies(hw, Author(choices, new_names), skip)
            fresh = _write_bodies(hw, Author(rng.randrange(10**9), rng.randrange(10**9)))
            bodies = {r: renamed[r] if r in copied else fresh[r] for r in REGIONS[hw]}
            students.append(Student(f"copy{c:03d}", kind, bodies, students[src].key, copied))
            continue
        students.append(Student(f"copy{c:03d}", kind, bodies, students[src].key, tuple(bodies)))
    return students


def fill(starter: str, bodies: dict[str, str], keep_markers: bool = True) -> str:
    """A submitted file: the starter with each given region's stub replaced by the body (indented to the marker)."""
    out, skipping = [], False
    for line in starter.splitlines(keepends=True):
        s = line.strip()
        if s.startswith("# BEGIN TODO ") and s[len("# BEGIN TODO "):] in bodies:
            ind = line[: len(line) - len(line.lstrip())]
            body = bodies[s[len("# BEGIN TODO "):]]
            out += ([line] if keep_markers else []) + [(ind + b).rstrip() + "\n" for b in body.split("\n")]
            skipping = True
        elif skipping and s.startswith("# END TODO "):
            skipping = False
            out += [line] if keep_markers else []
        elif not skipping:
            out.append(line)
    return "".join(out)


def write_zips(hw: str, students: list[Student], folder: Path, seed: int = 0) -> dict[str, Path]:
    """One ``{NAME}_{SID}.zip`` per student (some with an extra top folder or CRLF); key -> zip path."""
    rng = random.Random(f"zips-{hw}-{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    order = list(students)
    rng.shuffle(order)  # the copies do not sit next to their sources
    out = {}
    for n, st in enumerate(order):
        sid = f"2026{n:04d}"
        top = "hw/" if rng.random() < 0.3 else ""
        newline = "\r\n" if rng.random() < 0.2 else "\n"
        path = folder / f"Student {st.key}_{sid}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel, starter in starters(hw).items():
                text = fill(starter, st.bodies, keep_markers=st.kind != "nomarkers")
                zf.writestr(top + rel, text.replace("\n", newline))
            zf.writestr(top + "README.md", f"# {st.key}\n")
        out[st.key] = path
    return out


def truth(students: list[Student]) -> set[frozenset[str]]:
    return {frozenset((s.key, s.source)) for s in students if s.source}
