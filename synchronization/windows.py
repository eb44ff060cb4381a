"""Sliding windows over a wide canonical latent: crops (f) and paste-and-average (g).

MultiDiffusion (Bar-Tal et al. 2023, Eq. 3-5) and SyncTweedies' wide-image app: a canonical latent [1, C, H, W]
is covered by windows of the model's sample size (64 latent px for SD 2 base, 16 for toy-sd) every ``stride``
latent px. Along a side of length L there are (L - window) / stride + 1 windows, so L must be reachable:
(L - window) % stride == 0 (MultiDiffusion silently leaves the rest uncovered; we refuse). With ``circular``
(360 degree panoramas, diffusers' ``circular_padding``) windows start every ``stride`` px across the full width
and wrap around the right edge, so W % stride == 0 is needed instead.

Both maps use one flat index table [N, h*w] into the H*W canonical pixels, so crops, wrap-around and averaging
are one gather and one scatter-add.
"""

from __future__ import annotations

import torch


def window_starts(length: int, window: int, stride: int, circular: bool = False, what: str = "width") -> list[int]:
    """Start offsets along one side; ValueError (one line) when the side is not reachable."""
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


class WindowMapping:
    """Canonical [1, C, H, W] <-> N windows [N, C, window_h, window_w] (row-major order of window starts)."""

    def __init__(self, height: int, width: int, window: int | tuple[int, int], stride: int, circular: bool = False):
        self.window = (window, window) if isinstance(window, int) else tuple(window)
        wh, ww = self.window
        self.height, self.width, self.stride, self.circular = height, width, stride, circular
        self.rows = window_starts(height, wh, stride, False, "height")
        self.cols = window_starts(width, ww, stride, circular, "width")
        self.views = [(h0, w0) for h0 in self.rows for w0 in self.cols]  # (top, left) of each window
        ys = torch.tensor(self.rows).view(-1, 1) + torch.arange(wh)  # [R, wh]
        xs = (torch.tensor(self.cols).view(-1, 1) + torch.arange(ww)) % width  # [K, ww], wraps when circular
        flat = ys.view(-1, 1, wh, 1) * width + xs.view(1, -1, 1, ww)  # [R, K, wh, ww]
        self.index = flat.reshape(len(self.views), wh * ww)  # [N, wh*ww] into the H*W canonical pixels
        self.count = torch.bincount(self.index.flatten(), minlength=height * width).float()  # windows per pixel

    def __len__(self) -> int:
        return len(self.views)

    def scaled(self, factor: int) -> WindowMapping:
        """The same windows on a grid ``factor`` times finer (latent windows -> decoded RGB windows)."""
        return WindowMapping(self.height * factor, self.width * factor,
                             (self.window[0] * factor, self.window[1] * factor), self.stride * factor, self.circular)

    def forward_mapping(self, z: torch.Tensor) -> torch.Tensor:
        """f: crop every window, [1, C, H, W] -> [N, C, wh, ww]."""
        assert z.shape[0] == 1 and z.shape[-2:] == (self.height, self.width), z.shape
        index = self.index.to(z.device)  # [N, wh*ww] flat positions of each window's pixels in the H*W canvas
        # TODO: gather every window's pixels from z with index; return [N, C, wh, ww]
        # BEGIN SOLUTION wide-forward-mapping
        crops = z[0].flatten(1)[:, index]  # [C, N, wh*ww]
        return crops.permute(1, 0, 2).reshape(len(self.views), z.shape[1], *self.window)
        # END SOLUTION

    def inverse_mapping(self, x: torch.Tensor) -> torch.Tensor:
        """g: paste every window back and average where windows overlap, [N, C, wh, ww] -> [1, C, H, W]."""
        assert x.shape[0] == len(self.views) and tuple(x.shape[-2:]) == self.window, x.shape
        dtype = x.dtype
        x = x if x.dtype == torch.float64 else x.float()  # accumulate fp16 sums in fp32
        index = self.index.to(x.device)  # [N, wh*ww] flat positions of each window's pixels in the H*W canvas
        count = self.count.to(x.device, x.dtype)  # [H*W] windows covering each canonical pixel
        # TODO: z [1, C, H, W]: add every window into the canvas at index, divide by count (>= 1)
        # BEGIN SOLUTION wide-inverse-mapping
        c = x.shape[1]
        values = x.permute(1, 0, 2, 3).reshape(c, -1)  # [C, N*wh*ww], same order as index.flatten()
        total = torch.zeros(c, self.height * self.width, device=x.device, dtype=x.dtype)
        total = total.index_add_(1, index.flatten(), values)  # [C, H*W] sum over windows
        z = (total / count.clamp(min=1)).view(1, c, self.height, self.width)
        # END SOLUTION
        return z.to(dtype)
