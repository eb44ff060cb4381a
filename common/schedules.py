"""Noise schedules and inference timestep grids.

Betas follow Ho et al. (2020) Sec. 4 (linear), Rombach et al. (2022) / Stable Diffusion (``scaled_linear``:
linear in sqrt(beta)), and Nichol & Dhariwal (2021) Eq. (17) (``squaredcos_cap_v2``). The arrays equal
diffusers' ``DDPMScheduler`` / ``DDIMScheduler`` bit for bit (same dtype and operation order).
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")


def make_betas(kind: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               max_beta: float = 0.999) -> torch.Tensor:
    """beta_1..beta_T as a float32 tensor [T]."""
    T = num_train_timesteps
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if kind == "scaled_linear":  # Stable Diffusion: linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":  # Improved DDPM Eq. (17): alpha_bar(t) = cos^2(((t/T)+s)/(1+s) * pi/2)
        def alpha_bar_fn(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar_fn((i + 1) / T) / alpha_bar_fn(i / T), max_beta) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float32)
    raise ValueError(f"unknown beta schedule {kind!r}; choose one of {', '.join(BETA_SCHEDULES)}")


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s)  (Ho et al. 2020, notation below Eq. 4)."""
    return torch.cumprod(1.0 - betas, dim=0)


def make_alphas_cumprod(kind: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                        beta_end: float = 0.02) -> torch.Tensor:
    """Shortcut: ``alphas_cumprod`` [T] for a named beta schedule."""
    return alphas_cumprod_from_betas(make_betas(kind, num_train_timesteps, beta_start, beta_end))


def inference_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000, spacing: str = "leading",
                        steps_offset: int = 0) -> torch.Tensor:
    """Descending int64 grid of ``num_inference_steps`` timesteps (Lin et al. 2024, Table 2 spacings).

    leading:  (0, r, 2r, ...)[::-1] + steps_offset with r = T // N  (DDIM paper, SD default)
    trailing: round(arange(T, 0, -T/N)) - 1                        (starts at T-1)
    linspace: round(linspace(0, T-1, N))[::-1]
    """
    N, T = num_inference_steps, num_train_timesteps
    if not 1 <= N <= T:
        raise ValueError(f"num_inference_steps must be in [1, {T}], got {N}")
    if spacing == "leading":
        steps = (np.arange(0, N) * (T // N)).round()[::-1].copy().astype(np.int64) + steps_offset
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / N)).astype(np.int64) - 1
    elif spacing == "linspace":
        steps = np.linspace(0, T - 1, N).round()[::-1].copy().astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    return torch.from_numpy(steps)


def previous_timesteps(timesteps: torch.Tensor) -> torch.Tensor:
    """The timestep each grid entry steps to: the next grid entry, and -1 after the last.

    This is the correct previous timestep for every spacing. (diffusers' DDIMScheduler uses t - T//N,
    which leaves the grid for ``linspace`` and for ``trailing`` when T % N != 0; see diffusers issue #12633.)
    """
    return torch.cat([timesteps[1:], timesteps.new_tensor([-1])])


def alpha_bar_at(alphas_cumprod: torch.Tensor, t: int | torch.Tensor,
                 final_alpha_cumprod: float = 1.0) -> torch.Tensor:
    """alpha_bar_t looked up for int or tensor t; t < 0 gives ``final_alpha_cumprod``. Returns float32."""
    t = torch.as_tensor(t, device=alphas_cumprod.device)
    values = alphas_cumprod[t.clamp(min=0)].float()
    return torch.where(t < 0, torch.full_like(values, final_alpha_cumprod), values)


def snr(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio of x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps: alpha_bar_t / (1 - alpha_bar_t)
    (Kingma et al. 2021, Eq. 1-2)."""
    return alpha_bar_t / (1 - alpha_bar_t)


def min_snr_weight(alpha_bar_t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weight for epsilon prediction, min(SNR_t, gamma) / SNR_t (Hang et al. 2023, Eq. 11-12).

    The eps-MSE equals the x0-MSE weighted by SNR_t, so it spends most of its gradient on nearly clean x_t; this
    weight caps the x0 weight at gamma: 1 where SNR_t <= gamma (noisy x_t), gamma / SNR_t on the clean end.
    """
    ratio = snr(alpha_bar_t)
    return ratio.clamp(max=gamma) / ratio


def low_snr_weight(alpha_bar_t: torch.Tensor, cap: float = 30.0, scale: float = 100.0) -> torch.Tensor:
    """Loss weight clamp(1 / (scale * SNR_t), 1, cap) for epsilon prediction: up to ``cap`` on the noisiest steps.

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) multiplies an eps error by 1 / sqrt(SNR_t)
    (156x at t = 999 of the linear schedule), so with ``clip_sample`` a small eps error there becomes a clipped,
    mostly-garbage x0_hat that the sampler mixes into x_t. The plain eps-MSE spends about 1% of its gradient on
    these steps; this weight (1 where SNR_t >= 1 / scale) shifts more of it there.
    """
    return (1 / (scale * snr(alpha_bar_t))).clamp(min=1.0, max=cap)
