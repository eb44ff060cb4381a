"""gan.networks and gan.loss: shapes, modulated conv definition, minibatch std, EMA, losses, lazy regularisation."""

import math

import pytest
import torch
import torch.nn.functional as F

from gan import loss as L
from gan.layers import modulated_conv2d, modulated_conv2d_grouped
from gan.networks import ArchConfig, Discriminator, Generator, ema_beta, minibatch_stddev, update_ema


def tiny(resolution):
    return ArchConfig(resolution=resolution, z_dim=16, w_dim=16, channel_base=128, channel_max=16)


@pytest.mark.parametrize("resolution", [4, 8, 16, 32])
def test_shapes_across_resolutions(resolution):
    cfg = tiny(resolution)
    G, D = Generator(cfg), Discriminator(cfg)
    z = torch.randn(4, 16)
    ws = G.mapping(z)
    assert ws.shape == (4, 2 * int(math.log2(resolution) - 1), 16) == (4, G.num_ws, 16)
    img = G(z)
    assert img.shape == (4, 3, resolution, resolution) and torch.isfinite(img).all()
    assert D(img).shape == (4,)
    with pytest.raises(ValueError, match="expects"):
        D(torch.zeros(4, 3, resolution * 2, resolution * 2))


def test_bad_resolution():
    with pytest.raises(ValueError, match="power of two"):
        ArchConfig(resolution=48)


def test_modulated_conv_equals_per_sample_definition():
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    s = torch.randn(3, 5, dtype=torch.float64)
    for demod in (True, False):
        torch.testing.assert_close(modulated_conv2d(x, w, s, demod, 1), modulated_conv2d_grouped(x, w, s, demod, 1))
    # definition check for one sample: conv with w'_oi = s_i w_oi / sqrt(sum (s_i w_oi)^2)
    w0 = w * s[0].view(1, 5, 1, 1)
    w0 = w0 / w0.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
    torch.testing.assert_close(modulated_conv2d(x, w, s, True, 1)[:1], F.conv2d(x[:1], w0, padding=1))


def test_minibatch_stddev_naive():
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    out = minibatch_stddev(x, 4)
    assert out.shape == (8, 4, 4, 4)
    for b in range(8):
        group = x[b % 2::2]  # group members share b mod (B / G)
        expect = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(out[b, 3], expect.expand(4, 4))
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.randn(6, 3, 4, 4), 4)


def test_ema_update_and_half_life():
    G, G_ema = Generator(tiny(8)), Generator(tiny(8))
    before = [p.clone() for p in G_ema.parameters()]
    update_ema(G_ema, G, 0.75)
    for p0, p, pe in zip(before, G.parameters(), G_ema.parameters()):
        torch.testing.assert_close(pe, 0.75 * p0 + 0.25 * p)
    assert ema_beta(8, 10) ** (10_000 / 8) == pytest.approx(0.5)


def test_losses_equal_formulas_on_stub_d():
    g = torch.Generator().manual_seed(0)
    real_logits = torch.randn(16, generator=g, dtype=torch.float64) * 3
    gen_logits = torch.randn(16, generator=g, dtype=torch.float64) * 3
    torch.testing.assert_close(L.generator_loss(gen_logits), -torch.log(torch.sigmoid(gen_logits)))
    expect = -torch.log(torch.sigmoid(real_logits)) - torch.log(1 - torch.sigmoid(gen_logits))
    torch.testing.assert_close(L.discriminator_loss(real_logits, gen_logits), expect)


