"""The shapes domain: one coloured shape on a solid background, with a caption.

Images are rendered with signed distance functions (SDFs) in torch, fully vectorised over the batch, so a GPU
can make training batches on the fly. Anti-aliasing uses the analytic pixel coverage
``clamp(0.5 - sdf / pixel, 0, 1)``: pixels whose centre lies more than half a pixel inside the shape get the
exact palette colour, so the object's interior and the background are exact palette values.

Geometry is in units of the image side (0..1, y pointing down):
- ``center`` is the centre of the object's bounding box,
- ``size`` is the bounding-box width (35-75% of the side); a triangle is ``size * sqrt(3)/2`` high.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

# Palette: exact sRGB values (issue 3). Order matters: indices are used by the samplers and the judge.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MIN_SIZE, MAX_SIZE = 0.35, 0.75  # bounding-box side as a fraction of the image side
TRIANGLE_HEIGHT = math.sqrt(3.0) / 2.0  # height / width of an upright equilateral triangle

# Fixed base seeds: the three splits draw from disjoint seed ranges (seed = base + offset, offset < 10**6).
_SPLIT_SEEDS = {"train": 0, "val": 1_000_000_007, "test": 2_000_000_011}
_SPLIT_STRIDE = 1_000_000


@dataclass(frozen=True)
class ShapeSpec:
    """One image: object colour and shape, background colour, bbox centre (x, y) and bbox width."""

    color: str
    shape: str
    background: str
    center: tuple[float, float]
    size: float


def split_seed(split: str, offset: int = 0) -> int:
    """Seed of ``split`` ('train', 'val' or 'test'); ``offset`` in [0, 10**6) picks another seed inside it."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(_SPLIT_SEEDS)}")
    if not 0 <= offset < _SPLIT_STRIDE:
        raise ValueError(f"offset must be in [0, {_SPLIT_STRIDE}), got {offset}")
    return _SPLIT_SEEDS[split] + offset


def article(word: str) -> str:
    """English indefinite article of a colour name: ``an`` before a vowel (an orange), else ``a``."""
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def caption_text(color: str, shape: str, background: str) -> str:
    """``a {color} {shape} on a {background} background`` (issue 3), ``an`` before orange."""
    return f"{article(color)} {color} {shape} on {article(background)} {background} background"


def caption(spec: ShapeSpec) -> str:
    """The caption of one image (:func:`caption_text`)."""
    return caption_text(spec.color, spec.shape, spec.background)


_CAPTION_RE = re.compile(r"^\s*an? (\w+) (\w+) on an? (\w+) background\s*$")


def parse_caption(text: str) -> tuple[str, str, str]:
    """Inverse of :func:`caption`: ``(color, shape, background)``; raises ValueError on other text."""
    match = _CAPTION_RE.match(text.lower())
    if not match or match[1] not in PALETTE or match[2] not in SHAPES or match[3] not in PALETTE:
        raise ValueError(f"not a shapes caption: {text!r} (expected 'a <color> <shape> on a <color> background')")
    return match[1], match[2], match[3]


def all_attributes() -> list[tuple[str, str, str]]:
    """Every valid (color, shape, background) triple, background != color: 8 * 3 * 7 = 168 of them."""
    return [(c, s, b) for c in COLORS for s in SHAPES for b in COLORS if b != c]


def all_captions() -> list[str]:
    """Captions of :func:`all_attributes`, in the same order."""
    return [caption_text(c, s, b) for c, s, b in all_attributes()]


def caption_index(color: str, shape: str, background: str) -> int:
    """Position of a triple in :func:`all_attributes` (inverse of that list)."""
    c, s, b = COLORS.index(color), SHAPES.index(shape), COLORS.index(background)
    if b == c:
        raise ValueError(f"background equals the object colour ({color})")
    return (c * len(SHAPES) + s) * (len(COLORS) - 1) + (b - (b > c))


# ---------------------------------------------------------------------------------------------------------------
# Sampling: all randomness comes from one CPU torch.Generator, so specs are identical on every device.


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def sample_params(n: int, generator: torch.Generator | int | None = None) -> dict[str, torch.Tensor]:
    """Random attributes as tensors: ``color``, ``shape``, ``background`` (long [n]); ``cx``, ``cy``, ``size``."""
    g = _as_generator(generator)
    color = torch.randint(len(COLORS), (n,), generator=g)
    shape = torch.randint(len(SHAPES), (n,), generator=g)
    # background: uniform over the 7 palette colours different from the object colour
    background = (color + 1 + torch.randint(len(COLORS) - 1, (n,), generator=g)) % len(COLORS)
    size = MIN_SIZE + (MAX_SIZE - MIN_SIZE) * torch.rand(n, generator=g, dtype=torch.float64)
    height = torch.where(shape == SHAPES.index("triangle"), size * TRIANGLE_HEIGHT, size)
    u = torch.rand(2, n, generator=g, dtype=torch.float64)
    cx = size / 2 + u[0] * (1 - size)  # bbox fully inside [0, 1]
    cy = height / 2 + u[1] * (1 - height)
    return {"color": color, "shape": shape, "background": background,
            "cx": cx.float(), "cy": cy.float(), "size": size.float()}


