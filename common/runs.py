"""Run bookkeeping: every entry point writes its full configuration next to its outputs."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

JSON_INDENT = 2  # the one indent of every JSON file written here: eval.json, config.json, timings, benchmark rows
_LIBRARIES = ("torch", "torchvision", "diffusers", "transformers", "peft", "open_clip_torch", "numpy", "click")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that change results."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _jsonable(value: Any, where: str = "$") -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"refusing to write {value} at {where} into JSON (NaN/Infinity is not valid JSON); "
                         "report a missing number as null with json_number()")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def json_number(value: float | None) -> float | None:
    """``value``, or None (JSON null) when it is missing or not finite, e.g. GPU memory measured on a CPU."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write strict JSON (no NaN/Infinity) through a temporary file, so a crash or a refusal leaves no file.

    Raises ``ValueError`` naming the offending key before anything is written; a target that is a folder is a
    one-line ``ValueError`` too, with no temporary file left behind.
    """
    path = Path(path)
    text = json.dumps(_jsonable(data), indent=JSON_INDENT, allow_nan=False) + "\n"
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``dest`` only when the block succeeds.

    A kill, an error or a refusal inside the block leaves ``dest`` untouched (and no temporary folder), so a
    reader never sees half a dataset. An existing non-empty ``dest`` is refused unless ``overwrite``.

    >>> with atomic_dir("data/toy") as tmp:
    ...     write_images(tmp)
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise ValueError(f"{dest} already exists and is not empty; choose another folder or remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def write_config(save_dir: str | os.PathLike, config: dict[str, Any], name: str = "config.json") -> Path:
    """Write ``config`` plus library versions, command line and time to ``save_dir/config.json``."""
    record = dict(config)
    record["_run"] = {
        "argv": sys.argv,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        # CPU results differ in the last bits between thread counts; a grader fixes it with OMP_NUM_THREADS=N
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    return write_json_atomic(Path(save_dir) / name, record)
