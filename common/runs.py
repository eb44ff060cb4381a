"""Run bookkeeping: every entry point writes its full configuration next to its outputs."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON through a temporary file so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def write_config(save_dir: str | os.PathLike, config: dict[str, Any], name: str = "config.json") -> Path:
    """Write ``config`` plus library versions, command line and time to ``save_dir/config.json``."""
    record = dict(config)
    record["_run"] = {
        "argv": sys.argv,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    return write_json_atomic(Path(save_dir) / name, record)
