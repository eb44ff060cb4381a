"""Image datasets in StyleGAN's layout: a folder (searched recursively) or an uncompressed zip of PNG/JPEG files.

An optional ``dataset.json`` (``{"labels": [[name, label], ...]}``) is ignored: training is unconditional.
All images are decoded once into a uint8 tensor [N, 3, R, R] (few-shot sets are small), so sampling a batch
is an index draw from a ``torch.Generator``. The word ``toy`` selects the built-in 100-image few-shot set.
"""

from __future__ import annotations

import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.images import read_pil

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TOY = "toy"
MAX_MEMBER_BYTES = 2**28  # 256 MiB: no image of a GAN data set is larger; refuses zip bombs before inflating
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


def _is_image(name: str) -> bool:
    """Image suffix, and no hidden part (``.partial`` folders of an interrupted dataset_tool, ``__MACOSX``)."""
    parts = Path(name).parts
    return Path(name).suffix.lower() in IMAGE_EXTS and not any(p.startswith((".", "__MACOSX")) for p in parts)


def _list_images(path: Path) -> list[str]:
    """Image names (relative paths or zip members), sorted."""
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    if path.is_dir():
        return sorted(str(p.relative_to(path)) for p in path.rglob("*") if _is_image(str(p.relative_to(path)))
                      and p.is_file())
    if not zipfile.is_zipfile(path):
        raise ValueError(f"dataset {path} is neither a folder nor a zip file")
    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(n for n in zf.namelist() if _is_image(n))
    except ZIP_ERRORS as err:
        raise ValueError(f"dataset {path} is a corrupt zip file ({err})") from err


def _read_zip_member(zf: zipfile.ZipFile, name: str, tmp: Path, path: Path) -> Image.Image:
    """Decode one zip member through ``common.images.read_pil`` (size and bomb checks) via a temporary file."""
    try:
        info = zf.getinfo(name)
        if info.file_size > MAX_MEMBER_BYTES:
            raise ValueError(f"cannot read image {name} in {path}: {info.file_size / 2**20:.0f} MiB uncompressed, "
                             f"more than the {MAX_MEMBER_BYTES / 2**20:.0f} MiB allowed")
        data = zf.read(name)
    except ZIP_ERRORS as err:
        raise ValueError(f"cannot read image {name} in {path}: corrupt zip member ({err})") from err
    file = tmp / f"member{Path(name).suffix.lower()}"
    file.write_bytes(data)
    try:
        return read_pil(file)
    except ValueError as err:
        raise ValueError(str(err).replace(str(file), f"{name} in {path}")) from err


def _decoded(path: Path, names: list[str]) -> Iterator[tuple[str, Image.Image]]:
    """(name, 8-bit RGB image) for each name of a folder or zip data set; one-line ValueError on bad files."""
    if path.is_dir():
        for name in names:
            yield name, read_pil(path / name)
        return
    with tempfile.TemporaryDirectory(prefix="gan-dataset-") as tmp:
        try:
            zf = zipfile.ZipFile(path)
        except ZIP_ERRORS as err:
            raise ValueError(f"dataset {path} is a corrupt zip file ({err})") from err
        with zf:
            for name in names:
                yield name, _read_zip_member(zf, name, Path(tmp), path)


def is_power_of_two(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


def check_resolution(resolution: int | None) -> None:
    if resolution is not None and not is_power_of_two(resolution):
        raise ValueError(f"--resolution must be a power of two >= 4, got {resolution}")


def load_images(path: str | Path, resolution: int | None = None, max_images: int | None = None) -> torch.Tensor:
    """Decode a folder/zip into uint8 [N, 3, R, R].

    Without ``resolution`` all images must be square with the same power-of-two size; with it, every image is
    resized (Lanczos) to R x R after a centre crop to square. Raises ValueError/FileNotFoundError with one line.
    """
    check_resolution(resolution)
    names = _list_images(Path(path))
    if not names:
        raise ValueError(f"no images (png/jpg/webp/bmp) found in {path}")
    names = names[:max_images] if max_images else names
    arrays, first = [], None
    for name, img in _decoded(Path(path), names):
        if resolution is None:
            first = first or (name, img.size)
            if img.size != first[1]:
                raise ValueError(f"images have mixed sizes ({first[0]} is {first[1][0]}x{first[1][1]}, {name} is "
                                 f"{img.size[0]}x{img.size[1]}); pass --resolution to resize them")
        else:
            img = center_crop_resize(img, resolution)
        arrays.append(np.asarray(img, dtype=np.uint8))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    H, W = images.shape[2:]
    if H != W or not is_power_of_two(H):
        raise ValueError(f"images are {W}x{H}; StyleGAN needs square power-of-two images, pass --resolution")
    return images


def center_crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img if s == resolution else img.resize((resolution, resolution), Image.LANCZOS)


def load_dataset(data: str, resolution: int | None = None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """uint8 [N, 3, R, R] and a short name for run folders; ``data == "toy"`` builds the toy few-shot set."""
    if data == TOY and not Path(data).exists():
        from gan.toy import toy_dataset

        check_resolution(resolution)
        return toy_dataset(resolution=resolution or 64), "toy"
    images = load_images(data, resolution)
    return images, Path(data).stem or "data"


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float in [-1, 1]."""
    return images_u8.float() / 127.5 - 1


class BatchSampler:
    """Uniformly drawn batches (with replacement), optional x-flips; all randomness from the CPU generator."""

    def __init__(self, images_u8: torch.Tensor, batch: int, generator: torch.Generator, mirror: bool = False):
        self.images, self.batch, self.generator, self.mirror = images_u8, batch, generator, mirror

    def next(self, device: torch.device) -> torch.Tensor:
        idx = torch.randint(len(self.images), (self.batch,), generator=self.generator)
        x = to_float(self.images[idx])
        if self.mirror:
            flip = torch.rand(self.batch, generator=self.generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x.to(device, non_blocking=True)
