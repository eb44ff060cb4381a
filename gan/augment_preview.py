"""Show DiffAugment on real images: one row per policy (none, color, translation, cutout, all three).

The handout's ``python DiffAugment_pytorch.py`` check: cutout boxes must be 25-50% of the side with
``--cutout random`` (50% with ``fixed``), translation at most 1/8 of the side, colours shifted per image.
The options and seed go to ``<out stem>.config.json`` next to the PNG.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, user_errors
from common.images import save_grid
from common.runs import write_config
from gan.augment import diff_augment
from gan.dataset import load_dataset, to_float

ROWS = ("", "color", "translation", "cutout", "color,translation,cutout")


def preview(images: torch.Tensor, cutout_mode: str = "random", seed: int = 0) -> torch.Tensor:
    """[len(ROWS) * B, 3, H, W]: row r is policy ROWS[r] applied to the same B images."""
    gen = torch.Generator().manual_seed(seed)
    rows = [images if not policy else diff_augment(images, policy, gen, cutout_mode) for policy in ROWS]
    return torch.cat(rows).clamp(-1, 1)


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--data", required=True, help="Folder or zip of images, or 'toy'.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
@click.option("--n", "num", type=click.IntRange(min=1, max=64), default=8, help="Images per row.")
@click.option("--cutout", type=click.Choice(["random", "fixed"]), default="random", help="Cutout variant.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed for the augmentation draws.")
@click.option("--resolution", type=click.IntRange(min=4), default=None, help="Resize images to R.")
@user_errors
def main(data, out, num, cutout, seed, resolution):
    """Save a grid of DiffAugment examples (rows: original, color, translation, cutout, all).

    \b
    Examples:
      python -m gan.augment_preview --data toy --out augment.png
    """
    images, _ = load_dataset(data, resolution)
    grid = preview(to_float(images[:num]), cutout, seed)
    out = Path(out)
    save_grid(grid, out, nrow=min(num, len(images)))
    config = write_config(out.parent, {"data": data, "out": str(out), "n": num, "cutout": cutout, "seed": seed,
                                       "resolution": resolution, "rows": list(ROWS)}, name=f"{out.stem}.config.json")
    click.echo(f"wrote {out} and {config}")


if __name__ == "__main__":
    main()
