"""Pack a folder (or zip) of images into StyleGAN's layout: square, resized, ``00000/img00000000.png``.

The destination is a folder, or a ``.zip`` (stored uncompressed, like StyleGAN2-ADA's dataset_tool).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import click
from PIL import Image
from tqdm import tqdm

from common.cli import CONTEXT_SETTINGS, user_errors
from gan.dataset import load_images


def _entries(images):
    for i, img in enumerate(images):
        yield f"{i // 1000:05d}/img{i:08d}.png", Image.fromarray(img.permute(1, 2, 0).numpy())


def write_dataset(images, dest: Path) -> int:
    """Write uint8 [N, 3, R, R] images as PNGs to a folder or an uncompressed zip; returns N."""
    if dest.suffix.lower() == ".zip":
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, img in tqdm(_entries(images), total=len(images), desc="packing"):
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                zf.writestr(name, buf.getvalue())
        tmp.replace(dest)
    else:
        for name, img in tqdm(_entries(images), total=len(images), desc="packing"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            img.save(dest / name)
    return len(images)


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--source", required=True, type=click.Path(), help="Folder or zip of images, or 'toy'.")
@click.option("--dest", required=True, type=click.Path(), help="Output folder or .zip.")
@click.option("--resolution", type=click.IntRange(min=4), default=None, help="Centre-crop and resize to R.")
@user_errors
def main(source, dest, resolution):
    """Centre-crop, resize and pack images for gan.train.

    \b
    Examples:
      python -m gan.dataset_tool --source raw_dogs/ --dest dogs256.zip --resolution 256
      python -m gan.dataset_tool --source toy --dest toy_faces64/
    """
    if source == "toy" and not Path(source).exists():
        from gan.toy import toy_dataset

        images = toy_dataset(resolution=resolution or 64)
    else:
        images = load_images(source, resolution)
    n = write_dataset(images, Path(dest))
    click.echo(f"wrote {n} images of {images.shape[-1]}x{images.shape[-1]} to {dest}")


if __name__ == "__main__":
    main()
