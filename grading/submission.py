"""Load student submissions safely: zips, per-student folders or a Gradescope export folder.

Every submission is copied (folders) or extracted (zips) into its own new folder under a destination the caller
gives, after the archive-attack checks of :mod:`grading.unpack`. Each problem is one line on
:attr:`Submission.problems`; the loader never raises for a bad submission and never writes outside the destination.
File contents are kept byte for byte (CRLF included: ``grading.markers.normalise`` handles line endings when regions
are read).

Accepted inputs (:func:`load_submissions`):

* ``{NAME}_{SID}.zip`` / ``{SID}_lab3.zip`` files (the handouts' names; ``zip_name`` picks the pattern);
* a per-student folder (it holds an assignment package, ``.py`` files, or one folder that does);
* a folder of such zips / folders (each child is one submission);
* a Gradescope "Download Submissions" export: ``submission_metadata.yml`` (YAML mapping each ``submission_<id>``
  folder to ``:submitters: [{:name:, :sid:, :email:}]``) next to one folder per submission.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grading.unpack import MB, METADATA, SKIP, Limits, materialise

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization")


@dataclass
class Submission:
    """One student's submission: who (from the file name or the export metadata), where, and what went wrong."""

    key: str  # unique, file-system safe; names this submission's outputs
    sid: str
    name: str
    source: str  # the zip or folder it came from
    root: Path | None  # its extracted / copied tree under the destination; None when nothing usable remains
    problems: list[str] = field(default_factory=list)
    members: tuple[tuple[str, str], ...] = ()  # (name, sid) of every submitter (Gradescope group submissions)

    @property
    def label(self) -> str:
        who = " ".join(p for p in (self.name, f"({self.sid})" if self.sid else "") if p)
        return who or self.key


def parse_name(filename: str, pattern: str | None = None) -> tuple[str, str, str | None]:
    """(name, sid, problem) from a submission's file or folder name, e.g. ``Kim Minji_20261234.zip``.

    ``pattern`` is the homework's ``zip_name`` (``{name}_{sid}.zip``, ``{sid}_lab3.zip``); without it the part of the
    stem with the most digits is the student id (last part for ``NAME_SID``, first for ``SID_lab3``).
    """
    stem = filename[:-4] if filename.lower().endswith(".zip") else filename
    if pattern:
        regex = re.escape(pattern[:-4] if pattern.lower().endswith(".zip") else pattern)
        regex = regex.replace(r"\{name\}", "(?P<name>.+)").replace(r"\{sid\}", "(?P<sid>[^_]+?)")
        match = re.fullmatch(regex, stem)
        if match:
            return match.groupdict().get("name", "") or "", match.group("sid"), None
        return "", stem, f"name {filename!r} does not match {pattern!r}; using {stem!r} as the student id"
    parts = stem.split("_")
    if len(parts) < 2:
        return "", stem, None
    digits = [sum(c.isdigit() for c in p) / max(len(p), 1) for p in parts]
    if digits[-1] >= digits[0] and digits[-1] > 0:
        return "_".join(parts[:-1]), parts[-1], None
    if digits[0] > 0:
        return "", parts[0], None
    return "", stem, None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "submission"


def _unique(key: str, taken: set[str]) -> str:
    out, k = key, 2
    while out in taken:
        out, k = f"{key}-{k}", k + 1
    taken.add(out)
    return out


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in SKIP and not p.name.startswith("."))


def _is_tree(folder: Path, packages: Iterable[str]) -> bool:
    """A single submission: it holds an assignment package or .py files, directly or under one extra folder."""
    def holds(d: Path) -> bool:
        return any((d / p).is_dir() for p in packages) or any(d.glob("*.py"))

    if holds(folder):
        return True
    kids = [p for p in _children(folder) if p.is_dir()]
    return len(kids) == 1 and not any(p.suffix.lower() == ".zip" for p in _children(folder)) and holds(kids[0])


