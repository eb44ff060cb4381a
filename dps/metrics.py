"""Image quality metrics on [-1, 1] images, computed on the [0, 1] scale (data range 1) with torchmetrics.

PSNR = 10 log10(1 / MSE) per image. SSIM (Wang et al. 2004, Eq. 13): Gaussian window 11 x 11 with sigma 1.5,
K1 = 0.01, K2 = 0.03, per channel, averaged over pixels and channels. torchmetrics reflects the image at the border
and averages the SSIM map over every pixel, where Wang's MATLAB code keeps only the pixels whose window fits (0.885
against 0.884 on 32-px noisy test images; 1 for equal images either way).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().double() + 1) / 2).clamp(0, 1)


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"metrics need two [B, C, H, W] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB: [B] float64. Identical images give +inf."""
    a, b = _unit(x), _unit(ref)
    _check(a, b)
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: torch.Tensor, ref: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean SSIM: [B] float64. Images [B, C, H, W] in [-1, 1] with H, W >= window_size."""
    a, b = _unit(x), _unit(ref)
    _check(a, b)
    if min(a.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(a.shape[-2:])} are smaller than the SSIM window {window_size}")
    return structural_similarity_index_measure(a, b, gaussian_kernel=True, sigma=sigma, kernel_size=window_size,
                                               data_range=1.0, k1=0.01, k2=0.03, reduction="none")
