"""Toy faces: seeded procedural 64x64 cartoon faces, rendered in torch (vectorised over the batch).

The face domain stands in for CelebA-HQ in the ``ddpm_ddim`` and ``dps`` assignments: a tiny unconditional
DDPM (toy-faces) is trained on it, and its held-out split is the ground truth for inpainting and deblurring.

Every image varies: background colour and gradient, head shape (ellipse to rounded square, width, height,
position), skin tone, ears, hair style (bald, short, fringe, long) and colour, eyes (spacing, size, height,
iris colour), brows (tilt, thickness), nose, mouth (smile/frown curvature, width, open or closed), blush and
glasses. Shapes are signed distance functions (SDFs) in units of the image side with anti-aliased coverage
``clamp(0.5 - sdf / pixel, 0, 1)``, composited back to front, so a GPU can render training batches on the fly.

All randomness comes from one CPU ``torch.Generator``; the parameters are identical on every device.
"""

from __future__ import annotations

import torch

from common.toy.shapes import split_seed

# Split seeds are shared with the shapes domain: split_seed('train'|'val'|'test', offset) -> disjoint streams.
_SPLIT_STRIDE = 1_000_000

# Colour anchors (sRGB 0..1). Skin tones are interpolated between neighbours of this ramp.
SKIN_TONES = ((1.00, 0.87, 0.77), (0.96, 0.78, 0.62), (0.86, 0.64, 0.47), (0.67, 0.46, 0.32), (0.45, 0.30, 0.20))
HAIR_COLORS = ((0.10, 0.08, 0.07), (0.35, 0.22, 0.12), (0.62, 0.42, 0.20), (0.90, 0.78, 0.45), (0.70, 0.25, 0.10),
               (0.55, 0.55, 0.58))
IRIS_COLORS = ((0.25, 0.15, 0.08), (0.20, 0.40, 0.75), (0.25, 0.55, 0.30), (0.10, 0.10, 0.10))
HAIR_STYLES = ("bald", "short", "fringe", "long")


# ---------------------------------------------------------------------------------------------------------------
# Parameters


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _pick(g: torch.Generator, n: int, table: tuple[tuple[float, float, float], ...], jitter: float) -> torch.Tensor:
    """Random entries of a colour table with a little per-channel jitter: [n, 3]."""
    idx = torch.randint(len(table), (n,), generator=g)
    base = torch.tensor(table)[idx]
    return (base + jitter * (2 * torch.rand(n, 3, generator=g) - 1)).clamp(0, 1)


def sample_face_params(n: int, generator: torch.Generator | int | None = None) -> dict[str, torch.Tensor]:
    """Random face parameters, each a float tensor [n] (or [n, 3] for colours). Geometry in image units."""
    g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator or 0))
    p: dict[str, torch.Tensor] = {}
    hsv_h, hsv_s, hsv_v = torch.rand(n, generator=g), _uniform(g, n, 0.15, 0.55), _uniform(g, n, 0.55, 0.95)
    p["bg_top"] = _hsv_to_rgb(hsv_h, hsv_s, hsv_v)
    p["bg_bottom"] = _hsv_to_rgb((hsv_h + _uniform(g, n, -0.08, 0.08)) % 1, hsv_s, hsv_v * _uniform(g, n, 0.6, 1.0))
    p["cx"], p["cy"] = _uniform(g, n, 0.44, 0.56), _uniform(g, n, 0.47, 0.56)
    p["rx"], p["ry"] = _uniform(g, n, 0.21, 0.29), _uniform(g, n, 0.27, 0.34)
    p["squareness"] = _uniform(g, n, 2.0, 3.6)  # superellipse exponent: 2 = ellipse, larger = boxier
    tone = _uniform(g, n, 0, len(SKIN_TONES) - 1)
    lo = tone.floor().long().clamp(max=len(SKIN_TONES) - 2)
    ramp = torch.tensor(SKIN_TONES)
    p["skin"] = torch.lerp(ramp[lo], ramp[lo + 1], (tone - lo).unsqueeze(1))
    p["shirt"] = _hsv_to_rgb(torch.rand(n, generator=g), _uniform(g, n, 0.3, 0.8), _uniform(g, n, 0.3, 0.9))
    p["hair"] = _pick(g, n, HAIR_COLORS, 0.06)
    p["hair_style"] = torch.randint(len(HAIR_STYLES), (n,), generator=g).float()
    p["hairline"] = _uniform(g, n, 0.25, 0.45)  # fraction of head height covered by hair from the top
    p["eye_dx"], p["eye_y"] = _uniform(g, n, 0.32, 0.45), _uniform(g, n, -0.12, 0.05)  # relative to rx / ry
    p["eye_r"] = _uniform(g, n, 0.035, 0.055)
    p["eye_open"] = _uniform(g, n, 0.55, 1.0)  # vertical squash of the eye
    p["iris"] = _pick(g, n, IRIS_COLORS, 0.05)
    p["brow_tilt"] = _uniform(g, n, -0.35, 0.35)  # radians; positive = inner ends lower (angry)
    p["brow_w"] = _uniform(g, n, 0.010, 0.020)
    p["mouth_y"], p["mouth_w"] = _uniform(g, n, 0.42, 0.62), _uniform(g, n, 0.22, 0.45)  # relative to ry / rx
    p["smile"] = _uniform(g, n, -0.35, 0.8)  # corner lift / half width; negative = frown
    p["mouth_open"] = (torch.rand(n, generator=g) < 0.3).float()
    p["nose_len"] = _uniform(g, n, 0.03, 0.07)
    p["blush"] = (torch.rand(n, generator=g) < 0.4).float()
    p["glasses"] = (torch.rand(n, generator=g) < 0.2).float()
    return p


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[n] hue/saturation/value in [0, 1] -> [n, 3] RGB."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * h.unsqueeze(1)) % 6
    return v.unsqueeze(1) - v.unsqueeze(1) * s.unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Signed distance functions; arguments broadcast as [B, 1, 1] params against [1, H, W] pixel coordinates.


