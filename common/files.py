"""File safety for entry points: refuse pickles by content, never overwrite shipped weights by default.

- Pickled checkpoints (``.pkl`` of the handouts' StyleGAN2-ADA code, ``torch.save`` files) can run arbitrary code
  when loaded, so nothing here loads them: :func:`refuse_pickle` turns one into a one-line error that says how to
  get a safetensors file instead, before a safetensors reader fails with an obscure header error.
- Outputs default to ``outputs/``; :func:`check_overwrite` refuses to replace the weights shipped in the
  repository (``common/toy/models/``, ``gan/checkpoints/``) unless the user passes ``--force``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

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
