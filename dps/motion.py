"""Random camera-shake kernels with the trajectory statistics of the generator DPS uses (LeviBorodenko/motionblur).

DPS (Chung et al. 2023, App. C) blurs with ``motionblur.Kernel(size=(61, 61), intensity=0.5)``. Its algorithm,
re-implemented here from its description (k = kernel size, I = intensity in [0, 1]):

1. Work on a canvas of 2k x 2k pixels (supersampling); D = 2k sqrt(2) is the canvas diagonal.
2. Path length L = 0.75 D (U(0, 1) + U(0, I^2)); steps of length Beta(1, 30) (1 - I + 0.1) D, each below L,
   until they add up to L.
3. Headings: a maximal angle A ~ U(0, I pi) and a sign-flip probability J ~ Beta(2, 20). The first step's
   heading is U(-A, A); each later heading has magnitude Triangular(0, I A, A + 0.1) and the sign of the previous
   one, flipped with probability J.
4. The path (cumulative sum of the steps) is centred on its centre of mass, rotated by U(0, pi) and put at the
   canvas centre; it is drawn as a line int(D / 150) px wide (at least 1), blurred by a Gaussian of standard
   deviation int(0.01 D) px, shrunk to k x k with a Lanczos filter and normalised to sum to 1.

The rejection loop of step 2 ("resample a step until it is below L") is drawn directly from the truncated
Beta(1, 30) by inverting its CDF 1 - (1 - u)^30, which has the same distribution and never stalls when L is tiny.
Randomness comes only from the generator passed in (NumPy, or a torch generator that seeds one).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

STEP_EPS = 0.1  # the generator's "eps": keeps steps nonzero at intensity 1 and the triangular law non-degenerate


def numpy_rng(generator: torch.Generator | np.random.Generator | None = None) -> np.random.Generator:
    """A NumPy generator: ``generator`` itself, or one seeded from a torch generator (None: torch's global RNG)."""
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))


def _step_lengths(length: float, step_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Steps Beta(1, 30) * step_scale, each conditioned to be below ``length``, until their sum reaches ``length``."""
    cap = 1.0 - (1.0 - min(1.0, length / step_scale)) ** 30  # CDF of Beta(1, 30) at the truncation point
    steps, total = [], 0.0
    while total < length or not steps:
        step = (1.0 - (1.0 - rng.uniform() * cap) ** (1 / 30)) * step_scale
        steps.append(step)
        total += step
    return np.asarray(steps)


def _headings(num: int, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """[num] step headings in radians: a jittery, mostly one-sided turn whose range grows with ``intensity``."""
    max_angle = rng.uniform(0, intensity * math.pi)
    flip_prob = rng.beta(2, 20)
    first = rng.uniform(-max_angle, max_angle)
    magnitudes = rng.triangular(0, intensity * max_angle, max_angle + STEP_EPS, size=num - 1)
    flips = np.cumsum(rng.uniform(size=num - 1) < flip_prob)  # sign changes so far
    return np.concatenate([[first], magnitudes * np.sign(first) * (-1.0) ** flips])


def motion_path(kernel_size: int, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """[N] complex points (x + iy) of the trajectory on the 2k x 2k canvas, centre of mass at the canvas centre."""
    diagonal = 2 * kernel_size * math.sqrt(2)
    length = 0.75 * diagonal * (rng.uniform() + rng.uniform(0, intensity**2))
    steps = _step_lengths(length, (1 - intensity + STEP_EPS) * diagonal, rng)
    path = np.cumsum(steps * np.exp(1j * _headings(len(steps), intensity, rng)))
    path = (path - path.mean()) * np.exp(1j * rng.uniform(0, math.pi))
    return path + kernel_size * (1 + 1j)


def _gaussian_blur(img: np.ndarray, sigma: int) -> np.ndarray:
    """Separable Gaussian blur (standard deviation ``sigma`` px, 3 sigma support, zero outside the canvas)."""
    if sigma <= 0:
        return img
    r = np.arange(-3 * sigma, 3 * sigma + 1)
    g = np.exp(-(r**2) / (2 * sigma**2))
    g /= g.sum()
    img = np.apply_along_axis(np.convolve, 0, img, g, mode="same")
    return np.apply_along_axis(np.convolve, 1, img, g, mode="same")


def rasterise(path: np.ndarray, kernel_size: int) -> torch.Tensor:
    """[k, k] float32 kernel (sums to 1) of a canvas path: draw, blur, Lanczos-shrink by 2, clip at 0, normalise."""
    size = 2 * kernel_size
    diagonal = size * math.sqrt(2)
    canvas = Image.new("F", (size, size))
    points = [(float(p.real), float(p.imag)) for p in path]
    ImageDraw.Draw(canvas).line(points * (2 if len(points) == 1 else 1), fill=1.0, width=max(1, int(diagonal / 150)))
    blurred = _gaussian_blur(np.asarray(canvas, dtype=np.float64), int(diagonal * 0.01))
    small = Image.fromarray(blurred.astype(np.float32)).resize((kernel_size, kernel_size), Image.LANCZOS)
    kernel = np.clip(np.asarray(small, dtype=np.float64), 0, None)
    if kernel.sum() <= 0:  # the path left the canvas entirely (cannot happen for a centred path): a delta
        kernel[kernel_size // 2, kernel_size // 2] = 1.0
    return torch.from_numpy(kernel / kernel.sum()).float()


def motion_kernel(kernel_size: int = 61, intensity: float = 0.5,
                  generator: torch.Generator | np.random.Generator | None = None) -> torch.Tensor:
    """[k, k] random motion-blur kernel (sums to 1) for ``intensity`` in [0, 1] (0: a straight line)."""
    if not 0 <= intensity <= 1:
        raise ValueError(f"motion blur intensity must be in [0, 1], got {intensity}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 3, got {kernel_size}")
    return rasterise(motion_path(kernel_size, intensity, numpy_rng(generator)), kernel_size)