def _sdf_superellipse(x, y, cx, cy, rx, ry, p):
    """Approximate SDF of |dx/rx|^p + |dy/ry|^p <= 1 (radial level set scaled by the smaller radius)."""
    r = ((x - cx).abs() / rx) ** p + ((y - cy).abs() / ry) ** p
    return (r.clamp(min=1e-12) ** (1 / p) - 1) * torch.minimum(rx, ry)


def _sdf_ellipse(x, y, cx, cy, rx, ry):
    return _sdf_superellipse(x, y, cx, cy, rx, ry, torch.full_like(rx, 2.0))


def _sdf_segment(x, y, ax, ay, bx, by, half_width):
    """Capsule around the segment a-b."""
    px, py, dx, dy = x - ax, y - ay, bx - ax, by - ay
    h = ((px * dx + py * dy) / (dx * dx + dy * dy).clamp(min=1e-12)).clamp(0, 1)
    return torch.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2) - half_width


def _sdf_parabola_arc(x, y, mx, my, half_w, lift, half_width):
    """Thick arc y = my - lift * half_w * ((x - mx) / half_w)^2 for |x - mx| <= half_w (lift > 0: corners up)."""
    u = (x - mx).clamp(-half_w, half_w)
    curve_y = my - lift * half_w * (u / half_w) ** 2
    slope = -2 * lift * u / half_w
    vertical = (y - curve_y).abs() / torch.sqrt(1 + slope**2)
    outside = ((x - mx).abs() - half_w).clamp(min=0)
    return torch.sqrt(vertical**2 + outside**2) - half_width


