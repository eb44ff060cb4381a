"""Operator properties (no adjoints needed), metrics closed forms."""

import math

import pytest
import torch

from dps.metrics import psnr, ssim
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
    a = motion_kernel(61, 0.5, torch.Generator().manual_seed(0))
    b = motion_kernel(61, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, motion_kernel(61, 0.5, torch.Generator().manual_seed(1)))
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
