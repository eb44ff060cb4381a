"""Labelled image panels for the outputs: each tile with its caption under it (the prompt, a window offset).

Tiles are laid out with ``torchvision.utils.make_grid``; labels are drawn with PIL ``ImageDraw`` below each
image, word-wrapped to the tile width. Toy-size images (<= 64 px a side) are enlarged x4 with nearest-neighbour
sampling first, so the pixels stay visible and the text fits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from common.images import pil_to_tensor

TOY_SIZE = 64  # images at most this big (the toy world's 64 px, a 16-px test model) are upscaled
UPSCALE = 4


def upscale_small(images: torch.Tensor, limit: int = TOY_SIZE, factor: int = UPSCALE) -> torch.Tensor:
    """[N, 3, H, W] -> x``factor`` nearest when max(H, W) <= ``limit``, else unchanged."""
    if max(images.shape[-2:]) <= limit:
        return F.interpolate(images.float(), scale_factor=factor, mode="nearest")
    return images


def _wrap(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` px (a single word wider than a line overflows it)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]


def label_tiles(images: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> [N, 3, H + band, W]: each image over a white band with its label (black)."""
    if len(labels) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(labels)} labels")
    width = images.shape[-1]
    font = ImageFont.load_default(size=max(10, width // 16))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(font.getbbox("Ag")[3]) + 2
    wrapped = [_wrap(label, probe, font, width - 4) for label in labels]
    band = 4 + line_h * max(len(lines) for lines in wrapped)
    tiles = []
    for lines in wrapped:
        strip = Image.new("RGB", (width, band), "white")
        draw = ImageDraw.Draw(strip)
        for row, line in enumerate(lines):
            draw.text(((width - draw.textlength(line, font=font)) / 2, 2 + row * line_h), line, fill="black",
                      font=font)
        tiles.append(pil_to_tensor(strip))  # [3, band, W] in [-1, 1]
    return torch.cat([images.float().cpu(), torch.stack(tiles)], dim=-2)


def labelled_panel(images: torch.Tensor, labels: list[str], nrow: int | None = None) -> torch.Tensor:
    """One [3, H', W'] panel in [-1, 1]: the images (upscaled when toy-size), each labelled, ``nrow`` per row."""
    from torchvision.utils import make_grid

    tiles = label_tiles(upscale_small(images.float().cpu()), labels)
    return make_grid(tiles, nrow=nrow or len(tiles), padding=4, pad_value=1.0)