def _coverage(sdf: torch.Tensor, pixel: float) -> torch.Tensor:
    return (0.5 - sdf / pixel).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def render_params(params: dict[str, torch.Tensor], size: int = 64,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Render faces from :func:`sample_face_params` output: [B, 3, size, size] in [-1, 1]."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    p = {k: v.to(device=device, dtype=torch.float32) for k, v in params.items()}
    s = {k: v.view(-1, 1, 1) for k, v in p.items() if v.ndim == 1}  # scalars as [B, 1, 1]
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    px = 1.0 / size

    img = torch.lerp(p["bg_top"].view(-1, 3, 1, 1), p["bg_bottom"].view(-1, 3, 1, 1), y.unsqueeze(0))  # [B, 3, H, W]

    def paint(sdf: torch.Tensor, color: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        nonlocal img
        alpha = _coverage(sdf, px)
        if mask is not None:
            alpha = alpha * mask
        img = torch.lerp(img, color.view(-1, 3, 1, 1).expand_as(img), alpha.unsqueeze(1))

    cx, cy, rx, ry = s["cx"], s["cy"], s["rx"], s["ry"]
    style = s["hair_style"]
    long_hair = (style == HAIR_STYLES.index("long")).float()
    has_hair = (style != HAIR_STYLES.index("bald")).float()
    # shoulders and neck
    paint(_sdf_ellipse(x, y, cx, cy + ry + 0.26, rx * 1.9, torch.full_like(rx, 0.22)), p["shirt"])
    neck = _sdf_superellipse(x, y, cx, cy + ry * 0.95, rx * 0.42, ry * 0.45, torch.full_like(rx, 4.0))
    paint(neck, p["skin"] * 0.88)
    # long hair behind the head
    paint(_sdf_superellipse(x, y, cx, cy + ry * 0.15, rx * 1.24, ry * 1.08, torch.full_like(rx, 3.0)), p["hair"],
          long_hair)
    # ears, then the head
    for side in (-1.0, 1.0):
        paint(_sdf_ellipse(x, y, cx + side * rx * 0.98, cy + ry * 0.02, rx * 0.16, ry * 0.2), p["skin"] * 0.93)
    paint(_sdf_superellipse(x, y, cx, cy, rx, ry, s["squareness"]), p["skin"])
    # hair on top: a slightly larger head shape above the hairline, with a fringe dip for the fringe style
    hair_cap = _sdf_superellipse(x, y, cx, cy - ry * 0.04, rx * 1.06, ry * 1.05, s["squareness"])
    fringe = (style == HAIR_STYLES.index("fringe")).float()
    line_y = cy - ry + 2 * ry * s["hairline"] + fringe * ry * 0.12 * torch.cos((x - cx) / rx * 7.0)
    paint(torch.maximum(hair_cap, y - line_y), p["hair"], has_hair)
    # blush, eyes, brows, nose, mouth
    eye_y = cy + s["eye_y"] * ry
    for side in (-1.0, 1.0):
        ex = cx + side * s["eye_dx"] * rx
        paint(_sdf_ellipse(x, y, ex, eye_y + ry * 0.38, s["eye_r"] * 1.3, s["eye_r"] * 0.8),
              torch.tensor([0.95, 0.45, 0.45], device=device).expand(len(cx.view(-1)), 3), s["blush"] * 0.45)
        paint(_sdf_ellipse(x, y, ex, eye_y, s["eye_r"] * 1.25, s["eye_r"] * s["eye_open"]),
              torch.full_like(p["skin"], 0.97))
        paint(_sdf_ellipse(x, y, ex, eye_y, s["eye_r"] * 0.65, s["eye_r"] * 0.65 * s["eye_open"]), p["iris"])
        paint(_sdf_ellipse(x, y, ex, eye_y, s["eye_r"] * 0.3, s["eye_r"] * 0.3 * s["eye_open"]),
              torch.full_like(p["skin"], 0.03))
        tilt = side * s["brow_tilt"]
        half = s["eye_r"] * 1.3
        by = eye_y - s["eye_r"] * 2.2
        paint(_sdf_segment(x, y, ex - half * torch.cos(tilt), by + half * torch.sin(tilt),
                           ex + half * torch.cos(tilt), by - half * torch.sin(tilt), s["brow_w"]), p["hair"] * 0.8)
        paint(_sdf_ellipse(x, y, ex, eye_y, s["eye_r"] * 1.9, s["eye_r"] * 1.6).abs() - 0.006,
              torch.full_like(p["skin"], 0.1), s["glasses"])
    paint(_sdf_segment(x, y, cx, eye_y + 0.03, cx + 0.012, eye_y + 0.03 + s["nose_len"], 0.007), p["skin"] * 0.72)
    my, mw = cy + s["mouth_y"] * ry, s["mouth_w"] * rx
    paint(_sdf_ellipse(x, y, cx, my, mw * 0.8, mw * 0.45), torch.full_like(p["skin"], 0.35) * torch.tensor(
        [1.0, 0.25, 0.3], device=device), s["mouth_open"])
    paint(_sdf_parabola_arc(x, y, cx, my, mw, s["smile"], torch.full_like(cx, 0.009)),
          torch.full_like(p["skin"], 0.55) * torch.tensor([1.0, 0.2, 0.25], device=device), 1 - s["mouth_open"])
    return (img * 2 - 1).clamp(-1, 1).contiguous()


def render_faces(n: int, seed: int = 0, size: int = 64, device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` faces drawn with ``seed``: [n, 3, size, size] in [-1, 1]. Same seed, same faces on every device."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    return render_params(sample_face_params(n, torch.Generator().manual_seed(int(seed))), size, device)


def heldout_faces(n: int, size: int = 64, device: torch.device | str | None = None,
                  split: str = "test") -> torch.Tensor:
    """The first ``n`` faces of a held-out split (default 'test'), used as ground truth by dps and the metrics."""
    return render_faces(n, split_seed(split), size, device)


def train_batch(step: int, batch_size: int, size: int = 64, device: torch.device | str | None = None) -> torch.Tensor:
    """Training batch ``step``: fresh faces from the train split's seed stream (seed = train base + step)."""
    return render_faces(batch_size, split_seed("train", step % _SPLIT_STRIDE), size, device)


__all__ = ["HAIR_STYLES", "heldout_faces", "render_faces", "render_params", "sample_face_params", "split_seed",
           "train_batch"]
