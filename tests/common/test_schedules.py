"""Schedules and timestep grids equal diffusers' arrays exactly."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from common.schedules import (
    alpha_bar_at,
    inference_timesteps,
    low_snr_weight,
    make_alphas_cumprod,
    make_betas,
    min_snr_weight,
    previous_timesteps,
    snr,
)

CONFIGS = {
    "sd-2.1": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "celebahq-ddpm": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "cosine": dict(beta_schedule="squaredcos_cap_v2", beta_start=1e-4, beta_end=0.02),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_betas_and_alphas_cumprod_equal_diffusers(name, cls):
    cfg = CONFIGS[name]
    ref = cls(num_train_timesteps=1000, **cfg)
    betas = make_betas(cfg["beta_schedule"], 1000, cfg["beta_start"], cfg["beta_end"])
    assert torch.equal(betas, ref.betas)
    assert torch.equal(make_alphas_cumprod(cfg["beta_schedule"], 1000, cfg["beta_start"], cfg["beta_end"]),
                       ref.alphas_cumprod)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 10, 50, 999, 1000])
@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_equal_diffusers(spacing, n, offset):
    for cls in (DDPMScheduler, DDIMScheduler):
        ref = cls(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset)
        ref.set_timesteps(n)
        ours = inference_timesteps(n, 1000, spacing, steps_offset=offset if spacing == "leading" else 0)
        assert torch.equal(ours, ref.timesteps), (cls.__name__, spacing, n)


def test_known_grids_from_the_notes():
    assert inference_timesteps(50, 1000, "leading")[:3].tolist() == [980, 960, 940]
    assert inference_timesteps(50, 1000, "trailing")[[0, -1]].tolist() == [999, 19]
    assert inference_timesteps(1000, 1000, "leading")[[0, -1]].tolist() == [999, 0]


def test_previous_timesteps_stay_on_the_grid():
    grid = inference_timesteps(50, 1000, "linspace")
    prev = previous_timesteps(grid)
    assert prev[-1] == -1
    assert torch.equal(prev[:-1], grid[1:])
    # diffusers' DDIM rule t - T//N leaves the grid for linspace spacing (the known bug we avoid)
    assert not set((grid[:-1] - 1000 // 50).tolist()) <= set(grid.tolist())


def test_alpha_bar_at_handles_minus_one():
    ac = make_alphas_cumprod("linear")
    vals = alpha_bar_at(ac, torch.tensor([5, -1]), final_alpha_cumprod=1.0)
    assert vals[0] == ac[5] and vals[1] == 1.0


def test_bad_names():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("quadratic")
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        inference_timesteps(10, 1000, "middle")
    with pytest.raises(ValueError, match="num_inference_steps"):
        inference_timesteps(0, 1000)


def test_snr_and_min_snr_weight_closed_forms():
    alphas_cumprod = make_alphas_cumprod("linear")
    alpha_bar_t = alphas_cumprod[torch.tensor([0, 100, 400, 999])]
    ratio = snr(alpha_bar_t)
    torch.testing.assert_close(ratio * (1 - alpha_bar_t), alpha_bar_t)  # SNR (1 - abar) = abar
    assert torch.all(ratio[:-1] > ratio[1:])  # SNR falls with t
    weight = min_snr_weight(alpha_bar_t, gamma=5.0)
    # t = 0, 100 have SNR > 5 (weight 5 / SNR < 1); t = 400, 999 have SNR < 5 (weight exactly 1)
    assert ratio[1] > 5 > ratio[2]
    torch.testing.assert_close(weight[:2], 5.0 / ratio[:2])
    torch.testing.assert_close(weight[2:], torch.ones(2))
    # as an x0 weight (eps weight x SNR) it is min(SNR, gamma): capped at gamma on the clean end
    torch.testing.assert_close(weight * ratio, ratio.clamp(max=5.0))


def test_low_snr_weight_closed_form():
    alphas_cumprod = make_alphas_cumprod("linear")
    alpha_bar_t = alphas_cumprod[torch.tensor([0, 300, 750, 999])]
    weight = low_snr_weight(alpha_bar_t, cap=30.0, scale=100.0)
    inverse = (1 - alpha_bar_t) / alpha_bar_t  # 1 / SNR_t
    # t = 0, 300: 1 / SNR < 100 -> 1; t = 750: between -> 1 / (100 SNR); t = 999: 1 / SNR = 24,700 -> capped at 30
    assert inverse[1] < 100 < inverse[2] < 3000 < inverse[3]
    torch.testing.assert_close(weight, torch.stack([torch.tensor(1.0), torch.tensor(1.0), inverse[2] / 100,
                                                    torch.tensor(30.0)]).to(weight.dtype))
    assert torch.all(low_snr_weight(alphas_cumprod, cap=30.0).diff() >= 0)  # never falls as t grows
