"""Views for ambiguous images (Geng et al. 2024, "Visual Anagrams", Sec. 3.2-3.3).

A view maps the canonical image to what one prompt sees, ``view(x)``, and ``inverse_view`` maps back. Every view
here is orthogonal (a pixel permutation, possibly with a sign), so it keeps i.i.d. Gaussian noise i.i.d.
Gaussian, the condition under which Visual Anagrams' averaging is valid (Sec. 3.3). All views act on tensors
[..., H, W] of any dtype and never round-trip through PIL (which clamps to [0, 1] and quantizes to 8 bits,
invalid for x_t, eps and x0_hat).

``inner_rotate`` rotates the disc of radius 3/8 of the side (r = 24 at 64 px, 96 at 256 px) centred on the true
image centre ((S - 1) / 2, (S - 1) / 2) by nearest-neighbour lookup, so multiples of 90 degrees are exact
permutations; other angles are many-to-one (the "1-to-n" case of SyncTweedies) and only approximately invertible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.gpu import host_to_device
from common.sync import INNER_RADIUS_FRACTION, circle_mask, inverse_permutation, permute_pixels

__all__ = ["INNER_RADIUS_FRACTION", "VIEW_NAMES", "Flip", "InnerRotate", "Negate", "Rotate", "View", "ViewMapping",
           "circle_mask", "get_view", "inner_rotation_index", "rotate_image"]


class View:
    """Identity; the base class. ``frame(x, p)`` draws the transition at progress p in [0, 1] for animations."""

    name = "identity"
    is_permutation = True  # view(x) permutes (and possibly negates) the entries of x

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def frame(self, x: torch.Tensor, progress: float) -> torch.Tensor:
        """Cross-fade from x to view(x) (rotations override this with a true rotation)."""
        return (1 - progress) * x + progress * self.view(x)


class Rotate(View):
    """Rotation by k * 90 degrees clockwise (as displayed: y points down). Exact: ``torch.rot90``."""

    def __init__(self, quarter_turns_cw: int, name: str):
        self.k = quarter_turns_cw % 4
        self.name = name

    def view(self, x: torch.Tensor) -> torch.Tensor:
        # TODO: rotate x [..., H, W] by self.k quarter turns clockwise (exactly, no interpolation)
        # BEGIN SOLUTION rotate-view
        return torch.rot90(x, k=-self.k, dims=(-2, -1))  # torch's positive k turns counter-clockwise
        # END SOLUTION

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        # TODO: undo view(): rotate x [..., H, W] by self.k quarter turns counter-clockwise
        # BEGIN SOLUTION rotate-inverse-view
        return torch.rot90(x, k=self.k, dims=(-2, -1))
        # END SOLUTION

    def frame(self, x: torch.Tensor, progress: float) -> torch.Tensor:
        return rotate_image(x, 90.0 * self.k * progress)


class Flip(View):
    """Upside-down flip (Visual Anagrams' ``flip``)."""

    name = "flip"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=(-2,))

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=(-2,))


class Negate(View):
    """x -> -x (colour inversion of a [-1, 1] image)."""

    name = "negate"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return -x

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def inner_rotation_index(size: int, angle_deg: float, radius: float | None = None) -> torch.Tensor:
    """Flat source index [S*S] such that ``out.flatten()[q] = x.flatten()[index[q]]`` rotates the inner disc
    clockwise by ``angle_deg`` (nearest neighbour) and leaves the outside unchanged."""
    # TODO: source index [S*S]: inside circle_mask, the nearest pixel of the inverse rotation; else itself
    # BEGIN SOLUTION inner-rotation-index
    mask = circle_mask(size, radius)
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    theta = math.radians(angle_deg)
    cos, sin = round(math.cos(theta), 12), round(math.sin(theta), 12)  # exact 0 / +-1 at multiples of 90
    dx, dy = xs - c, ys - c
    # destination q = R(p) with R a clockwise rotation (y down); the source of q is R^-1(q)
    src_x = (c + dx * cos + dy * sin).round().clamp(0, size - 1).long()
    src_y = (c - dx * sin + dy * cos).round().clamp(0, size - 1).long()
    identity = torch.arange(size * size).view(size, size)
    return torch.where(mask, src_y * size + src_x, identity).flatten()
    # END SOLUTION


class InnerRotate(View):
    """Rotate the inner disc clockwise by ``angle`` degrees; the border stays put."""

    name = "inner_rotate"

    def __init__(self, angle: float = 90.0):
        self.angle = float(angle)
        self.is_permutation = self.angle % 90 == 0
        self._cache: dict[tuple[int, float, bool, torch.device], torch.Tensor] = {}

    def _index(self, size: int, angle: float, device: torch.device, invert: bool = False) -> torch.Tensor:
        """Source index [S*S] on ``device``, built and copied there once (views run at every sampling step)."""
        key = (size, angle, invert, device)
        if key not in self._cache:
            index = inner_rotation_index(size, angle)
            self._cache[key] = host_to_device(inverse_permutation(index) if invert else index, device)
        return self._cache[key]

    def _apply(self, x: torch.Tensor, angle: float, invert: bool = False) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h != w:
            raise ValueError(f"inner_rotate needs square images, got {h}x{w}")
        return permute_pixels(x, self._index(h, angle, x.device, invert))

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.angle)

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_permutation:  # exact inverse permutation
            return self._apply(x, self.angle, invert=True)
        return self._apply(x, -self.angle)

    def frame(self, x: torch.Tensor, progress: float) -> torch.Tensor:
        mask = circle_mask(x.shape[-1], device=x.device).to(x.dtype)
        return x * (1 - mask) + rotate_image(x, self.angle * progress) * mask


def rotate_image(x: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Bilinear clockwise rotation of [B, C, H, W] about the image centre, for animations only (not a view)."""
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid maps output coords to input coords: the source of an output pixel is R^-1 (out)
    mat = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=torch.float32, device=x.device)
    squeeze = x.ndim == 3
    x4 = x.unsqueeze(0) if squeeze else x
    grid = F.affine_grid(mat.expand(x4.shape[0], 2, 3), list(x4.shape), align_corners=False)
    out = F.grid_sample(x4.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(x.dtype)
    return out[0] if squeeze else out


VIEW_NAMES = ("identity", "rotate_cw", "rotate_ccw", "rotate_180", "flip", "negate", "inner_rotate")


def get_view(name: str, rotate_angle: float = 90.0) -> View:
    """View by name (``rotate_angle`` is used by inner_rotate only); ValueError listing the names otherwise."""
    factories = {
        "identity": View,
        "rotate_cw": lambda: Rotate(1, "rotate_cw"),
        "rotate_ccw": lambda: Rotate(3, "rotate_ccw"),
        "rotate_180": lambda: Rotate(2, "rotate_180"),
        "flip": Flip,
        "negate": Negate,
        "inner_rotate": lambda: InnerRotate(rotate_angle),
    }
    if name not in factories:
        raise ValueError(f"unknown view {name!r}; choose from {', '.join(VIEW_NAMES)}")
    return factories[name]()


class ViewMapping:
    """Canonical image z [1, C, H, W] <-> instances x [N, C, H, W], x^i = view_i(z); g = mean_i view_i^-1(x^i)."""

    def __init__(self, views: list[View]):
        if not views:
            raise ValueError("need at least one view")
        self.views = views

    def forward_mapping(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([v.view(z) for v in self.views])

    def inverse_mapping(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.views):
            raise ValueError(f"expected {len(self.views)} instances, got {x.shape[0]}")
        return torch.stack([v.inverse_view(x[i : i + 1]) for i, v in enumerate(self.views)]).mean(0)
