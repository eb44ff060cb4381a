"""The trees that graded code runs in: the shipped packages of a homework with region bodies grafted in.

A graded tree holds ``common``, the homework's packages and the trusted ``grading`` package, copied from the
reference root (this repo, or ``/autograder/source`` on Gradescope). Every solution region of the shipped packages
gets the body given for it (the student's, the reference's, or a catalogued mistake's) and otherwise its stub, so a
region a student left out never runs the reference. The homework's ``strip_functions`` are stubbed as in the
release. Large read-only data (the toy models) is linked, not copied.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from grading import markers, tree
from grading.spec import Homework

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("common/toy/models",)  # read-only data shared by every tree
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")


def shipped_packages(hw: Homework) -> tuple[str, ...]:
    return ("common", *hw.packages)


def region_files(hw: Homework, root: Path = ROOT) -> dict[str, str]:
    """Relative path -> reference text of every shipped file that holds a solution region."""
    out = {}
    for pkg in shipped_packages(hw):
        for path in sorted((root / pkg).rglob("*.py")):
            text = path.read_text()
            if "# BEGIN SOLUTION" in text:
                rel = path.relative_to(root).as_posix()
                if markers.find_regions(text, rel):
                    out[rel] = text
    return out


def starter_text(hw: Homework, rel: str, reference: str, root: Path = ROOT) -> str:
    """The starter a student of ``hw`` received for ``rel``: the release's pristine copy under ``.grading/starter``
    when ``root`` is a release or autograder tree, else the same text built from the reference (lint-cleaned)."""
    shipped = root / ".grading" / "starter" / rel
    if shipped.is_file():
        return shipped.read_text()
    return tree.strip_file(reference, rel, set(hw.region_ids), hw.id).starter


def _strip_helpers(hw: Homework, dest: Path) -> None:
    for dotted in hw.strip_functions:
        rel, qualname = tree.resolve_function(dest, dotted)
        message = f"{dotted} is part of {hw.id}: write it yourself"
        (dest / rel).write_text(tree.stub_function((dest / rel).read_text(), rel, qualname, message))


def build_tree(hw: Homework, dest: Path, bodies: dict[str, str], root: Path = ROOT,
               imports: dict[str, list[str]] | None = None) -> Path:
    """Copy the shipped packages + ``grading`` from ``root`` into ``dest`` with ``bodies`` grafted in.

    ``bodies`` maps region id -> body text; every other region of the shipped packages gets its stub. ``imports``
    (relative path -> import lines) are appended to those files: regions read module globals at call time.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in (*shipped_packages(hw), "grading"):
        shutil.copytree(root / pkg, dest / pkg, ignore=_ignore_for(root), symlinks=False)
    for rel in LINKED:
        if (root / rel).exists():
            os.symlink((root / rel).resolve(), dest / rel, target_is_directory=True)
    for rel, text in region_files(hw, root).items():
        ids = {r.id for r in markers.find_regions(text, rel)}
        grafted = markers.graft(text, rel, {k: v for k, v in bodies.items() if k in ids})
        extra = (imports or {}).get(rel, [])
        if extra:
            grafted += "\n# Imports the submission added for its regions (grading.grade.added_imports).\n"
            grafted += "".join(line + "\n" for line in extra)
        (dest / rel).write_text(grafted)
    _strip_helpers(hw, dest)
    return dest


def _ignore_for(root: Path):
    """shutil ignore callable: caches, and the LINKED data folders (linked afterwards)."""
    linked = {(root / rel).resolve() for rel in LINKED}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(_IGNORE(folder, names))
        return skipped | {n for n in names if (Path(folder) / n).resolve() in linked}

    return ignore


def reference_bodies(hw: Homework, root: Path = ROOT) -> dict[str, str]:
    """Region id -> reference body for the homework's own regions (other shipped regions stay stubs)."""
    out = {}
    for rel, text in region_files(hw, root).items():
        out.update(markers.reference_bodies(text, rel))
    return {k: v for k, v in out.items() if k in hw.region_ids}