class StubD(torch.nn.Module):
    """D(x) = <w, x>: R1 is gamma/2 ||w||^2 for every sample."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape))

    def forward(self, x):
        return (x * self.w).sum(dim=[1, 2, 3])


def _loss_module(**kw):
    G = Generator(tiny(8))
    D = StubD((3, 8, 8))
    return L.StyleGAN2Loss(G, D, L.LossConfig(diffaug_policy=None, **kw), torch.Generator().manual_seed(0)), D


def test_d_main_and_d_reg_on_stub_d():
    loss, D = _loss_module(r1_gamma=4.0, d_reg_interval=16)
    real = torch.randn(4, 3, 8, 8)
    value, stats = loss.d_reg(real)
    assert value.item() == pytest.approx(16 * 4.0 / 2 * D.w.square().sum().item(), rel=1e-5)
    value.backward()  # gradient reaches D through the double backward: d/dw (32 |w|^2) = 64 w
    torch.testing.assert_close(D.w.grad, 64 * D.w.detach(), rtol=1e-5, atol=1e-5)
    value, stats = loss.d_main(real, torch.randn(4, 16))
    assert stats["D_real"] == pytest.approx(D(real).mean().item(), rel=1e-5)


def test_g_main_uses_generator_loss():
    loss, D = _loss_module(style_mixing_prob=0.0)
    z = torch.randn(4, 16)
    gen = loss.generator.get_state()
    value, _ = loss.g_main(z)
    loss.generator.set_state(gen)
    img, _ = loss.run_G(z)
    assert value.item() == pytest.approx(F.softplus(-D(img)).mean().item(), rel=1e-5)


def test_lazy_regularisation_bookkeeping():
    lr, betas = L.lazy_optimizer_hparams(0.002, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert L.lazy_optimizer_hparams(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
    assert [s for s in range(40) if L.is_reg_step(s, 16)] == [0, 16, 32]
    assert not any(L.is_reg_step(s, None) for s in range(5))


def test_path_length_penalty_on_linear_generator():
    A = torch.randn(3 * 4 * 4, 2 * 5, dtype=torch.float64)  # img = A w (flattened)
    ws = torch.randn(6, 2, 5, dtype=torch.float64, requires_grad=True)
    img = (ws.reshape(6, 10) @ A.t()).reshape(6, 3, 4, 4)
    noise = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    penalty, pl_mean = L.path_length_penalty(img, ws, torch.tensor(0.0, dtype=torch.float64), noise, decay=0.5)
    jt_y = ((noise / 4).reshape(6, -1) @ A).reshape(6, 2, 5)  # J^T y with y = noise / sqrt(16)
    lengths = jt_y.square().sum(2).mean(1).sqrt()
    torch.testing.assert_close(pl_mean, 0.5 * lengths.mean())
    torch.testing.assert_close(penalty, (lengths - 0.5 * lengths.mean()).square())


def test_256px_default_matches_hw5_parameter_counts():
    """HW5's low_shot config at 256 px logs G 28.46 M and D 28.86 M parameters (reference section 1.2)."""
    cfg = ArchConfig.default_for(256)
    with torch.device("meta"):
        G, D = Generator(cfg), Discriminator(cfg)
    assert round(sum(p.numel() for p in G.parameters()) / 1e6, 2) == 28.46
    assert round(sum(p.numel() for p in D.parameters()) / 1e6, 2) == 28.86


def test_path_length_gradient_keeps_the_running_mean_in_the_graph():
    """StyleGAN2-ADA: pl_mean = lerp(pl_mean, mean(lengths), decay) inside (lengths - pl_mean)^2, not detached.

    Tiny generator img_i = A w_i (ws shared across layers): J^T y_i = y_i A, lengths L_i = ||y_i A|| / sqrt(num_ws)
    and dL_i/dA = y_i^T (y_i A) / (num_ws L_i). With m = (1 - d) m0 + d mean(L), the gradient of
    mean_i (L_i - m)^2 is (2 / B) sum_i (L_i - m) (dL_i/dA - d mean_j dL_j/dA).
    """
    B, num_ws, w_dim, d, m0 = 4, 2, 5, 0.3, 0.7
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3 * 4 * 4, num_ws * w_dim, generator=g, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(B, num_ws, w_dim, generator=g, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(B, 3, 4, 4, generator=g, dtype=torch.float64)
    img = (ws.reshape(B, -1) @ A.t()).reshape(B, 3, 4, 4)
    penalty, new_mean = L.path_length_penalty(img, ws, torch.tensor(m0, dtype=torch.float64), noise, decay=d)
    (grad_A,) = torch.autograd.grad(penalty.mean(), A)
    y = noise.reshape(B, -1).detach() / 4  # y_i = noise_i / sqrt(H W), [B, 48]
    jt_y = y @ A.detach()  # [B, 10]
    lengths = jt_y.square().sum(1).div(num_ws).sqrt()  # [B]
    m = (1 - d) * m0 + d * lengths.mean()
    dL = torch.einsum("bi,bj->bij", y, jt_y) / (num_ws * lengths.view(B, 1, 1))  # [B, 48, 10]
    expect = 2 / B * ((lengths - m).view(B, 1, 1) * (dL - d * dL.mean(0))).sum(0)
    torch.testing.assert_close(grad_A, expect)
    detached = 2 / B * ((lengths - m).view(B, 1, 1) * dL).sum(0)  # the old, detached-mean gradient
    assert (grad_A - detached).norm() / expect.norm() > 1e-3
    torch.testing.assert_close(new_mean, m)
    assert not new_mean.requires_grad
