"""Image helpers: tensor <-> PIL in both [-1, 1] and [0, 1] conventions, grids and GIFs."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

Range = tuple[float, float]
MAX_PIXELS = 64_000_000  # far above any image here; a 50 kB PNG can claim 400 megapixels
SIGNED: Range = (-1.0, 1.0)
UNIT: Range = (0.0, 1.0)


def _to_unit(x: torch.Tensor, value_range: Range) -> torch.Tensor:
    lo, hi = value_range
    return ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)


def tensor_to_pil(x: torch.Tensor, value_range: Range = SIGNED) -> Image.Image | list[Image.Image]:
    """[C, H, W] -> PIL image, or [B, C, H, W] -> list of PIL images (C = 1 or 3)."""
    if x.ndim == 4:
        return [tensor_to_pil(xi, value_range) for xi in x]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor [C,H,W] with C in (1,3), got shape {tuple(x.shape)}")
    arr = (_to_unit(x, value_range) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def pil_to_tensor(img: Image.Image, value_range: Range = SIGNED) -> torch.Tensor:
    """PIL image -> float tensor [3, H, W] in ``value_range`` (converted to RGB)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    lo, hi = value_range
    return torch.from_numpy(arr).permute(2, 0, 1) * (hi - lo) + lo


def _to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit and 32-bit integer images are rescaled (PIL's own convert clips them to white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else float(2**32 - 1)
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        raise ValueError("floating-point images are not supported; save it as an 8- or 16-bit PNG")
    return img.convert("RGB")


def read_pil(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int = MAX_PIXELS,
             name: str | None = None) -> Image.Image:
    """Read an image (a path, bytes or a binary file object) as an 8-bit RGB PIL image.

    One-line ``ValueError`` for every way a file can be bad: refuses images above ``max_pixels`` from the header
    alone (before decoding, so a decompression bomb costs nothing), truncated or non-image files, and rescales
    16-bit PNGs instead of clipping them. ``name`` labels bytes / file objects in messages (e.g. a zip member).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(2, "No such file", str(path))
        label, opened = name or str(path), path
    else:
        label, opened = name or "<image>", io.BytesIO(source) if isinstance(source, bytes) else source
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit, with a clear message
    try:
        with Image.open(opened) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ValueError(f"cannot read image {label}: {w}x{h} is {w * h / 1e6:.0f} megapixels, more than "
                                 f"the {max_pixels / 1e6:.0f} allowed")
            img.load()
            return _to_rgb8(img)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ValueError(f"cannot read image {label}: not a valid image file") from err
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None,
               value_range: Range = SIGNED) -> torch.Tensor:
    """Read an image file as [3, H, W]; optionally resize (bicubic) to ``size``. One-line errors on bad files."""
    img = read_pil(path)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else size
        img = img.resize((hw[1], hw[0]), Image.BICUBIC)
    return pil_to_tensor(img, value_range)


def save_image(x: torch.Tensor, path: str | os.PathLike, value_range: Range = SIGNED) -> Path:
    """Save one [C, H, W] tensor as an image file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda tmp: tensor_to_pil(x, value_range).save(tmp, format=_format(path)))
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None,
              value_range: Range = SIGNED) -> Path:
    """Save a batch [B, C, H, W] as one grid image: ``nrow`` images per row (default: near-square,
    ``ceil(sqrt(B))``), 2 px white padding around every image (``torchvision.utils.make_grid``)."""
    from torchvision.utils import make_grid  # local: torchvision is slow to import

    unit = _to_unit(images, value_range)  # [B, C, H, W] in [0, 1]
    nrow = nrow or max(1, math.ceil(math.sqrt(unit.shape[0])))
    return save_image(make_grid(unit, nrow=nrow, padding=2, pad_value=1.0), path, UNIT)


def save_gif(frames: Sequence[torch.Tensor | Image.Image], path: str | os.PathLike, duration_ms: int = 80,
             value_range: Range = SIGNED, loop: int = 0) -> Path:
    """Write an animated GIF from [C, H, W] tensors or PIL images."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    pil = [f if isinstance(f, Image.Image) else tensor_to_pil(f, value_range) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda tmp: pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:],
                                                duration=duration_ms, loop=loop))
    return path


def _write_atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``; an error or an interrupt leaves no temporary file."""
    tmp = path.with_name(".tmp-" + path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}.get(ext, "PNG")
