"""Measurement operators A for inverse problems y = A(x) + n (Chung et al. 2023, DPS, Sec. 4 and App. C).

Each operator is a small class whose ``forward(x)`` maps images [B, 3, H, W] in [-1, 1] to measurements,
differentiably (DPS backpropagates through it). ``naive(y)`` is the obvious reconstruction from the
measurement alone (the masked image, bicubic upsampling, the blurry image), used as a baseline and for panels.
Defaults follow the DPS configs: random inpainting mask with 30-70% of the pixels missing, super-resolution x4,
Gaussian blur (kernel 61, sigma 3), motion blur (kernel 61, intensity 0.5, ``dps.motion``); measurement noise sigma
0.05.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dps.motion import motion_kernel
from dps.resize import resize

TASKS = ("inpainting", "super_resolution", "gaussian_blur", "motion_blur")
DEFAULT_SCALES = {"inpainting": 0.5, "super_resolution": 0.3, "gaussian_blur": 0.3, "motion_blur": 0.3}


class Operator:
    """y = A(x). Subclasses implement ``forward``; ``naive`` defaults to the identity."""

    name = "operator"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def naive(self, y: torch.Tensor) -> torch.Tensor:
        """A reconstruction from y alone, at the image size."""
        return y

    def subset(self, index: slice) -> Operator:
        """The operator for images ``index`` of the batch (operators with per-image state override this)."""
        return self

    def to(self, device: torch.device | str) -> Operator:
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, key, value.to(device))
        return self


# ---------------------------------------------------------------------------------------------------------------
# Inpainting


def random_mask(n: int, size: int, prob_range: tuple[float, float] = (0.3, 0.7),
                generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, 1, size, size] masks (1 = observed): a fraction p ~ U(prob_range) of the pixels is missing.

    Exactly ``int(p * size^2)`` pixels are dropped per image, the same on all channels (DPS ``mask_generator``).
    """
    lo, hi = prob_range
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"mask probability range must satisfy 0 <= lo <= hi <= 1, got {prob_range}")
    masks = torch.ones(n, size * size)
    for i in range(n):
        p = lo + (hi - lo) * float(torch.rand((), generator=generator))
        masks[i, torch.randperm(size * size, generator=generator)[: int(p * size * size)]] = 0
    return masks.view(n, 1, size, size)


def box_mask(n: int, size: int, box_range: tuple[int, int] | None = None, margin: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, 1, size, size] masks with one missing h x w box each (h, w ~ randint(box_range)), ``margin`` px in.

    Defaults scale DPS's 256-px setting (box 128, margin 16) to ``size``: box size/2, margin size/16.
    """
    lo, hi = box_range or (size // 2, size // 2 + 1)
    margin = size // 16 if margin is None else margin
    if not 1 <= lo < hi or hi - 1 > size - 2 * margin:
        raise ValueError(f"box size range {lo}..{hi - 1} does not fit a {size}-px image with margin {margin}")
    masks = torch.ones(n, 1, size, size)
    for i in range(n):
        h, w = (int(v) for v in torch.randint(lo, hi, (2,), generator=generator))
        top = margin + int(torch.randint(size - 2 * margin - h + 1, (), generator=generator))
        left = margin + int(torch.randint(size - 2 * margin - w + 1, (), generator=generator))
        masks[i, :, top : top + h, left : left + w] = 0
    return masks


class Inpainting(Operator):
    """y = m * x with a binary mask m [B or 1, 1, H, W] (1 = observed pixel)."""

    name = "inpainting"

    def __init__(self, mask: torch.Tensor):
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be [B, 1, H, W], got {tuple(mask.shape)}")
        self.mask = mask.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    def subset(self, index: slice) -> Inpainting:
        return Inpainting(self.mask[index]) if self.mask.shape[0] > 1 else self


# ---------------------------------------------------------------------------------------------------------------
# Super-resolution


class SuperResolution(Operator):
    """y = downsample_s(x): DPS's Resizer (antialiased cubic, mirrored borders; ``dps.resize``) or s x s means."""

    name = "super_resolution"

    def __init__(self, scale: int = 4, mode: str = "bicubic"):
        if mode not in ("bicubic", "avgpool"):
            raise ValueError(f"unknown downsampling mode {mode!r}; choose bicubic or avgpool")
        if scale < 1:
            raise ValueError(f"scale factor must be >= 1, got {scale}")
        self.scale, self.mode = int(scale), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the scale factor {self.scale}")
        if self.mode == "avgpool":
            return F.avg_pool2d(x, self.scale)
        return resize(x, (x.shape[-2] // self.scale, x.shape[-1] // self.scale))

    def naive(self, y: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling back to the image size (the classic baseline)."""
        size = (y.shape[-2] * self.scale, y.shape[-1] * self.scale)
        return F.interpolate(y, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


# ---------------------------------------------------------------------------------------------------------------
# Blur


def gaussian_kernel(kernel_size: int = 61, sigma: float = 3.0) -> torch.Tensor:
    """[k, k] normalised Gaussian kernel (sums to 1)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


class Blur(Operator):
    """y = k * x: depthwise convolution with a [k, k] kernel and reflection padding (DPS ``Blurkernel``)."""

    name = "blur"

    def __init__(self, kernel: torch.Tensor, name: str = "blur"):
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ValueError(f"blur kernel must be square with odd size, got {tuple(kernel.shape)}")
        self.kernel, self.name = kernel.float(), name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel.shape[0] // 2
        mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
        weight = self.kernel.to(x.device, x.dtype).expand(x.shape[1], 1, *self.kernel.shape)
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), weight, groups=x.shape[1])


def gaussian_blur(kernel_size: int = 61, sigma: float = 3.0) -> Blur:
    return Blur(gaussian_kernel(kernel_size, sigma), "gaussian_blur")


def motion_blur(kernel_size: int = 61, intensity: float = 0.5, seed: int = 0) -> Blur:
    return Blur(motion_kernel(kernel_size, intensity, np.random.default_rng(seed)), "motion_blur")


# ---------------------------------------------------------------------------------------------------------------


def add_measurement_noise(y: torch.Tensor, sigma: float = 0.05,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """y + sigma * n, n ~ N(0, I), on the [-1, 1] scale (DPS's Gaussian noise; sigma 0.05 in all its configs)."""
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    noise = torch.randn(y.shape, generator=generator, dtype=torch.float32).to(y.device)
    return y + sigma * noise


def build_operator(task: str, n: int, size: int, seed: int = 0, mask_type: str = "random", sr_scale: int = 4,
                   sr_mode: str = "bicubic", kernel_size: int = 61, blur_sigma: float = 3.0,
                   motion_intensity: float = 0.5) -> Operator:
    """The operator of ``task`` for ``n`` images of ``size`` px (inpainting masks drawn with ``seed``)."""
    if task == "inpainting":
        g = torch.Generator().manual_seed(seed)
        if mask_type == "random":
            return Inpainting(random_mask(n, size, generator=g))
        if mask_type == "box":
            return Inpainting(box_mask(n, size, generator=g))
        raise ValueError(f"unknown mask type {mask_type!r}; choose random or box")
    if task == "super_resolution":
        return SuperResolution(sr_scale, sr_mode)
    if task == "gaussian_blur":
        return gaussian_blur(kernel_size, blur_sigma)
    if task == "motion_blur":
        return motion_blur(kernel_size, motion_intensity, seed)
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
