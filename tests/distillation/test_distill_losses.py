"""Each loss's gradient equals its formula, with a stub UNet whose noise prediction has a closed form."""

import pytest
import torch
from distill_helpers import DeltaOracleUNet, StubUNet, sd_alphas_cumprod

from common.ddim import ddim_step
from distillation.guidance import Guidance

A = sd_alphas_cumprod()  # diffusers' alpha_bar_t, independent of common.schedules
B, C, H = 2, 4, 4


def make_guidance(unet=None, **kwargs):
    return Guidance(unet or StubUNet(C, H), None, A, **kwargs)


def embeddings(seed=0, batch=B):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * batch, 3, 5, generator=g)  # [uncond; cond]


def cfg_eps(x_t, t, emb, s, shift=0.0):
    """Hand-written CFG of the stub: eps_u + s (eps_c - eps_u)."""
    n = x_t.shape[0]
    eps_u = StubUNet.closed_form(x_t, t, emb[:n], shift)
    eps_c = StubUNet.closed_form(x_t, t, emb[n:], shift)
    return eps_u + s * (eps_c - eps_u)


def bc(v):
    return v.view(-1, 1, 1, 1)


def noisy(x, noise, t):
    return bc(A[t]).sqrt() * x + bc(1 - A[t]).sqrt() * noise


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, H, H, generator=g)
    noise = torch.randn(B, C, H, H, generator=g)
    return x, noise, torch.tensor([123, 800])


def grad_of(loss_fn, x):
    x = x.clone().requires_grad_(True)
    loss_fn(x).backward()
    return x.grad


def test_sds_gradient_is_weighted_score_difference(data):
    x, noise, t = data
    emb, s = embeddings(), 25.0
    grad = grad_of(lambda v: make_guidance().get_sds_loss(v, emb, s, t=t, noise=noise), x)
    expected = bc(1 - A[t]) * (cfg_eps(noisy(x, noise, t), t, emb, s) - noise)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    # another weight schedule changes only w(t)
    grad = grad_of(lambda v: make_guidance(w_schedule="lucid").get_sds_loss(v, emb, s, t=t, noise=noise), x)
    expected = bc(((1 - A[t]) / A[t]).sqrt()) * (cfg_eps(noisy(x, noise, t), t, emb, s) - noise)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


def test_vsd_gradient_uses_pretrained_cfg_minus_lora_cond(data):
    x, noise, t = data
    emb, s, unet = embeddings(), 7.5, StubUNet(C, H)
    guidance = make_guidance(unet)
    guidance.lora_params = [unet.lora_shift.requires_grad_(True)]
    t_lora, noise_lora = torch.tensor([500, 40]), torch.randn(B, C, H, H)
    grad = grad_of(lambda v: guidance.get_vsd_loss(v, emb, s, t=t, noise=noise, t_lora=t_lora,
                                                   noise_lora=noise_lora, lora_loss_weight=3.0), x)
    x_t = noisy(x, noise, t)
    eps_pre = cfg_eps(x_t, t, emb, s)  # adapters disabled, with CFG
    eps_lora = StubUNet.closed_form(x_t, t, emb[B:], unet.lora_shift.detach())  # adapters on, cond only
    torch.testing.assert_close(grad, bc(1 - A[t]) * (eps_pre - eps_lora), rtol=1e-5, atol=1e-6)
    # the LoRA gets the gradient of weight * mean (eps_lora(x_t', t') - eps')^2 and nothing flows into x from it
    shift = unet.lora_shift.detach().requires_grad_(True)
    pred = StubUNet.closed_form(noisy(x, noise_lora, t_lora), t_lora, emb[B:], shift)
    (3.0 * ((pred - noise_lora) ** 2).mean()).backward()
    torch.testing.assert_close(unet.lora_shift.grad, shift.grad)


def test_sdi_target_is_tweedie_of_guided_eps_at_inverted_latent(data):
    x, _, t = data
    emb, s = embeddings(), 7.5
    guidance = make_guidance()
    x_t = guidance.invert_noise(x, t, emb, n_steps=4, guidance_scale=-7.5, eta=0.0)
    eps = cfg_eps(x_t, t, emb, s)
    target = (x_t - bc(1 - A[t]).sqrt() * eps) / bc(A[t]).sqrt()
    grad = grad_of(lambda v: guidance.get_sdi_loss(v, emb, s, t=t, step=0, inversion_n_steps=4,
                                                   inversion_guidance_scale=-7.5, inversion_eta=0.0), x)
    torch.testing.assert_close(grad, x - target, rtol=1e-5, atol=1e-5)
    # between refreshes the cached target is reused even if t changes
    grad2 = grad_of(lambda v: guidance.get_sdi_loss(v, emb, s, t=t - 5, step=3, update_interval=25), x + 1)
    torch.testing.assert_close(grad2, x + 1 - target, rtol=1e-5, atol=1e-5)


