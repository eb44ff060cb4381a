"""File safety for entry points: refuse pickles by content, never overwrite shipped weights by default.

- Pickled checkpoints (``.pkl`` of the handouts' StyleGAN2-ADA code, ``torch.save`` files) can run arbitrary code
  when loaded, so nothing here loads them: :func:`refuse_pickle` turns one into a one-line error that says how to
  get a safetensors file instead, before a safetensors reader fails with an obscure header error.
- Outputs default to ``outputs/``; :func:`check_overwrite` refuses to replace the weights shipped in the
  repository (``common/toy/models/``, ``gan/checkpoints/``) unless the user passes ``--force``.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from common.cli import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIRS = (REPO_ROOT / "common" / "toy" / "models", REPO_ROOT / "gan" / "checkpoints")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt")


class PickleRefused(UserError, ValueError):
    """A pickled file where a safetensors file is expected: one line, exit code 2 in a CLI, a ValueError elsewhere."""


def pickle_format(path: str | os.PathLike) -> str | None:
    """``"pickle"`` / ``"torch.save zip"`` when the file's first bytes (or its suffix) say so, else None.

    A pickle of protocol >= 2 starts with ``0x80 <protocol>``; ``torch.save`` writes a zip (``PK\\x03\\x04``)
    holding a pickle. A safetensors file starts with an 8-byte header length and then ``{``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        head = b""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return "torch.save zip"
    if head[8:9] != b"{" and path.suffix.lower() in PICKLE_SUFFIXES:
        return "pickle"
    return None


def refuse_pickle(path: str | os.PathLike, how_to_get_safetensors: str) -> None:
    """Raise :class:`PickleRefused` (one line) when ``path`` is a pickle; ``how_to_get_safetensors`` ends the line."""
    kind = pickle_format(path)
    if kind is not None:
        raise PickleRefused(f"{path} is a {kind} file: pickles are refused by design (loading one can run arbitrary "
                        f"code), only safetensors are loaded; {how_to_get_safetensors}")


def shipped_root(path: str | os.PathLike, shipped: Iterable[Path] = SHIPPED_DIRS) -> Path | None:
    """The shipped-weights folder that contains ``path`` (resolved), or None."""
    target = Path(path).expanduser().resolve()
    for root in shipped:
        root = Path(root).resolve()
        if target == root or root in target.parents:
            return root
    return None


def check_overwrite(path: str | os.PathLike, force: bool, flag: str = "--out",
                    shipped: Iterable[Path] = SHIPPED_DIRS) -> None:
    """Refuse (one line) to write ``path`` inside the shipped weights when something is there, unless ``force``."""
    root = shipped_root(path, shipped)
    if root is None or force or not Path(path).exists():
        return
    shown = root.relative_to(REPO_ROOT) if REPO_ROOT in root.parents else root
    raise UserError(f"{flag} {path} would overwrite weights shipped in {shown}/ "
                    "(tracked by git); write elsewhere (the default is under outputs/) or pass --force to replace it")


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` with a byte-stable header, written atomically.

    safetensors serialises its JSON header from a hash map, so two identical runs can write the same tensors
    with the header keys in another order and different bytes; a grader comparing hashes would see a mismatch.
    We re-serialise the header with sorted keys (the data block and its offsets are unchanged) and pad it with
    spaces to a multiple of 8, as the format allows.
    """
    from safetensors.torch import save  # local: keeps `import common.files` light for the CLIs

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata) if metadata else None)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + blob[8 + n :])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
