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

from common.sync import WindowLayout, window_starts

__all__ = ["WindowMapping", "window_starts"]


class WindowMapping(WindowLayout):
    """Canonical [1, C, H, W] <-> N windows [N, C, window_h, window_w] (row-major order of window starts).

    The layout (``views``, flat ``index`` [N, wh*ww], cover ``count`` [H*W], ``scaled``) is
    ``common.sync.WindowLayout``; f and g below are the exercise (``common.sync.WindowGrid`` is the reference).
    """

    def forward_mapping(self, z: torch.Tensor) -> torch.Tensor:
        """f: crop every window, [1, C, H, W] -> [N, C, wh, ww]."""
        assert z.shape[0] == 1 and z.shape[-2:] == (self.height, self.width), z.shape
        index = self.tables(z.device)[0]  # [N, wh*ww] flat positions of each window's pixels in the H*W canvas
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
        index, count = self.tables(x.device)  # on x's device, copied there once (not at every step)
        count = count.to(x.dtype)  # [H*W] windows covering each canonical pixel; index: [N, wh*ww] into H*W
        # TODO: z [1, C, H, W]: add every window into the canvas at index, divide by count (>= 1)
        # BEGIN SOLUTION wide-inverse-mapping
        c = x.shape[1]
        values = x.permute(1, 0, 2, 3).reshape(c, -1)  # [C, N*wh*ww], same order as index.flatten()
        total = torch.zeros(c, self.height * self.width, device=x.device, dtype=x.dtype)
        total = total.index_add_(1, index.flatten(), values)  # [C, H*W] sum over windows
        z = (total / count.clamp(min=1)).view(1, c, self.height, self.width)
        # END SOLUTION
        return z.to(dtype)
