"""Labelled image grids for the outputs: every tile with its caption under it (a prompt, a step, a CLIP score).

One layout for every package (DPS result rows, synchronization windows and views, distillation contact sheets and
progress strips): toy-size tiles (at most :data:`TOY_MAX_SIZE` px a side) are first enlarged x
:data:`TOY_UPSCALE` by repeating pixels (nearest neighbour), so the toy world's 64-px pixels stay visible and a
caption fits; each tile then gets a white band under it with its label in black, word-wrapped to the tile width
(PIL ``ImageDraw``, newlines start a new line); ``torchvision.utils.make_grid`` lays the tiles out with white
padding. Pure functions: tensors in, a tensor [3, H', W'] out, in the caller's value range.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from common.images import SIGNED, UNIT, Range, pil_to_tensor, save_image

TOY_MAX_SIZE = 64  # tiles at most this big (the toy world's 64 px, 16-px test models) are enlarged
TOY_UPSCALE = 4
PADDING = 4  # white px around and between the tiles
MARGIN = 2  # px between a band's edge and its text


def display_upscale(size: int) -> int:
    """The nearest-neighbour enlargement of images ``size`` px a side in panels and grids: 4 up to 64 px, else 1."""
    return TOY_UPSCALE if size <= TOY_MAX_SIZE else 1


def enlarge(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[..., H, W] -> [..., factor H, factor W] by repeating every pixel ``factor`` times each way (exact)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"the enlargement factor must be an integer >= 1, got {factor}")
    if factor == 1:
        return images
    return images.repeat_interleave(int(factor), dim=-2).repeat_interleave(int(factor), dim=-1)


def label_font(width: int) -> ImageFont.ImageFont:
    """PIL's default (scalable) font at a size that suits tiles ``width`` px wide: 10 px up to 160 px tiles."""
    return ImageFont.load_default(size=max(10, width // 16))


def wrap_label(text: str, width: int, font: ImageFont.ImageFont) -> list[str]:
    """Lines of ``text`` no wider than ``width`` px: newlines kept, greedy word wrap, over-wide words broken."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def fits(line: str) -> bool:
        return probe.textlength(line, font=font) <= width

    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        current = ""
        for word in paragraph.split():
            while len(word) > 1 and not fits(word):  # a word wider than a line: its longest fitting head
                head = max((k for k in range(1, len(word)) if fits(word[:k])), default=1)
                lines += [current, word[:head]] if current else [word[:head]]
                current, word = "", word[head:]
            if current and not fits(f"{current} {word}"):
                lines.append(current)
                current = ""
            current = f"{current} {word}" if current else word
        lines.append(current)
    return lines


def label_bands(labels: Sequence[str], width: int) -> torch.Tensor:
    """[N, 3, band, width] in [0, 1]: white bands with each label centred in black, one height for all."""
    font = label_font(width)
    line_h = int(font.getbbox("Ag")[3]) + 2
    wrapped = [wrap_label(label, width - 2 * MARGIN, font) for label in labels]
    band = 2 * MARGIN + line_h * max(len(lines) for lines in wrapped)
    strips = []
    for lines in wrapped:
        strip = Image.new("RGB", (width, band), "white")
        draw = ImageDraw.Draw(strip)
        for row, line in enumerate(lines):
            x = max(MARGIN, (width - draw.textlength(line, font=font)) / 2)
            draw.text((x, MARGIN + row * line_h), line, fill="black", font=font)
        strips.append(pil_to_tensor(strip, UNIT))
    return torch.stack(strips)


def labelled_grid(images: torch.Tensor | Sequence[torch.Tensor], labels: Sequence[str], nrow: int | None = None,
                  upscale: int | None = None, value_range: Range = SIGNED) -> torch.Tensor:
    """Images [N, C, H, W] (C = 1 or 3, values in ``value_range``), each over its label -> [3, H', W'].

    ``nrow`` tiles per row (default: all in one row); ``upscale`` the integer nearest-neighbour enlargement
    (default :func:`display_upscale` of the larger side). The result is in ``value_range``, padding white.
    """
    from torchvision.utils import make_grid  # local: torchvision is slow to import

    batch = torch.stack(list(images)) if not isinstance(images, torch.Tensor) else images
    if batch.ndim != 4 or batch.shape[1] not in (1, 3) or batch.shape[0] == 0:
        raise ValueError(f"expected images [N, C, H, W] with N >= 1 and C in (1, 3), got {tuple(batch.shape)}")
    if len(labels) != batch.shape[0]:
        raise ValueError(f"got {batch.shape[0]} images but {len(labels)} labels")
    lo, hi = value_range
    unit = ((batch.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1).expand(-1, 3, -1, -1)  # [N, 3, H, W]
    unit = enlarge(unit, display_upscale(max(unit.shape[-2:])) if upscale is None else upscale)
    tiles = torch.cat([unit, label_bands(labels, unit.shape[-1])], dim=-2)  # [N, 3, H + band, W]
    grid = make_grid(tiles, nrow=nrow or len(tiles), padding=PADDING, pad_value=1.0)  # [3, H', W'] in [0, 1]
    return grid * (hi - lo) + lo


def save_labelled_grid(path: str | os.PathLike, images: torch.Tensor | Sequence[torch.Tensor],
                       labels: Sequence[str], nrow: int | None = None, upscale: int | None = None,
                       value_range: Range = SIGNED) -> Path:
    """:func:`labelled_grid` written to ``path`` (atomically, :func:`common.images.save_image`)."""
    return save_image(labelled_grid(images, labels, nrow, upscale, value_range), path, value_range)