def test_sdi_inversion_with_exact_oracle_is_consistent_with_ddim():
    """eta = 0 and the exact eps of a point mass: inversion lands on the marginal at exactly t, and DDIM sampling
    back along the same grid returns x0; the SDI target is x0 itself."""
    x_star = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(3))
    guidance = make_guidance(DeltaOracleUNet(x_star, A))
    t, n = torch.tensor([700, 333]), 7
    x_t = guidance.invert_noise(x_star, t, embeddings(), n_steps=n, guidance_scale=-7.5, eta=0.0)
    kappa = (x_star - A[0].sqrt() * x_star) / (1 - A[0]).sqrt()  # the noise direction fixed at tau_0 = 0
    torch.testing.assert_close(x_t, noisy(x_star, kappa, t), rtol=1e-4, atol=1e-5)
    taus = (torch.arange(n + 1)[:, None] * t[None, :] / n).round().long()
    x = x_t
    for k in range(n, 0, -1):
        x, _ = ddim_step(x, guidance.unet_eps(x, taus[k], embeddings()[:B]), A[taus[k]], A[taus[k - 1]], eta=0.0)
    torch.testing.assert_close(x, x_star, rtol=1e-4, atol=1e-4)
    target = guidance.sdi_refresh(x_star, embeddings(), t, 7.5, n, -7.5, 0.0)
    torch.testing.assert_close(target, x_star, rtol=1e-4, atol=1e-4)


def posterior_z(x0, x_t, x_prev, eps_hat, t, t_prev):
    """Hand-written DDPM posterior (Ho et al. Eq. 7) noise z = (x_prev - mu) / sigma."""
    a_t, a_p = bc(A[t]), bc(A[t_prev])
    beta = 1 - a_t / a_p
    x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
    mu = a_p.sqrt() * beta / (1 - a_t) * x0_hat + (1 - beta).sqrt() * (1 - a_p) / (1 - a_t) * x_t
    return (x_prev - mu) / ((1 - a_p) / (1 - a_t) * beta).sqrt()


def test_pds_exact_posterior_gradient_is_z_target_minus_z_source(data):
    """posterior="exact": the DDPM posterior of the t -> t - 2 jump (the official one: test_reference_formulas)."""
    x_tgt, noise_t, t = data
    x_src = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(5))
    noise_prev = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(6))
    e_src, e_tgt, s = embeddings(7), embeddings(8), 7.5
    grad = grad_of(lambda v: make_guidance().get_pds_loss(x_src, v, e_src, e_tgt, s, t=t, noise_t=noise_t,
                                                          noise_prev=noise_prev, posterior="exact"), x_tgt)
    z = []
    for x0, emb in ((x_src, e_src), (x_tgt, e_tgt)):
        x_t, x_prev = noisy(x0, noise_t, t), noisy(x0, noise_prev, t - 2)
        z.append(posterior_z(x0, x_t, x_prev, cfg_eps(x_t, t, emb, s), t, t - 2))
    torch.testing.assert_close(grad, z[1] - z[0], rtol=1e-4, atol=1e-4)


def test_dds_gradient_is_delta_of_guided_scores(data):
    x_tgt, noise, t = data
    x_src = torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(5))
    e_src, e_tgt, s = embeddings(7), embeddings(8), 7.5
    guidance = make_guidance(w_schedule="constant")
    grad = grad_of(lambda v: guidance.get_dds_loss(x_src, v, e_src, e_tgt, s, t=t, noise=noise), x_tgt)
    expected = cfg_eps(noisy(x_tgt, noise, t), t, e_tgt, s) - cfg_eps(noisy(x_src, noise, t), t, e_src, s)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


def test_ism_gradient_matches_interval_score_formula(data):
    x, noise, _ = data
    t = torch.tensor([150, 700])  # s = 70 (no inversion step) and s = 620 (3 steps of 200 from t_init = 20)
    emb, s = embeddings(), 7.5
    guidance = make_guidance(w_schedule="lucid")
    grad = grad_of(lambda v: guidance.get_ism_loss(v, emb, s, t=t, noise=noise, delta_t=80, delta_s=200,
                                                   inv_steps=5), x)
    for b, (s_b, n_b) in enumerate(((70, 0), (620, 3))):
        tb = t[b:b + 1]
        uncond = emb[b:b + 1]
        tau = s_b - n_b * 200
        xb = noisy(x[b:b + 1], noise[b:b + 1], torch.tensor([tau]))
        for _ in range(n_b):  # unconditional DDIM inversion tau -> tau + 200
            eps = StubUNet.closed_form(xb, torch.tensor([tau]), uncond)
            x0 = (xb - (1 - A[tau]).sqrt() * eps) / A[tau].sqrt()
            tau += 200
            xb = A[tau].sqrt() * x0 + (1 - A[tau]).sqrt() * eps
        eps_s = StubUNet.closed_form(xb, torch.tensor([s_b]), uncond)
        x0 = (xb - (1 - A[s_b]).sqrt() * eps_s) / A[s_b].sqrt()
        x_t = A[tb].sqrt() * x0 + (1 - A[tb]).sqrt() * eps_s
        eps_t = cfg_eps(x_t, tb, torch.cat([emb[b:b + 1], emb[B + b:B + b + 1]]), s)
        expected = ((1 - A[tb]) / A[tb]).sqrt() * (eps_t - eps_s)
        torch.testing.assert_close(grad[b:b + 1], expected, rtol=1e-4, atol=1e-4)
