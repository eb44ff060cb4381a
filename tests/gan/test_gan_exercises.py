"""The gan exercises against the reference math in common: the random-size cutout and the inline lazy R1.

The cutout exercise must draw from the generator exactly as ``common.diffaugment.rand_cutout`` (runs and resumes
stay bit-identical); the R1 in ``StyleGAN2Loss.d_reg`` must equal ``common.r1.r1_penalty`` and, independently,
the closed form gamma/2 ||w||^2 of a linear discriminator.
"""

import types

import pytest
import torch

from common import diffaugment as da
from common.cli import UserError
from common.r1 import r1_penalty
from gan import augment
from gan import loss as L
from gan.networks import ArchConfig, Generator
from gan.training import Trainer


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (3, 1, 7, 5), (8, 3, 32, 24), (5, 2, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cutout_exercise_equals_reference(shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    g_ref, g_ex = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    expect = da.rand_cutout(x, generator=g_ref)
    got = augment.rand_cutout(x, generator=g_ex)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got, expect)
    assert torch.equal(g_ex.get_state(), g_ref.get_state())  # same number and kind of draws


def test_cutout_exercise_ratios_equal_reference():
    x = torch.randn(6, 3, 20, 20)
    expect = da.rand_cutout(x, torch.Generator().manual_seed(2), min_ratio=0.1, max_ratio=0.9)
    assert torch.equal(augment.rand_cutout(x, torch.Generator().manual_seed(2), 0.1, 0.9), expect)


def test_gan_diff_augment_equals_reference_pipeline():
    x = torch.randn(4, 3, 16, 16)
    for policy in ("cutout", "color,translation,cutout", "cutout,color"):
        expect = da.diff_augment(x, policy, torch.Generator().manual_seed(7), cutout_mode="random")
        assert torch.equal(augment.diff_augment(x, policy, torch.Generator().manual_seed(7)), expect)
    expect = da.diff_augment(x, "cutout", torch.Generator().manual_seed(7), cutout_mode="fixed")
    assert torch.equal(augment.diff_augment(x, "cutout", torch.Generator().manual_seed(7), "fixed"), expect)


def test_reference_pipeline_calls_the_given_random_cutout():
    calls = []

    def spy(x, generator=None):
        calls.append(x.shape)
        return x * 0

    out = da.diff_augment(torch.ones(2, 3, 8, 8), "translation,cutout", None, "random", random_cutout=spy)
    assert calls == [(2, 3, 8, 8)] and not out.any()


def test_cutout_exercise_geometry():
    """Independent of common: one zero box per image, sides in [8, 16] of 32 with both ends hit, fully inside."""
    x = torch.rand(300, 1, 32, 32) + 1  # strictly positive, so the zeros are the box
    zero = augment.rand_cutout(x, torch.Generator().manual_seed(4))[:, 0] == 0  # [B, H, W]
    rows, cols = zero.any(dim=2), zero.any(dim=1)  # [B, H], [B, W]
    h, w = rows.sum(1), cols.sum(1)
    assert h.min() == 8 and h.max() == 16 and w.min() == 8 and w.max() == 16
    idx = torch.arange(32)
    top, bottom = torch.where(rows, idx, 32).amin(1), torch.where(rows, idx, -1).amax(1)  # [B]
    assert torch.equal(bottom - top + 1, h)  # contiguous rows (columns follow from the count below)
    assert torch.equal(zero.sum(dim=[1, 2]), h * w)  # a filled h x w rectangle
    assert len(set(top.tolist())) > 5  # the position varies per sample


def test_cutout_exercise_gradcheck():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: augment.rand_cutout(inp, torch.Generator().manual_seed(1)), (x,))


class LinearD(torch.nn.Module):
    """D(x) = <w, x> + b: grad_x D = w, so R1 = gamma/2 ||w||^2 for every sample."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x):
        return (x * self.w).sum(dim=[1, 2, 3]) + self.b


class SmallD(torch.nn.Module):
    """A non-linear D (conv, softplus, linear): R1 has no simple closed form, compare with common.r1."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
        self.fc = torch.nn.Linear(4 * 8 * 8, 1, dtype=torch.float64)

    def forward(self, x):
        return self.fc(torch.nn.functional.softplus(self.conv(x)).flatten(1)).squeeze(1)


def _loss(D, **kw):
    cfg = L.LossConfig(diffaug_policy=None, **kw)
    return L.StyleGAN2Loss(Generator(ArchConfig.default_for(8, channel_base=64, channel_max=16)), D, cfg,
                           torch.Generator().manual_seed(0))


def test_inline_r1_linear_d_closed_form():
    torch.manual_seed(0)
    D = LinearD((3, 8, 8))
    gamma, interval = 3.0, 16
    real = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    value, stats = _loss(D, r1_gamma=gamma, d_reg_interval=interval).d_reg(real)
    w2 = D.w.detach().square().sum()
    torch.testing.assert_close(value.detach(), interval * gamma / 2 * w2)
    assert stats["r1_penalty"] == pytest.approx((gamma / 2 * w2).item())
    value.backward()  # create_graph: d/dw (I gamma/2 |w|^2) = I gamma w
    torch.testing.assert_close(D.w.grad, interval * gamma * D.w.detach())
    torch.testing.assert_close(D.b.grad, torch.zeros((), dtype=torch.float64))


def test_inline_r1_equals_common_r1_on_a_nonlinear_d():
    torch.manual_seed(1)
    D, real = SmallD(), torch.randn(6, 3, 8, 8, dtype=torch.float64)
    value, stats = _loss(D, r1_gamma=10.0, d_reg_interval=4).d_reg(real)
    params = [D.conv.weight, D.conv.bias, D.fc.weight]  # fc.bias does not change grad_x D
    grads = torch.autograd.grad(value, params)
    x = real.clone().requires_grad_(True)
    penalty = r1_penalty(D(x), x, 10.0)
    expect = penalty.mean() * 4
    torch.testing.assert_close(value, expect, rtol=0, atol=0)
    assert stats["r1_penalty"] == penalty.mean().item()
    for got, ref in zip(grads, torch.autograd.grad(expect, params)):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_non_finite_loss_is_one_clear_error():
    fake_trainer = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def g_main():
        return net(torch.ones(1, 2)).sum() * float("nan"), {}

    with pytest.raises(UserError, match="g_main loss became NaN or infinite"):
        Trainer._phase(fake_trainer, net, opt, g_main)
