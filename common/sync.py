"""Reference math of diffusion synchronization (SyncTweedies: Kim et al. 2024, "SyncTweedies: A General Generative
Framework Based on Synchronized Diffusions", Sec. 3-4; Tab. 1 lists the cases).

A canonical variable z [1, C, H, W] is seen by N instances x^i = f_i(z) that a pretrained model denoises; the
unprojection g maps instance values back and averages where instances overlap (the least-squares solution,
MultiDiffusion, Bar-Tal et al. 2023, Eq. 3-5). Synchronizing a variable v means replacing it by f(g(v)).

- Wide images: f crops windows of a wide latent (optionally wrapping around, 360-degree panoramas), g pastes them
  back and divides by the number of windows covering each pixel. :class:`WindowGrid` is the reference mapping.
- Ambiguous images (Geng et al. 2024, "Visual Anagrams", Sec. 3): views are pixel permutations; exact rotations by
  quarter turns and the nearest-neighbour rotation of the inner disc as a flat source index.
- One DDIM step (Song et al. 2021, Eq. 12, eta = 0) of all instances that synchronizes nothing (case 0), eps_hat
  (case 1), the Tweedie estimate x0_hat (case 2, SyncTweedies) or x_prev (case 3); equal to
  ``common.tweedie.x0_from_eps`` / ``common.ddim.ddim_step`` (tests), with the forward marginal of
  ``common.tweedie.add_noise``. The loop :func:`sync_sample_loop` runs any such step over a grid.

Code that is not the ``synchronization`` homework (benchmarks, evaluation, tests) uses these functions; the
homework's exercises are compared to them. Nothing here imports an assignment package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch

from common._broadcast import expand_as
from common.gpu import host_to_device
from common.tweedie import add_noise

SYNC_CASES = ("x0", "eps", "xt", "none")  # the variable averaged through the canonical space
INNER_RADIUS_FRACTION = 24 / 64  # inner disc radius / image side (r = 24 at 64 px, the skeleton's mask)
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # eps_fn(x_t [N, C, H, W], t) -> eps_hat [N, C (or 2C), H, W]


class Mapping(Protocol):
    def forward_mapping(self, z: torch.Tensor) -> torch.Tensor: ...  # f: canonical [1, ...] -> instances [N, ...]

    def inverse_mapping(self, x: torch.Tensor) -> torch.Tensor: ...  # g: instances [N, ...] -> canonical [1, ...]


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


# ---------------------------------------------------------------------------------------------------------------
# Wide images: window grid, f (crop) and g (paste and average)


def window_starts(length: int, window: int, stride: int, circular: bool = False, what: str = "width") -> list[int]:
    """Window offsets along one side: (L - window) / stride + 1 of them, or L / stride with wrap-around.

    MultiDiffusion leaves an unreachable remainder uncovered; we refuse it with a one-line ValueError instead.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got window {window}, stride {stride}")
    if circular:
        if length < window or length % stride:
            raise ValueError(f"circular {what} {length} must be >= the window {window} and a multiple of the "
                             f"stride {stride} (latent px)")
        return list(range(0, length, stride))
    if length < window or (length - window) % stride:
        near = window + max(0, round((length - window) / stride)) * stride
        raise ValueError(f"{what} {length} (latent px) is not reachable with window {window} and stride {stride}: "
                         f"need {what} = {window} + k * {stride}, e.g. {near}")
    return list(range(0, length - window + 1, stride))


def window_index(rows: list[int], cols: list[int], window: tuple[int, int], width: int) -> torch.Tensor:
    """Flat canvas positions of every window's pixels, [N, wh*ww], windows in row-major order of (row, col).

    Pixel (a, b) of the window at (top, left) is canvas pixel (top + a, (left + b) mod W): columns wrap around
    (only circular grids have windows that reach past the right edge).
    """
    wh, ww = window
    ys = torch.tensor(rows).view(-1, 1, 1, 1) + torch.arange(wh).view(1, 1, wh, 1)  # [R, 1, wh, 1]
    xs = (torch.tensor(cols).view(1, -1, 1, 1) + torch.arange(ww).view(1, 1, 1, ww)) % width  # [1, K, 1, ww]
    return (ys * width + xs).reshape(len(rows) * len(cols), wh * ww)  # [N, wh*ww]


