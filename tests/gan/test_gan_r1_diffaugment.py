"""common.r1 and common.diffaugment: closed forms, ranges, geometry, independence, differentiability."""

import pytest
import torch

from common import diffaugment as da
from common.r1 import r1_penalty


def test_r1_linear_discriminator_closed_form():
    torch.manual_seed(0)
    w = torch.randn(3, 8, 8, dtype=torch.float64)
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    logits = (x * w).sum(dim=[1, 2, 3]) + 0.7  # D(x) = <w, x> + b, grad_x D = w
    gamma = 3.0
    penalty = r1_penalty(logits, x, gamma)
    assert penalty.shape == (5,)
    torch.testing.assert_close(penalty, torch.full((5,), gamma / 2 * w.square().sum().item(), dtype=torch.float64))


def test_r1_quadratic_discriminator_and_graph():
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    logits = a * x.square().sum(dim=[1, 2, 3])  # grad = 2 a x
    penalty = r1_penalty(logits, x, gamma=2.0)
    torch.testing.assert_close(penalty, (2 * 0.5 * x).square().sum(dim=[1, 2, 3]))
    (da_,) = torch.autograd.grad(penalty.sum(), a)  # penalty = 4 a^2 |x|^2 -> d/da = 8 a |x|^2
    torch.testing.assert_close(da_, 8 * 0.5 * x.square().sum())


def test_r1_requires_grad():
    with pytest.raises(ValueError):
        r1_penalty(torch.zeros(2), torch.zeros(2, 1, 2, 2), 1.0)


def test_translation_moves_content_by_drawn_shift():
    x = torch.randn(6, 3, 16, 16)
    shift = da.draw_translation(x, generator=torch.Generator().manual_seed(1))
    assert shift.abs().max() <= 2 and shift.dtype == torch.long  # round(0.125 * 16) = 2
    out = da.rand_translation(x, generator=torch.Generator().manual_seed(1))
    for b in range(6):
        dy, dx = shift[b].tolist()
        expect = torch.zeros_like(x[b])
        expect[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)] = \
            x[b][:, max(-dy, 0):16 - max(dy, 0), max(-dx, 0):16 - max(dx, 0)]
        torch.testing.assert_close(out[b], expect)


def test_translation_shift_distribution_covers_range():
    x = torch.zeros(4000, 1, 32, 32)
    shift = da.draw_translation(x, generator=torch.Generator().manual_seed(0))
    assert set(shift[:, 0].tolist()) == set(range(-4, 5)) and set(shift[:, 1].tolist()) == set(range(-4, 5))


def _zero_box(out: torch.Tensor) -> tuple[int, int]:
    zero = (out == 0).all(dim=0)
    rows, cols = zero.any(dim=1).nonzero(), zero.any(dim=0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_fixed_cutout_box_size_and_clipping():
    x = torch.rand(64, 3, 16, 16) + 1  # strictly positive, so zeros are the box
    box = da.draw_cutout_fixed(x, generator=torch.Generator().manual_seed(3))
    out = da.rand_cutout_fixed(x, generator=torch.Generator().manual_seed(3))
    assert (box[:, 2] == 8).all() and (box[:, 3] == 8).all()
    for b in range(64):
        top, left = box[b, :2].tolist()
        h = min(top + 8, 16) - max(top, 0)
        w = min(left + 8, 16) - max(left, 0)
        assert int((out[b, 0] == 0).sum()) == h * w
        assert _zero_box(out[b]) == (h, w)


def test_random_cutout_size_range_and_inside():
    x = torch.rand(500, 3, 32, 32) + 1
    box = da.draw_cutout_random(x, generator=torch.Generator().manual_seed(5))
    out = da.rand_cutout(x, generator=torch.Generator().manual_seed(5))
    h, w = box[:, 2], box[:, 3]
    assert h.min() == 8 and h.max() == 16 and w.min() == 8 and w.max() == 16  # 25%-50% of 32, both ends hit
    assert (box[:, 0] >= 0).all() and (box[:, 0] + h <= 32).all() and (box[:, 1] + w <= 32).all()
    for b in range(0, 500, 50):
        assert _zero_box(out[b]) == (int(h[b]), int(w[b]))
        assert int((out[b] == 0).sum()) == 3 * int(h[b] * w[b])


def test_color_ranges():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 3, 4, 4) * 2 - 1
    delta = da.rand_brightness(x, g) - x
    shift = delta[:, 0, 0, 0]
    torch.testing.assert_close(delta, shift.view(-1, 1, 1, 1).expand_as(delta))
    assert shift.min() >= -0.5 and shift.max() < 0.5 and shift.min() < -0.45 and shift.max() > 0.45
    m = x.mean(dim=1, keepdim=True)
    factor = ((da.rand_saturation(x, g) - m) / (x - m))[:, 0, 0, 0]
    assert factor.min() >= 0 and factor.max() < 2 and factor.max() > 1.9 and factor.min() < 0.1
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    factor = ((da.rand_contrast(x, g) - m) / (x - m))[:, 0, 0, 0]
    assert factor.min() >= 0.5 - 1e-5 and factor.max() < 1.5 and factor.min() < 0.55 and factor.max() > 1.45


def test_per_sample_independence():
    x = torch.randn(8, 3, 16, 16)
    out = da.diff_augment(x, generator=torch.Generator().manual_seed(0), cutout_mode="random")
    y = x.clone()
    y[1:] = torch.randn(7, 3, 16, 16)  # other samples change, sample 0 does not
    out_y = da.diff_augment(y, generator=torch.Generator().manual_seed(0), cutout_mode="random")
    torch.testing.assert_close(out[0], out_y[0])
    boxes = da.draw_cutout_random(x, generator=torch.Generator().manual_seed(0))
    assert len({tuple(b) for b in boxes.tolist()}) > 1  # parameters differ between samples


def test_differentiable_gradcheck():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    for mode in ("fixed", "random"):
        def fn(inp, mode=mode):
            return da.diff_augment(inp, generator=torch.Generator().manual_seed(2), cutout_mode=mode)

        assert torch.autograd.gradcheck(fn, (x,))


def test_bad_policy():
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        da.diff_augment(torch.zeros(1, 3, 8, 8), "color,rotate")
