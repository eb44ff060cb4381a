"""DDIM/DDPM steps and add_noise equal diffusers' schedulers on random inputs."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from common.ddim import ddim_step
from common.ddpm import ddpm_step
from common.schedules import alpha_bar_at, make_alphas_cumprod
from common.tweedie import add_noise

SHAPE = (2, 3, 8, 8)


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("spacing,n", [("leading", 50), ("trailing", 50), ("leading", 7), ("linspace", 1000)])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_matches_diffusers(eta, spacing, n, clip):
    ref = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=clip,
                        set_alpha_to_one=False, steps_offset=1 if spacing == "leading" else 0,
                        timestep_spacing=spacing)
    ref.set_timesteps(n)
    ac = make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)
    final = float(ref.final_alpha_cumprod)
    for i, t in enumerate(ref.timesteps[:: max(1, n // 5)]):
        x_t, eps_hat, noise = _inputs(i)
        expected = ref.step(eps_hat, t, x_t, eta=eta, variance_noise=noise)
        t_prev = t - 1000 // n  # the rule diffusers uses (on-grid for these spacings)
        ours, x0_hat = ddim_step(x_t, eps_hat, alpha_bar_at(ac, t), alpha_bar_at(ac, t_prev, final), eta=eta,
                                 noise=noise, clip_sample_range=1.0 if clip else None)
        torch.testing.assert_close(ours, expected.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0_hat, expected.pred_original_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("n", [1000, 50])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(variance_type, n, clip):
    ref = DDPMScheduler(beta_schedule="linear", variance_type=variance_type, clip_sample=clip)
    ref.set_timesteps(n)
    ac = ref.alphas_cumprod
    for i, t in enumerate(list(ref.timesteps[:: max(1, n // 6)]) + [ref.timesteps[-1]]):
        x_t, eps_hat, _ = _inputs(i)
        expected = ref.step(eps_hat, t, x_t, generator=torch.Generator().manual_seed(i))
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(i)) if t > 0 else None
        prev = ref.previous_timestep(t)
        ours, x0_hat = ddpm_step(x_t, eps_hat, alpha_bar_at(ac, t), alpha_bar_at(ac, prev), noise=noise,
                                 variance_type=variance_type, clip_sample_range=1.0 if clip else None)
        torch.testing.assert_close(ours, expected.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0_hat, expected.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_add_noise_matches_diffusers_per_sample_timesteps():
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, noise, _ = _inputs(0)
    t = torch.tensor([3, 917])
    expected = ref.add_noise(x0, noise, t)
    torch.testing.assert_close(add_noise(x0, noise, ref.alphas_cumprod[t]), expected, rtol=1e-6, atol=1e-6)
