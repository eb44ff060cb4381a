"""A pixel-level judge for the toy shapes world: which palette colours, which shape, and how well it fits.

:mod:`common.toy.judge` asks toy-clip (the zero-shot argmax over the 168 captions); on ambiguous images that is not
enough: toy-pixel's failure mode for "a white circle / a white square" is an L-shaped blob, which toy-clip reads
as a circle in one view and a square in the other. This judge looks at the pixels instead, using what the toy
world guarantees (``common.toy.shapes``): one palette-coloured, axis-aligned object (circle, square, upright
equilateral triangle) on a flat palette background.

1. Every pixel gets its nearest palette colour; the background is the most common colour of the 2-px border
   ring, the object colour the most common other colour, the object mask the pixels of that colour.
2. For each shape, two ideal shapes are rendered (``common.toy.shapes.render``): one of the mask's area centred
   on its centroid (a triangle's centroid lies h/6 below its bounding-box centre), one filling the bounding box of
   the mask's solid part (extended past the image edge when the object is cut off there); the better IoU with the
   mask is the shape's fit. The judged shape is the best fit; the verdict is right when colour, background and
   shape match the caption and the fit's IoU is at least :data:`MIN_IOU`.

Depends only on :mod:`common.toy.shapes` (no model); ``synchronization.evaluate`` and ``distillation.evaluate``
report it next to the toy-clip judge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.toy import shapes

MIN_IOU = 0.8  # clean renders fit at ~1.0; an L-shaped blob fits no shape above ~0.75
MIN_AREA = 16  # object pixels (of 64 x 64) below which there is no object
SIDE = 64


def _mode(values: torch.Tensor) -> int:
    return int(torch.bincount(values, minlength=len(shapes.COLORS)).argmax())


def palette_labels(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [-1, 1] -> long [64, 64]: index of the nearest palette colour of each pixel."""
    x = image.float().unsqueeze(0)
    if x.shape[-2:] != (SIDE, SIDE):
        x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
    pixels = x[0].permute(1, 2, 0).reshape(-1, 3)  # [64*64, 3]
    return torch.cdist(pixels, shapes.palette_tensor()).argmin(dim=1).view(SIDE, SIDE)


def _iou(mask: torch.Tensor, spec: shapes.ShapeSpec) -> float:
    fit = palette_labels(shapes.render([spec], SIDE)[0]) == shapes.COLORS.index(spec.color)  # [64, 64] bool
    return float((mask & fit).sum()) / max(1, int((mask | fit).sum()))


def _by_area(mask: torch.Tensor, shape: str) -> tuple[tuple[float, float], float]:
    """(bbox centre, size) of the ideal shape with the mask's area, centred on its centroid (units of the side)."""
    area = float(mask.sum()) / SIDE**2
    ys, xs = torch.nonzero(mask, as_tuple=True)
    cx, cy = (float(xs.float().mean()) + 0.5) / SIDE, (float(ys.float().mean()) + 0.5) / SIDE
    if shape == "circle":
        return (cx, cy), 2 * math.sqrt(area / math.pi)
    if shape == "square":
        return (cx, cy), math.sqrt(area)
    size = math.sqrt(4 * area / math.sqrt(3))  # upright triangle: area = sqrt(3)/4 s^2, centroid h/6 below centre
    return (cx, cy - size * shapes.TRIANGLE_HEIGHT / 6), size


def _by_box(mask: torch.Tensor, shape: str) -> tuple[tuple[float, float], float]:
    """(bbox centre, size) from the bounding box of the mask's solid part (isolated pixels dropped); a box cut
    off by the image edge is extended past that edge to the shape's full extent."""
    solid = F.avg_pool2d(mask.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5
    ys, xs = torch.nonzero(solid if solid.any() else mask, as_tuple=True)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    ratio = shapes.TRIANGLE_HEIGHT if shape == "triangle" else 1.0  # height / width
    size = max(x1 - x0, (y1 - y0) / ratio)
    cx, cy = _extend(x0, x1, size), _extend(y0, y1, size * ratio)
    return (cx / SIDE, cy / SIDE), size / SIDE


def _extend(lo: int, hi: int, full: float) -> float:
    """Centre of a span [lo, hi) that should be ``full`` long: grown past the image edge it touches."""
    if hi - lo < full and lo == 0:
        return hi - full / 2
    if hi - lo < full and hi == SIDE:
        return lo + full / 2
    return (lo + hi) / 2


def _fit(mask: torch.Tensor, shape: str, color: str, background: str) -> float:
    """IoU of ``mask`` with the better of two ideal ``shape`` fits: same area at the centroid, or its bounding box."""
    fits = (_by_area(mask, shape), _by_box(mask, shape))
    return max(_iou(mask, shapes.ShapeSpec(color, shape, background, centre, size)) for centre, size in fits)


def judge_image(image: torch.Tensor) -> dict[str, str | float | None]:
    """``{"color", "shape", "background", "iou"}`` of one image [3, H, W] in [-1, 1] (color/shape None: no object)."""
    labels = palette_labels(image)
    ring = torch.cat([labels[:2].flatten(), labels[-2:].flatten(), labels[:, :2].flatten(), labels[:, -2:].flatten()])
    background = _mode(ring)
    others = labels[labels != background]
    if others.numel() < MIN_AREA:
        return {"color": None, "shape": None, "background": shapes.COLORS[background], "iou": 0.0}
    color = _mode(others)
    mask = labels == color
    names = (shapes.COLORS[color], shapes.COLORS[background])
    fits = {shape: _fit(mask, shape, *names) for shape in shapes.SHAPES}
    best = max(fits, key=fits.get)
    return {"color": names[0], "shape": best, "background": names[1], "iou": fits[best]}


def verdict(image: torch.Tensor, caption: str) -> dict[str, str | float | bool | None]:
    """:func:`judge_image` plus ``correct``: colour, shape and background as in ``caption`` and IoU >= MIN_IOU."""
    want = shapes.parse_caption(caption)
    got = judge_image(image)
    right = (got["color"], got["shape"], got["background"]) == want and float(got["iou"]) >= MIN_IOU
    return {**got, "correct": right}
