"""Operator properties (no adjoints needed), DPS's Resizer border, motion-kernel statistics, metrics closed forms."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dps.metrics import psnr, ssim
from dps.motion import motion_path
from dps.operators import (
    Inpainting,
    SuperResolution,
    add_measurement_noise,
    box_mask,
    build_operator,
    gaussian_blur,
    gaussian_kernel,
    motion_kernel,
    random_mask,
)


def _img(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_random_mask_keeps_observed_pixels_and_drops_30_to_70_percent():
    masks = random_mask(20, 32, generator=torch.Generator().manual_seed(0))
    missing = 1 - masks.flatten(1).mean(1)
    assert ((missing >= 0.3 - 1 / 1024) & (missing <= 0.7)).all() and missing.std() > 0.05
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    x = _img(20)
    y = Inpainting(masks).forward(x)
    keep = masks.expand_as(x).bool()
    assert torch.equal(y[keep], x[keep]) and (y[~keep] == 0).all()


def test_box_mask_is_one_box_inside_the_margin():
    m = box_mask(5, 64, generator=torch.Generator().manual_seed(1))[:, 0]
    for mi in m:
        rows, cols = (mi == 0).nonzero(as_tuple=True)
        assert rows.min() >= 4 and cols.min() >= 4 and rows.max() < 60 and cols.max() < 60
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h == w == 32 and (mi == 0).sum() == h * w  # a full rectangle of side size/2
    with pytest.raises(ValueError):
        box_mask(1, 16, box_range=(20, 21))


@pytest.mark.parametrize("kernel", [gaussian_kernel(61, 3.0), gaussian_kernel(7, 1.0), motion_kernel(61, 0.5),
                                    motion_kernel(15, 1.0, torch.Generator().manual_seed(3))])
def test_blur_kernels_sum_to_one_and_preserve_constants(kernel):
    assert kernel.min() >= 0
    torch.testing.assert_close(kernel.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)
    from dps.operators import Blur

    const = torch.full((1, 3, 64, 64), 0.37)
    torch.testing.assert_close(Blur(kernel).forward(const), const, rtol=0, atol=1e-5)


def test_gaussian_kernel_matches_its_closed_form_and_motion_kernel_is_seeded():
    k = gaussian_kernel(61, 3.0)
    r = torch.arange(61.0) - 30
    ref = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / 18)
    torch.testing.assert_close(k, ref / ref.sum())
    a = motion_kernel(61, 0.5, np.random.default_rng(0))
    b = motion_kernel(61, 0.5, np.random.default_rng(0))
    assert torch.equal(a, b) and not torch.equal(a, motion_kernel(61, 0.5, np.random.default_rng(1)))
    assert (a > 0).sum() > 10  # a path, not a single pixel


def test_blur_smooths_and_keeps_shape():
    x = _img(1, 64)
    y = gaussian_blur().forward(x)
    assert y.shape == x.shape and y.std() < 0.3 * x.std()
    small = build_operator("motion_blur", 1, 16, seed=0).forward(_img(1, 16))  # kernel larger than the image
    assert small.shape == (1, 3, 16, 16) and torch.isfinite(small).all()


@pytest.mark.parametrize("mode", ["bicubic", "avgpool"])
def test_super_resolution_shapes_and_constants(mode):
    op = SuperResolution(4, mode)
    x = _img(2, 64)
    y = op.forward(x)
    assert y.shape == (2, 3, 16, 16) and op.naive(y).shape == x.shape
    const = torch.full((1, 3, 32, 32), -0.25)
    torch.testing.assert_close(op.forward(const), torch.full((1, 3, 8, 8), -0.25), rtol=0, atol=1e-5)
    if mode == "avgpool":
        torch.testing.assert_close(y[0, :, 0, 0], x[0, :, :4, :4].mean((1, 2)))
    with pytest.raises(ValueError):
        op.forward(_img(1, 30))


def test_measurement_noise_has_the_requested_std():
    y = add_measurement_noise(torch.zeros(4, 3, 64, 64), 0.05, torch.Generator().manual_seed(0))
    assert abs(y.std().item() - 0.05) < 0.002
    with pytest.raises(ValueError):
        add_measurement_noise(y, -1.0)
    with pytest.raises(ValueError):
        build_operator("colorize", 1, 64)


def test_psnr_and_ssim_closed_forms():
    x = _img(2, 32)
    shifted = (x + 0.2).clamp(-1, 1)
    mse = (((shifted - x) / 2) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(shifted, x), 10 * torch.log10(1 / mse.double()))
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images: SSIM reduces to the luminance term (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1)
    a, b = torch.full((1, 3, 16, 16), 0.0), torch.full((1, 3, 16, 16), 0.5)  # 0.5 and 0.75 on the unit scale
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.75 + c1) / (0.25 + 0.5625 + c1)
    assert math.isclose(ssim(a, b).item(), expected, rel_tol=1e-9)
    assert ssim(x, _img(2, 32, seed=1)).max() < 0.2


def _keys_cubic(d: float) -> float:
    d = abs(d)
    return 1.5 * d**3 - 2.5 * d**2 + 1 if d <= 1 else (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2 if d <= 2 else 0.0)


def _resizer_1d(row: np.ndarray, factor: int) -> np.ndarray:
    """DPS's Resizer along one axis, written out: output o centred at input (o + 1/2) f - 1/2, weights
    cubic(d / f) / f over the whole window, normalised, then mirrored indices (symmetric padding, edge repeated)."""
    n = len(row)
    padded = np.pad(row, 4 * factor, mode="symmetric")  # padded[j + 4f] = row[mirror(j)]
    out = []
    for o in range(n // factor):
        c = (o + 0.5) * factor - 0.5
        taps = range(math.floor(c - 2 * factor) - 1, math.ceil(c + 2 * factor) + 2)
        w = np.array([_keys_cubic((c - j) / factor) / factor for j in taps])
        out.append(sum(wi * padded[j + 4 * factor] for wi, j in zip(w / w.sum(), taps)))
    return np.array(out)


@pytest.mark.parametrize("size,factor", [(32, 4), (16, 2), (12, 4)])
def test_super_resolution_is_dps_resizer_with_mirrored_borders(size, factor):
    x = _img(1, size, seed=3).double()
    expected = np.apply_along_axis(_resizer_1d, -1, x.numpy(), factor)
    expected = np.apply_along_axis(_resizer_1d, -2, expected, factor)
    y = SuperResolution(factor).forward(x)
    torch.testing.assert_close(y, torch.from_numpy(expected), rtol=0, atol=1e-12)
    # torch's antialiased bicubic agrees inside but truncates and renormalises the window at the border
    torch_y = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    inside = [o for o in range(size // factor) if 0 <= (o + 0.5) * factor - 0.5 - 2 * factor
              and (o + 0.5) * factor - 0.5 + 2 * factor <= size - 1]  # windows that do not reach the border
    if inside:
        inner = slice(inside[0], inside[-1] + 1)
        torch.testing.assert_close(y[..., inner, inner], torch_y[..., inner, inner], rtol=0, atol=1e-12)
    assert (y - torch_y).abs().max() > 0.01


def test_resize_matrices_reach_a_device_once_in_the_samples_dtype():
    """DPS applies the operator at every step: the matrices are cast and copied once per (size, device, dtype)."""
    from dps.resize import _resize_matrix_on, resize_matrix

    x = _img(1, 16, seed=4)
    y = SuperResolution(4).forward(x)  # float32
    wh = resize_matrix(16, 4)
    torch.testing.assert_close(y, torch.einsum("oh,...hw,pw->...op", wh, x.double(), wh).float(), rtol=0, atol=1e-6)
    assert torch.equal(_resize_matrix_on(16, 4, x.device, torch.float32), wh.float())
    meta = _resize_matrix_on(16, 4, torch.device("meta"), torch.float16)
    assert meta.device.type == "meta" and meta.dtype == torch.float16
    assert _resize_matrix_on(16, 4, torch.device("meta"), torch.float16) is meta  # cached, not copied again


def _kernel_stats(kernel: torch.Tensor) -> tuple[float, int, float]:
    """(RMS radius about the centre of mass in px, pixels holding 90% of the mass, minor / major axis ratio)."""
    k = kernel.double() / kernel.sum()
    yy, xx = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in k.shape), indexing="ij")
    dy, dx = yy - (k * yy).sum(), xx - (k * xx).sum()
    cov = torch.tensor([[(k * dy * dy).sum(), (k * dy * dx).sum()], [(k * dy * dx).sum(), (k * dx * dx).sum()]])
    minor, major = torch.linalg.eigvalsh(cov).tolist()
    n90 = int((k.flatten().sort(descending=True).values.cumsum(0) < 0.9).sum()) + 1
    return math.sqrt(minor + major), n90, math.sqrt(max(minor, 0.0) / major)


def test_motion_kernels_have_the_trajectory_statistics_of_dps_generator():
    """LeviBorodenko/motionblur at size 61, intensity 0.5 (DPS's setting): RMS radius about 11 px and 90% of the
    mass in about 73 px, averaged over kernels (one kernel varies a lot: its path length is uniform)."""
    stats = []
    for seed in range(16):
        kernel = motion_kernel(61, 0.5, np.random.default_rng(seed))
        assert kernel.shape == (61, 61) and kernel.dtype == torch.float32 and kernel.min() >= 0
        torch.testing.assert_close(kernel.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)
        stats.append(_kernel_stats(kernel))
    rms, n90, _ = np.mean(stats, axis=0)
    assert 11 * 0.75 < rms < 11 * 1.25, rms
    assert 73 * 0.75 < n90 < 73 * 1.25, n90
    assert max(_kernel_stats(motion_kernel(61, 1.0, np.random.default_rng(s)))[2] for s in range(4)) > 0.3  # curved
    for seed in range(4):  # intensity 0: every step has the same heading, so the path is a straight segment
        path = motion_path(61, 0.0, np.random.default_rng(seed))
        points = np.stack([path.real, path.imag], 1)
        singular = np.linalg.svd(points - points.mean(0), compute_uv=False)
        assert len(path) == 1 or singular[1] < 1e-9 * singular[0], singular
    torch.testing.assert_close(motion_kernel(31, 0.5, torch.Generator().manual_seed(5)),
                               motion_kernel(31, 0.5, torch.Generator().manual_seed(5)), rtol=0, atol=0)