def params_to_specs(params: dict[str, torch.Tensor]) -> list[ShapeSpec]:
    """Turn :func:`sample_params` tensors into a list of :class:`ShapeSpec`."""
    rows = zip(params["color"].tolist(), params["shape"].tolist(), params["background"].tolist(),
               params["cx"].tolist(), params["cy"].tolist(), params["size"].tolist(), strict=True)
    return [ShapeSpec(COLORS[c], SHAPES[s], COLORS[b], (x, y), z) for c, s, b, x, y, z in rows]


def specs_to_params(specs: list[ShapeSpec]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`params_to_specs` (validates names)."""
    for spec in specs:
        if spec.color not in PALETTE or spec.background not in PALETTE or spec.shape not in SHAPES:
            raise ValueError(f"unknown colour or shape in {spec}")
    return {
        "color": torch.tensor([COLORS.index(s.color) for s in specs], dtype=torch.long),
        "shape": torch.tensor([SHAPES.index(s.shape) for s in specs], dtype=torch.long),
        "background": torch.tensor([COLORS.index(s.background) for s in specs], dtype=torch.long),
        "cx": torch.tensor([s.center[0] for s in specs], dtype=torch.float32),
        "cy": torch.tensor([s.center[1] for s in specs], dtype=torch.float32),
        "size": torch.tensor([s.size for s in specs], dtype=torch.float32),
    }


def sample_specs(n: int, generator: torch.Generator | int | None = None) -> list[ShapeSpec]:
    """``n`` random specs from a ``torch.Generator`` or an integer seed (see :func:`split_seed`)."""
    return params_to_specs(sample_params(n, generator))


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def palette_tensor(device: torch.device | str | None = None) -> torch.Tensor:
    """Palette as [8, 3] floats in [-1, 1] (sRGB / 127.5 - 1), in :data:`COLORS` order."""
    rgb = torch.tensor([PALETTE[c] for c in COLORS], dtype=torch.float32, device=device)
    return rgb / 127.5 - 1.0


def _sdf(params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Signed distance to each object in pixels (negative inside): [B, H, W].

    Circle: |p - c| - r. Square and triangle: max over the half-planes of their edges (exact inside and on the
    edges, which is all the one-pixel anti-aliasing band needs).
    """
    device = params["cx"].device
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5)  # pixel centres, in pixels
    x = coords.view(1, 1, size) - params["cx"].view(-1, 1, 1) * size  # [B, 1, W]
    y = coords.view(1, size, 1) - params["cy"].view(-1, 1, 1) * size  # [B, H, 1]
    half = params["size"].view(-1, 1, 1) * size / 2  # half the bbox width, in pixels
    circle = torch.sqrt(x * x + y * y) - half
    square = torch.maximum(x.abs(), y.abs()) - half
    # upright equilateral triangle: apex at y = -h/2, base at y = +h/2, edges with outward normals (+-sqrt3/2, -1/2)
    h_half = half * TRIANGLE_HEIGHT
    sin60 = TRIANGLE_HEIGHT
    slanted = sin60 * x.abs() - 0.5 * (y + h_half)
    triangle = torch.maximum(slanted, y - h_half)
    shape = params["shape"].view(-1, 1, 1)
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def render_params(params: dict[str, torch.Tensor], size: int = 64) -> torch.Tensor:
    """Render :func:`sample_params` tensors (on any device) to [B, 3, size, size] in [-1, 1]."""
    coverage = (0.5 - _sdf(params, size)).clamp(0.0, 1.0).unsqueeze(1)  # [B, 1, H, W]
    palette = palette_tensor(params["cx"].device)
    fg = palette[params["color"]].view(-1, 3, 1, 1)
    bg = palette[params["background"]].view(-1, 3, 1, 1)
    return bg + coverage * (fg - bg)


def render(specs: list[ShapeSpec], size: int = 64, device: torch.device | str | None = None) -> torch.Tensor:
    """Render specs to a [B, 3, size, size] float tensor in [-1, 1] on ``device``."""
    params = {k: v.to(device) for k, v in specs_to_params(specs).items()}
    return render_params(params, size)


def sample_batch(n: int, generator: torch.Generator | int | None = None, size: int = 64,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images [n, 3, size, size] in [-1, 1] on ``device`` plus their attribute tensors (for training loops)."""
    params = {k: v.to(device) for k, v in sample_params(n, generator).items()}
    return render_params(params, size), params


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [B, H, W, 3] (rounded), ready for PIL."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
