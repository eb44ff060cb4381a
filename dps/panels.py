"""Labelled image rows for result panels (truth | measurement | reconstruction) and kernel figures.

Pure functions: tensors in, a PIL image out. The grid is ``torchvision.utils.make_grid``; labels are drawn with
PIL's default font in a white strip above each tile. Toy-size images are enlarged by an integer factor with
nearest-neighbour sampling so their pixels stay visible (``TOY_UPSCALE`` for images of at most ``TOY_MAX_SIZE`` px).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

TOY_MAX_SIZE = 64
TOY_UPSCALE = 4
PADDING = 2
LABEL_HEIGHT = 14


def display_upscale(size: int) -> int:
    """The nearest-neighbour enlargement of images ``size`` px wide in panels and grids: 4 up to 64 px, else 1."""
    return TOY_UPSCALE if size <= TOY_MAX_SIZE else 1


def enlarge(images: torch.Tensor, upscale: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, upscale H, upscale W] by repeating pixels (nearest neighbour)."""
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1, got {upscale}")
    return images if upscale == 1 else F.interpolate(images.float(), scale_factor=upscale, mode="nearest")


def labelled_row(images: Sequence[torch.Tensor] | torch.Tensor, labels: Sequence[str], upscale: int = 1,
                 value_range: tuple[float, float] = (-1.0, 1.0)) -> Image.Image:
    """One row of images [C, H, W] (all the same size, values in ``value_range``) with a label above each.

    Returns an RGB PIL image of (upscale H + PADDING + LABEL_HEIGHT) x (N (upscale W + PADDING) + PADDING) px.
    """
    row = torch.stack([x.detach().float().cpu() for x in images])  # [N, C, H, W]
    if len(labels) != len(row):
        raise ValueError(f"got {len(labels)} labels for {len(row)} images")
    if row.shape[1] == 1:
        row = row.expand(-1, 3, -1, -1)
    lo, hi = value_range
    row = enlarge(((row - lo) / (hi - lo)).clamp(0, 1), upscale)
    grid = make_grid(row, nrow=len(row), padding=PADDING, pad_value=1.0)  # [3, H', W'] in [0, 1]
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    tiles = Image.fromarray(pixels)
    out = Image.new("RGB", (tiles.width, tiles.height + LABEL_HEIGHT), "white")
    out.paste(tiles, (0, LABEL_HEIGHT))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    tile_width = row.shape[-1] + PADDING
    for i, label in enumerate(labels):
        draw.text((PADDING + i * tile_width + 1, 1), label, fill="black", font=font)
    return out
