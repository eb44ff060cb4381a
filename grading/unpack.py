"""Unpack one submission safely: extract a zip or copy a folder into a new folder, refusing archive attacks.

Checks against the usual attacks before and while anything is written: zip slip (``..``), absolute paths, links,
device files, zip bombs (uncompressed size cap, file count cap, compression ratio, real streamed sizes), oversize
zips, encrypted members, names that are not UTF-8 and corrupt zips (Gradescope's best practices [S3]; nbgrader added
size caps after a 1 TB student file, jupyter/nbgrader#874). A skipped member is one line on the caller's problem
list; a rejected submission leaves nothing behind. Contents are kept byte for byte (CRLF included).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

METADATA = "submission_metadata.yml"  # a Gradescope export's index (never inside one submission's zip)
SKIP = frozenset({"__MACOSX", ".DS_Store", "__pycache__", ".git", ".ipynb_checkpoints"})  # OS and tool clutter
MB = 2**20


@dataclass(frozen=True)
class Limits:
    """Caps on one submission (the design's defaults: <= 10 MB zipped, <= 50 MB / 500 files unpacked)."""

    max_zip_mb: float = 10.0
    max_total_mb: float = 50.0
    max_files: int = 500
    max_ratio: float = 100.0  # uncompressed / compressed, checked for members over 1 MB
    max_depth: int = 32
    max_text_mb: float = 2.0  # a region file larger than this is not read


class _Abort(Exception):
    """The whole submission is rejected (bomb, oversize, corrupt); the message is the problem line."""


def _member_name(info: zipfile.ZipInfo, problems: list[str]) -> str | None:
    """A safe relative posix path for a zip member, or None (skipped, with a problem unless it is OS clutter)."""
    name = info.filename
    if not info.flag_bits & 0x800:  # not flagged UTF-8: zipfile decoded the raw bytes as cp437
        raw = name.encode("cp437")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("utf-8", errors="replace")
            problems.append(f"member name {raw!r} is not UTF-8; extracted as {name!r}")
    shown = name
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        problems.append(f"member {shown!r} has an absolute path; skipped")
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        problems.append(f"member {shown!r} points outside the submission (zip slip); skipped")
        return None
    if not parts or any(p in SKIP or p.startswith("._") for p in parts):
        return None
    if any(ord(c) < 32 for c in name) or any(len(p.encode()) > 255 for p in parts):
        problems.append(f"member {shown!r} has control characters or an over-long name; skipped")
        return None
    return "/".join(parts)


def _member_kind(info: zipfile.ZipInfo) -> str:
    """'dir', 'file', 'link' or 'special' (device, fifo, socket) from the unix mode the zip records."""
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "special"
    return "dir" if info.is_dir() or stat.S_ISDIR(mode) else "file"


def _check_archive(path: Path, infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Reject an oversize zip or a bomb before anything is written."""
    size = path.stat().st_size
    if size > limits.max_zip_mb * MB:
        raise _Abort(f"zip is {size / MB:.1f} MB, over the {limits.max_zip_mb:g} MB limit; not extracted")
    if len(infos) > limits.max_files:
        raise _Abort(f"zip has {len(infos)} entries, over the {limits.max_files} file limit; not extracted")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_mb * MB:
        raise _Abort(f"zip unpacks to {total / MB:.1f} MB, over the {limits.max_total_mb:g} MB limit (zip bomb?); "
                     "not extracted")
    for i in infos:
        if i.file_size > MB and i.file_size > limits.max_ratio * max(i.compress_size, 1):
            raise _Abort(f"member {i.filename!r} is compressed {i.file_size / max(i.compress_size, 1):.0f}:1, over "
                         f"the {limits.max_ratio:g}:1 limit (zip bomb?); not extracted")
        if i.filename.replace("\\", "/").split("/")[-1] == METADATA:
            raise _Abort("this zip is a Gradescope export; unzip it and pass the folder; not extracted")


def _write(src, target: Path, budget: list[int]) -> None:
    """Stream ``src`` into a new file against ``budget[0]`` remaining bytes (real sizes, not the header's)."""
    with open(target, "xb") as out:
        while chunk := src.read(MB):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise _Abort("unpacked data exceeds the size limit (zip bomb?); not extracted")
            out.write(chunk)
    os.chmod(target, 0o644)


def _extract_zip(path: Path, dest: Path, limits: Limits, problems: list[str]) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        _check_archive(path, infos, limits)
        budget, seen = [int(limits.max_total_mb * MB)], set()
        for info in infos:
            rel = _member_name(info, problems)
            if rel is None:
                continue
            kind = _member_kind(info)
            if kind in ("link", "special"):
                problems.append(f"member {rel!r} is a {'link' if kind == 'link' else 'device or pipe'}; skipped")
                continue
            if rel.count("/") >= limits.max_depth:
                problems.append(f"member {rel!r} is nested too deep; skipped")
                continue
            target = dest.joinpath(*rel.split("/"))
            if kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            if info.flag_bits & 0x1:
                problems.append(f"member {rel!r} is encrypted; skipped")
                continue
            if rel.lower() in seen or target.exists():
                problems.append(f"member {rel!r} appears twice; the first copy is kept")
                continue
            seen.add(rel.lower())
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _write(src, target, budget)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                problems.append(f"member {rel!r} clashes with a folder of the same name; skipped")


def _copy_tree(src: Path, dest: Path, limits: Limits, problems: list[str]) -> None:
    """Copy a folder without following links, skipping special files, within the same caps as a zip."""
    budget, count = [int(limits.max_total_mb * MB)], 0
    stack = [(src, dest, 0)]
    while stack:
        folder, out, depth = stack.pop()
        out.mkdir(parents=True, exist_ok=True)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            problems.append(f"{os.path.relpath(folder, src)!r} cannot be read ({err.strerror or err}); skipped")
            continue
        for entry in entries:
            rel = os.path.relpath(entry.path, src)
            if entry.name in SKIP or entry.name.startswith("._"):
                continue
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"{rel.encode('utf-8', 'backslashreplace').decode()!r} is not a UTF-8 name; skipped")
                continue
            if entry.is_symlink():
                problems.append(f"{rel!r} is a link; skipped")
            elif entry.is_dir(follow_symlinks=False):
                if depth + 1 >= limits.max_depth:
                    problems.append(f"{rel!r} is nested too deep; skipped")
                else:
                    stack.append((Path(entry.path), out / entry.name, depth + 1))
            elif not entry.is_file(follow_symlinks=False):
                problems.append(f"{rel!r} is a device, pipe or socket; skipped")
            else:
                count += 1
                if count > limits.max_files:
                    raise _Abort(f"more than {limits.max_files} files; not copied")
                try:
                    with open(entry.path, "rb") as fh:
                        _write(fh, out / entry.name, budget)
                except PermissionError:
                    problems.append(f"{rel!r} cannot be read (permission denied); skipped")


def materialise(path: Path, dest: Path, limits: Limits, problems: list[str]) -> Path | None:
    """Extract or copy ``path`` into ``dest`` (a new folder) and return it; on a fatal problem (one line appended to
    ``problems``) remove it and return None."""
    try:
        if path.is_dir() and dest.resolve().is_relative_to(path.resolve()):
            raise _Abort(f"the output folder {dest} lies inside the submission; not copied")
        dest.mkdir(parents=True)
        if path.is_dir():
            _copy_tree(path, dest, limits, problems)
        else:
            _extract_zip(path, dest, limits, problems)
        return dest
    except _Abort as err:
        problems.append(str(err))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as err:
        problems.append(f"corrupt or unsupported zip ({' '.join(str(err).split()) or type(err).__name__}); "
                        "not extracted")
    except OSError as err:
        problems.append(f"cannot read it ({err.strerror or err}); skipped")
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    return None