def window_count(index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Number of windows covering each canvas pixel, float32 [H*W] (the denominator of g)."""
    return torch.bincount(index.reshape(-1), minlength=height * width).float()


def crop_windows(z: torch.Tensor, index: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """f: every window of the canvas, z [1, C, H, W] -> x [N, C, wh, ww] (a gather)."""
    c, n = z.shape[1], index.shape[0]
    picked = torch.index_select(z.reshape(c, -1), 1, index.to(z.device).reshape(-1))  # [C, N*wh*ww]
    return picked.reshape(c, n, *window).transpose(0, 1).contiguous()  # [N, C, wh, ww]


def paste_windows(x: torch.Tensor, index: torch.Tensor, count: torch.Tensor, height: int,
                  width: int) -> torch.Tensor:
    """g: z = sum_i g_i(x^i) / sum_i g_i(1), x [N, C, wh, ww] -> z [1, C, H, W] (MultiDiffusion Eq. 5).

    Sums accumulate in fp32 (fp64 stays fp64) and are cast back to x's dtype; uncovered pixels are 0.
    """
    dtype, x = x.dtype, _at_least_fp32(x)
    n, c = x.shape[:2]
    index = index.to(x.device).reshape(1, -1).expand(c, -1)  # [C, N*wh*ww]
    values = x.transpose(0, 1).reshape(c, -1)  # [C, N*wh*ww] in the order of index
    total = x.new_zeros(c, height * width).scatter_add_(1, index, values)  # [C, H*W]
    weight = count.to(x.device, x.dtype).clamp(min=1)  # [H*W]
    return (total / weight).reshape(1, c, height, width).to(dtype)


class WindowLayout:
    """The windows of a canvas [1, C, H, W]: starts, flat index [N, wh*ww] and cover count [H*W] (no maps)."""

    def __init__(self, height: int, width: int, window: int | tuple[int, int], stride: int, circular: bool = False):
        self.window = (window, window) if isinstance(window, int) else tuple(window)
        self.height, self.width, self.stride, self.circular = height, width, stride, circular
        self.rows = window_starts(height, self.window[0], stride, False, "height")
        self.cols = window_starts(width, self.window[1], stride, circular, "width")
        self.views = [(h0, w0) for h0 in self.rows for w0 in self.cols]  # (top, left) of each window
        self.index = window_index(self.rows, self.cols, self.window, width)  # [N, wh*ww] into H*W
        self.count = window_count(self.index, height, width)  # [H*W] windows per canvas pixel
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(index [N, wh*ww], count [H*W]) on ``device``, copied there once: f and g run at every step, and a
        copy from pageable CPU memory makes the CPU wait for the GPU each time."""
        device = torch.device(device)
        if device not in self._tables:
            self._tables[device] = (host_to_device(self.index, device), host_to_device(self.count, device))
        return self._tables[device]

    def __len__(self) -> int:
        return len(self.views)

    def scaled(self, factor: int) -> Any:
        """The same windows on a grid ``factor`` times finer (latent windows -> decoded RGB windows)."""
        return type(self)(self.height * factor, self.width * factor, (self.window[0] * factor,
                          self.window[1] * factor), self.stride * factor, self.circular)


class WindowGrid(WindowLayout):
    """Reference wide-image mapping: f = :func:`crop_windows`, g = :func:`paste_windows`."""

    def forward_mapping(self, z: torch.Tensor) -> torch.Tensor:
        assert z.shape[0] == 1 and tuple(z.shape[-2:]) == (self.height, self.width), z.shape
        return crop_windows(z, self.tables(z.device)[0], self.window)

    def inverse_mapping(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == len(self) and tuple(x.shape[-2:]) == self.window, x.shape
        return paste_windows(x, *self.tables(x.device), self.height, self.width)


# ---------------------------------------------------------------------------------------------------------------
# Ambiguous images: exact rotations and the inner-disc rotation (pixel permutations)


def rotate_quarter_turns(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate x [..., H, W] by k * 90 degrees clockwise as displayed (y down); exact. k < 0 turns back."""
    return torch.rot90(x, -k, dims=(-2, -1))  # torch.rot90 turns counter-clockwise for positive k


def circle_mask(size: int, radius: float | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool [S, S]: pixel centres strictly inside the circle centred on the true centre ((S-1)/2, (S-1)/2)."""
    radius = INNER_RADIUS_FRACTION * size if radius is None else radius
    c = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    return c.view(-1, 1) ** 2 + c.view(1, -1) ** 2 < radius**2


def _cos_sin(angle_deg: float) -> tuple[float, float]:
    """cos and sin rounded to 12 digits: exactly 0 / +-1 at multiples of 90 degrees (exact permutations) and
    cos = sin at 45 degrees, so the half-pixel ties of even sizes round the same way in every quadrant."""
    theta = math.radians(angle_deg)
    return round(math.cos(theta), 12), round(math.sin(theta), 12)


def inner_rotation_index(size: int, angle_deg: float, radius: float | None = None) -> torch.Tensor:
    """Source index [S*S] of the clockwise rotation of the inner disc by ``angle_deg`` (nearest neighbour):
    ``out.flatten(-2)[..., q] = x.flatten(-2)[..., index[q]]``; pixels outside :func:`circle_mask` stay put.

    Destination q = R(p), R clockwise (y down): the source of q is R^-1 q about the centre c = (S - 1) / 2,
    src = c + [[cos, sin], [-sin, cos]] (q - c) in (x, y), rounded (SyncTweedies' inner-rotation view).
    """
    cos, sin = _cos_sin(angle_deg)
    c = (size - 1) / 2
    offsets = torch.arange(size, dtype=torch.float64) - c
    dy, dx = offsets.view(-1, 1).expand(size, size), offsets.view(1, -1).expand(size, size)  # [S, S] each
    src_x = (c + cos * dx + sin * dy).round().clamp(0, size - 1).long()
    src_y = (c - sin * dx + cos * dy).round().clamp(0, size - 1).long()
    own = torch.arange(size * size).view(size, size)
    return torch.where(circle_mask(size, radius), src_y * size + src_x, own).reshape(-1)


def permute_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """out[..., q] = x[..., index[q]] over the flattened H*W pixels of x [..., H, W]."""
    return x.flatten(-2)[..., index.to(x.device)].reshape(x.shape)


def inverse_permutation(index: torch.Tensor) -> torch.Tensor:
    """The index that undoes :func:`permute_pixels` with a permutation ``index`` [S*S]."""
    inverse = torch.empty_like(index)
    inverse[index] = torch.arange(index.numel(), device=index.device)
    return inverse


# ---------------------------------------------------------------------------------------------------------------
# One synchronized DDIM step and the loop


def synchronize(mapping: Mapping, x: torch.Tensor) -> torch.Tensor:
    """f(g(x)): average the instances [N, ...] in canonical space and project back."""
    return mapping.forward_mapping(mapping.inverse_mapping(x))


def tweedie_x0(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """phi: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) (Tweedie; DDIM Eq. 12), in fp32.

    Only the first C = x_t.shape[1] channels of eps_hat are noise (DeepFloyd IF adds C variance channels).
    The value of ``common.tweedie.x0_from_eps`` (tested), written out because the kaist-a5 release stubs that one.
    """
    x = _at_least_fp32(x_t)  # [N, C, H, W]
    eps_hat = _at_least_fp32(eps_hat[:, : x_t.shape[1]])  # [N, C, H, W]
    a_t = expand_as(alpha_bar_t, x)  # fp32 (fp64 for fp64 x), 0-d or [N, 1, 1, 1]
    return ((x - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()).to(x_t.dtype)


def ddim_from_x0(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
                 alpha_bar_prev: float | torch.Tensor) -> torch.Tensor:
    """psi: x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev) eps (DDIM Eq. 12, eta = 0), with the
    noise implied by x_t and x0_hat, eps = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t). In fp32."""
    x, x0 = _at_least_fp32(x_t), _at_least_fp32(x0_hat)  # [N, C, H, W]
    a_t = expand_as(alpha_bar_t, x)
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()  # = common.tweedie.eps_from_x0 (stubbed in the kaist-a5 release)
    return add_noise(x0, eps, alpha_bar_prev).to(x_t.dtype)


def sync_ddim_step(mapping: Mapping, x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
                   alpha_bar_prev: float | torch.Tensor, sync: str = "x0") -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step of all instances x_t [N, C, H, W] given eps_hat; returns (x_prev, x0_hat), both [N, ...].

    ``sync`` (SyncTweedies Tab. 1, instance-space cases): ``eps`` averages eps_hat (case 1), ``x0`` the Tweedie
    estimate (case 2), ``xt`` the DDIM update x_prev (case 3), ``none`` nothing (independent instances).
    """
    if sync not in SYNC_CASES:
        raise ValueError(f"unknown sync variable {sync!r}; choose one of {', '.join(SYNC_CASES)}")
    eps_hat = eps_hat[:, : x_t.shape[1]]  # [N, C, H, W]
    if sync == "eps":
        eps_hat = synchronize(mapping, eps_hat)
    x0_hat = tweedie_x0(x_t, eps_hat, alpha_bar_t)
    if sync == "x0":
        x0_hat = synchronize(mapping, x0_hat)
    x_prev = ddim_from_x0(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)
    if sync == "xt":
        x_prev = synchronize(mapping, x_prev)
    return x_prev, x0_hat


def sync_denoise_step(mapping: Mapping, eps_fn: EpsFn, x_t: torch.Tensor, t: int, alpha_bar_t: torch.Tensor,
                      alpha_bar_prev: torch.Tensor, sync: str = "x0") -> tuple[torch.Tensor, torch.Tensor]:
    """Query eps_theta(x_t^i, t) for every instance, then :func:`sync_ddim_step`; returns (x_prev, x0_hat)."""
    return sync_ddim_step(mapping, x_t, eps_fn(x_t, t), alpha_bar_t, alpha_bar_prev, sync)


StepFn = Callable[[Mapping, EpsFn, torch.Tensor, int, torch.Tensor, torch.Tensor, str],
                  tuple[torch.Tensor, torch.Tensor]]
CheckFn = Callable[[torch.Tensor, int, int], None]  # check(x, step index i, t) raises on a bad state


def sync_sample_loop(mapping: Mapping, eps_fn: EpsFn, steps: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
                     x_T: torch.Tensor, sync: str = "x0", step: StepFn = sync_denoise_step,
                     check: CheckFn | None = None, progress: Any = None) -> torch.Tensor:
    """Run ``step`` over a grid of (t, alpha_bar_t, alpha_bar_prev) (``common.sampling.grid_alpha_bars``) from x_T.

    Returns the last state (instances [N, ...] for instance-space steps). ``check(x, i, t)`` runs after every
    step (e.g. a NaN check raising one clear error; one that reads its verdict late, like
    ``common.divergence.LazyChecks``, must be flushed by the caller after the loop, before any output is
    written); ``progress`` (a tqdm bar) is updated once per step. Pass ``steps`` with the alpha_bars already on
    x_T's device (``grid_alpha_bars(..., device=)``): CPU coefficients are copied to a GPU at every use.
    """
    x = x_T
    for i, (t, alpha_bar_t, alpha_bar_prev) in enumerate(steps):
        x, _ = step(mapping, eps_fn, x, t, alpha_bar_t, alpha_bar_prev, sync)
        if check is not None:
            check(x, i, t)
        if progress is not None:
            progress.update(1)
    return x
