"""Pack a folder (or zip) of images into StyleGAN's layout: square, resized, ``00000/img00000000.png``.

The destination is a folder, or a ``.zip`` (stored uncompressed, like StyleGAN2-ADA's dataset_tool). Both are
built under a temporary name and renamed into place only when complete (``common.runs.atomic_dir`` for a folder,
a temporary file + ``os.replace`` for a zip), so a kill never leaves a partial data set for ``gan.train`` to read.
``config.json`` (the options, the image count, the toy seed) goes inside the folder, or next to the zip as
``<name>.config.json``.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import click
from PIL import Image
from tqdm import tqdm

from common.cli import CONTEXT_SETTINGS, user_errors
from common.runs import atomic_dir, write_config
from gan.dataset import TOY, load_dataset
from gan.toy import TOY_SEED


def _entries(images):
    for i, img in enumerate(images):
        yield f"{i // 1000:05d}/img{i:08d}.png", Image.fromarray(img.permute(1, 2, 0).numpy())


def _write_zip(images, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, img in tqdm(_entries(images), total=len(images), desc="packing"):
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                zf.writestr(name, buf.getvalue())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_dataset(images, dest: Path, config: dict | None = None, overwrite: bool = False) -> int:
    """Write uint8 [N, 3, R, R] images as PNGs to a folder or an uncompressed zip, atomically; returns N."""
    if dest.suffix.lower() == ".zip":
        _write_zip(images, dest)
        if config is not None:
            write_config(dest.parent, config, name=f"{dest.stem}.config.json")
        return len(images)
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for name, img in tqdm(_entries(images), total=len(images), desc="packing"):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            img.save(tmp / name)
        if config is not None:
            write_config(tmp, config)
    return len(images)


def check_dest(dest: Path, overwrite: bool) -> None:
    """Refuse, before any work, a destination that exists (without --overwrite) or has the wrong kind."""
    is_zip = dest.suffix.lower() == ".zip"
    if dest.exists() and is_zip != dest.is_file():
        raise ValueError(f"--dest {dest} exists and is a {'folder' if is_zip else 'file'}; "
                         f"expected {'a .zip file' if is_zip else 'a folder'}")
    if dest.exists() and not overwrite and (is_zip or any(dest.iterdir())):
        raise ValueError(f"--dest {dest} already exists; choose another name or pass --overwrite")


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--source", required=True, type=click.Path(), help="Folder or zip of images, or 'toy'.")
@click.option("--dest", required=True, type=click.Path(), help="Output folder or .zip.")
@click.option("--resolution", type=click.IntRange(min=4), default=None,
              help="Centre-crop and resize to R (a power of two).")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing --dest.")
@user_errors
def main(source, dest, resolution, overwrite):
    """Centre-crop, resize and pack images for gan.train.

    \b
    Examples:
      python -m gan.dataset_tool --source raw_dogs/ --dest dogs256.zip --resolution 256
      python -m gan.dataset_tool --source toy --dest toy_faces64/
    """
    dest = Path(dest)
    check_dest(dest, overwrite)
    images, _ = load_dataset(source, resolution)
    toy = source == TOY and not Path(source).exists()
    config = {"source": source, "dest": str(dest), "resolution": resolution, "overwrite": overwrite,
              "num_images": len(images), "image_size": images.shape[-1], "seed": TOY_SEED if toy else None}
    n = write_dataset(images, dest, config, overwrite)
    click.echo(f"wrote {n} images of {images.shape[-1]}x{images.shape[-1]} to {dest}")


if __name__ == "__main__":
    main()