def _read_metadata(folder: Path) -> dict:
    """The export's ``submission_metadata.yml`` as {folder name: record}; {} if unreadable (a problem later)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    # Gradescope writes Ruby tags on some values (e.g. scores); read them as plain data, never as objects.
    _Loader.add_multi_constructor("!", lambda loader, suffix, node: (
        loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None))
    try:
        data = yaml.load((folder / METADATA).read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _export_entries(folder: Path) -> list[tuple]:
    meta = _read_metadata(folder)
    entries = []
    for child in (p for p in _children(folder) if p.is_dir()):
        record = meta.get(child.name) if isinstance(meta.get(child.name), dict) else {}
        people = [s for s in record.get(":submitters", []) or [] if isinstance(s, dict)]
        members = tuple((str(s.get(":name", "") or ""), str(s.get(":sid", "") or "")) for s in people)
        problems = [] if members else [f"{METADATA} has no submitters for {child.name!r}"]
        name = ", ".join(m[0] for m in members if m[0])
        sid = "+".join(m[1] for m in members if m[1]) or child.name
        inner = _children(child)  # a student who uploaded one zip: Gradescope keeps it as a zip
        path = inner[0] if len(inner) == 1 and inner[0].suffix.lower() == ".zip" else child
        entries.append((path, name, sid, members, problems))
    return entries


def _entries(path: Path, zip_name: str | None, packages: tuple[str, ...], single: bool = False) -> list[tuple]:
    """(path, name, sid, members, problems) of every submission that ``path`` stands for."""
    if path.is_dir() and (path / METADATA).is_file() and not single:
        return _export_entries(path)
    if path.is_file() or single or _is_tree(path, packages):
        name, sid, problem = parse_name(path.name, zip_name)
        kids = [] if path.is_file() else [p for p in _children(path) if p.is_dir()]
        if len(kids) == 1 and not any(c.isdigit() for c in sid) and any(c.isdigit() for c in kids[0].name):
            name, sid, problem = parse_name(kids[0].name, zip_name)  # a folder holding one student's folder
        if path.is_file() and path.suffix.lower() != ".zip":
            problem = f"{path.name!r} is neither a zip nor a folder"
        return [(path, name, sid, (), [problem] if problem else [])]
    out = []
    for child in _children(path):  # a folder of submissions: each zip or folder is one (other files are ignored)
        if child.is_dir() and (child / METADATA).is_file():
            out += _export_entries(child)
        elif child.is_dir() or child.suffix.lower() == ".zip":
            name, sid, problem = parse_name(child.name, zip_name)
            out.append((child, name, sid, (), [problem] if problem else []))
    return out


def load_submissions(paths: Iterable[str | os.PathLike], dest: str | os.PathLike, *, zip_name: str | None = None,
                     limits: Limits = Limits(), packages: Iterable[str] = PACKAGES,
                     single: bool = False) -> list[Submission]:
    """Every submission under ``paths``, each extracted or copied into a new folder ``dest/<key>``.

    Never raises for a bad submission: a path that is missing, unreadable, oversize, corrupt or unsafe gives a
    :class:`Submission` with ``root=None`` (or a partial tree) and one-line ``problems``. Keys are unique, file-system
    safe slugs of the student id. ``dest`` must not lie inside any of ``paths``. ``single=True`` takes each path as
    exactly one submission (Gradescope's ``/autograder/submission``) instead of guessing whether a folder holds one
    student's files or several submissions.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    taken = {p.name for p in dest.iterdir()}
    out = []
    for raw in paths:
        path = Path(raw)
        try:
            entries = _entries(path, zip_name, tuple(packages), single) if path.exists() else None
        except OSError as err:
            entries = [(path, "", path.name, (), [f"cannot read it ({err.strerror or err}); skipped"])]
        if entries is None:
            out.append(Submission(_unique(_slug(path.name), taken), path.name, "", str(path), None, ["not found"]))
            continue
        for src, name, sid, members, problems in entries:
            sub = Submission(_unique(_slug(sid), taken), sid, name, str(src), None, list(problems), members)
            if not any("neither a zip" in p for p in problems):
                sub.root = materialise(src, dest / sub.key, limits, sub.problems)
            out.append(sub)
    return out


def reference_files(packages: Iterable[str], region_ids: Iterable[str] | None = None,
                    root: Path = ROOT) -> dict[str, str]:
    """relpath -> reference text of the repo files in ``packages`` that hold (any of) ``region_ids``."""
    from grading import markers

    wanted = None if region_ids is None else set(region_ids)
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "# BEGIN SOLUTION" not in text:
                continue
            rel = path.relative_to(root).as_posix()
            ids = {r.id for r in markers.find_regions(text, rel)}
            if ids and (wanted is None or ids & wanted):
                out[rel] = text
    return out


def _locate(root: Path, rel: str, zip_root: str = "") -> tuple[Path | None, str | None]:
    """The submitted file for starter path ``rel``: under the handout's ``zip_root`` or the root, possibly inside
    one extra top-level folder, or (last) the only file with that name; a note when it was not where expected."""
    parts = rel.split("/")
    prefixes = [zip_root.strip("/").split("/"), []] if zip_root.strip("/") else [[]]
    for prefix in prefixes:
        direct = root.joinpath(*prefix, *parts)
        if direct.is_file():
            return direct, None
    for prefix in prefixes:
        nested = [p for p in (d.joinpath(*prefix, *parts) for d in _children(root) if d.is_dir()) if p.is_file()]
        if len(nested) == 1:
            return nested[0], None
    same = sorted(p for p in root.rglob(parts[-1]) if p.is_file())
    if len(same) == 1:
        return same[0], f"{rel} found at {same[0].relative_to(root).as_posix()}"
    where = ", ".join(p.relative_to(root).as_posix() for p in same[:4])
    return None, f"{rel} is missing" + (f" (several candidates: {where})" if where else "")


def find_region_files(sub: Submission, homework, limits: Limits = Limits(), root: Path = ROOT,
                      zip_root: str = "") -> dict[str, str]:
    """relpath -> submitted text of the files that hold the homework's TODO regions (problems go on ``sub``).

    ``homework`` is a :class:`grading.spec.Homework` (its packages' region files are looked up in the repo at
    ``root``; its ``zip_root`` is where the handout puts them in the zip) or the starter's relative paths
    themselves (with ``zip_root``). Texts are decoded as UTF-8 (a BOM is dropped) and keep their line endings.
    """
    if hasattr(homework, "packages"):
        rels = sorted(reference_files(homework.packages, homework.region_ids, root))
    else:
        rels = list(homework)
    if sub.root is None:
        return {}
    out = {}
    for rel in rels:
        path, note = _locate(sub.root, rel, getattr(homework, "zip_root", "") or zip_root)
        if note:
            sub.problems.append(note)
        if path is None:
            continue
        if path.stat().st_size > limits.max_text_mb * MB:
            sub.problems.append(f"{rel} is over {limits.max_text_mb:g} MB; not read")
            continue
        try:
            out[rel] = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            sub.problems.append(f"{rel} is not UTF-8 text (byte {err.start}); not read")
    return out
