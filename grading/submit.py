"""``python -m grading submit``: zip the handout's deliverables in the handout's layout.

The zip holds every file that a :class:`grading.spec.Item` pattern matches in the student's tree, at the same
relative path under ``Homework.zip_root``, and is named after ``Homework.zip_name`` (``{name}_{sid}.zip``,
``{sid}_lab3.zip``). It is refused, with one line and exit code 2, when a required item is missing, a matched file
is a link or over its item's size limit, or the zip would exceed the handout's cap (UMich HW5: 10 MB). The zip is
deterministic: entries sorted, fixed timestamps (1980-01-01) and permissions (0644), so the same files give the
same bytes; it is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import click

from common.cli import UserError, user_errors
from grading import markers
from grading.homeworks import get_homework
from grading.spec import Homework, Item

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 119, "show_default": True}
MB = 2**20
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can store: fixed, so the bytes do not depend on mtimes
_SKIP_PARTS = ("__pycache__", ".grading", ".git", ".ipynb_checkpoints")


def clean_name(name: str) -> str:
    """The name as it goes into file names: words joined by ``_``, letters, digits, ``.`` and ``-`` only."""
    cleaned = re.sub(r"[^\w.-]+", "", "_".join(name.split()))
    if not cleaned.strip("._-"):
        raise UserError(f"--name {name!r} has no letters or digits; pass your name as on the class roster")
    return cleaned


def clean_sid(sid: str) -> str:
    """The student id, unchanged: letters, digits and ``-`` only (``_`` separates the parts of the zip's name)."""
    if not re.fullmatch(r"[A-Za-z0-9-]+", sid.strip()):
        raise UserError(f"--sid {sid!r} must be letters, digits and '-' only, e.g. 20261234")
    return sid.strip()


def zip_file_name(hw: Homework, name: str, sid: str) -> str:
    """The handout's zip name, e.g. ``Kim_Minji_20261234.zip`` or ``312551001_lab3.zip``."""
    return hw.zip_name.format(name=clean_name(name), sid=clean_sid(sid))


def resolve_tree(path: str | os.PathLike, hw: Homework) -> Path:
    """``path`` as a tree of ``hw`` (a folder holding its packages), or a one-line :class:`UserError`."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; run this in the released {hw.id} folder or pass --path")
    missing = [p for p in hw.packages if not (root / p / "__init__.py").is_file()]
    if missing:
        raise UserError(f"{root} is not a {hw.id} tree (no {missing[0]}/ package); run this in the released "
                        f"{hw.id} folder or pass --path")
    return root


@dataclass
class Collected:
    """The files each item matched (posix paths relative to the tree), the required items that matched nothing,
    and one line per file that cannot be submitted (a link, over the item's size limit)."""

    files: list[tuple[Item, list[str]]] = field(default_factory=list)
    missing: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return sorted({p for _, ps in self.files for p in ps})


def _matches(root: Path, pattern: str) -> list[Path]:
    out = []
    for p in root.glob(pattern):
        rel = p.relative_to(root)
        if not any(part in _SKIP_PARTS for part in rel.parts) and (p.is_file() or p.is_symlink()):
            out.append(p)
    return sorted(out)


def collect_items(root: Path, hw: Homework) -> Collected:
    """Match every item of ``hw`` in the tree ``root`` (files only; links are reported, never followed)."""
    out = Collected()
    for item in hw.items:
        found, matched = [], _matches(root, item.pattern)
        for p in matched:
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out.problems.append(f"{rel} is a link; copy the file itself")
            elif item.max_mb is not None and p.stat().st_size > item.max_mb * MB:
                out.problems.append(f"{rel} is {p.stat().st_size / MB:.1f} MB, over the {item.max_mb:g} MB limit "
                                    f"of '{item.description}'")
            else:
                found.append(rel)
        out.files.append((item, found))
        if item.required and not matched:
            out.missing.append(item)
    return out


def arcname(hw: Homework, rel: str) -> str:
    """Where the tree's file ``rel`` sits in the zip."""
    return f"{hw.zip_root.strip('/')}/{rel}" if hw.zip_root.strip("/") else rel


def build_zip(files: dict[str, bytes]) -> bytes:
    """A deterministic zip of ``files`` (arcname -> content): sorted entries, fixed time and mode, deflate 9."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below is read
            info.external_attr = 0o100644 << 16
            zf.writestr(info, files[name], compresslevel=9)
    return buf.getvalue()


def zip_contents(root: Path, hw: Homework, collected: Collected) -> dict[str, bytes]:
    return {arcname(hw, rel): (root / rel).read_bytes() for rel in collected.paths}


def largest(root: Path, rels: list[str], k: int = 3) -> str:
    sizes = sorted(((root / r).stat().st_size, r) for r in rels)[::-1][:k]
    return ", ".join(f"{r} ({s / MB:.1f} MB)" for s, r in sizes)


def unimplemented_regions(root: Path, hw: Homework) -> list[str]:
    """Region ids of the homework's tasks whose TODO section still holds the starter's ``NotImplementedError``."""
    wanted, out = set(hw.region_ids), []
    for pkg in hw.packages:
        for path in sorted((root / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            if "# BEGIN TODO " not in text:
                continue
            got = markers.extract(text, text)
            out += [rid for rid, body in got.bodies.items()
                    if rid in wanted and f'NotImplementedError("TODO {rid}:' in body]
    return sorted(out)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_submission(hw: Homework, root: Path, name: str, sid: str, out: Path | None) -> tuple[Path, int, int]:
    """Check, zip and write; returns (zip path, number of files, size in bytes). Raises UserError when refused."""
    zip_name = zip_file_name(hw, name, sid)
    collected = collect_items(root, hw)
    if collected.missing:
        listed = "; ".join(f"{it.pattern} ({it.description})" for it in collected.missing)
        raise UserError(f"not submitted: missing required items: {listed}")
    if collected.problems:
        raise UserError(f"not submitted: {'; '.join(collected.problems)}")
    out = root / zip_name if out is None else out
    data = build_zip(zip_contents(root, hw, collected))
    if hw.size_cap_mb is not None and len(data) > hw.size_cap_mb * MB:
        raise UserError(f"not submitted: the zip would be {len(data) / MB:.1f} MB, over the handout's "
                        f"{hw.size_cap_mb:g} MB cap; largest files: {largest(root, collected.paths)}")
    write_atomic(out, data)
    return out, len(collected.paths), len(data)


@click.command("submit", context_settings=CONTEXT)
@click.argument("hw")
@click.option("--name", required=True, help="Your name as on the class roster (spaces become '_').")
@click.option("--sid", required=True, help="Your student id.")
@click.option("--path", default=".", type=click.Path(path_type=Path), help="The released homework folder.")
@click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Zip to write [default: PATH/<the handout's zip name>].")
@user_errors
def submit(hw: str, name: str, sid: str, path: Path, out: Path | None) -> None:
    """Zip the handout's deliverables of homework HW in the handout's layout and name.

    Refuses (exit 2) when a required item is missing, a file is a link or too large, or the zip would exceed the
    handout's size cap. Run 'python -m grading check HW' first: it also runs the public tests.

    \b
    Examples:
      python -m grading submit kaist-a4 --name "Kim Minji" --sid 20261234
      python -m grading submit nycu-lab3 --name "Chen Wei" --sid 312551001 --out ~/312551001_lab3.zip
      python -m grading submit umich-hw5-gan --name "Alex Doe" --sid 12345678 --path hw5-gan
    """
    homework = get_homework(hw)
    root = resolve_tree(path, homework)
    todo = unimplemented_regions(root, homework)
    written, count, size = make_submission(homework, root, name, sid, out)
    click.echo(f"wrote {written} ({count} files, {size / MB:.2f} MB)")
    if todo:
        click.echo(f"warning: these TODO regions still raise NotImplementedError: {', '.join(todo)}")
