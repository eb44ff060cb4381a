"""DDPM ancestral sampling: the posterior q(x_prev | x_t, x0) (Ho et al. 2020, Eqs. 6-7).

Works for any pair of levels t > prev on a (possibly respaced) grid: the per-step alpha_t and beta_t are
alpha_bar_t / alpha_bar_prev and 1 - that, as in diffusers' ``DDPMScheduler`` (Nichol & Dhariwal 2021, Sec. 4).
"""

from __future__ import annotations

import torch

from common._broadcast import expand_as

VARIANCE_TYPES = ("fixed_small", "fixed_large")


def ddpm_posterior_coefficients(alpha_bar_t: float | torch.Tensor,
                                alpha_bar_prev: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_x0, c_xt) with mu_tilde = c_x0 x0 + c_xt x_t  (Ho et al. 2020, Eq. 7).

    c_x0 = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t)
    c_xt = sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    """
    a_t = torch.as_tensor(alpha_bar_t, dtype=torch.float32)
    a_prev = torch.as_tensor(alpha_bar_prev, dtype=torch.float32, device=a_t.device)
    alpha_t = a_t / a_prev  # per-step alpha_t
    beta_t = 1 - alpha_t
    return a_prev.sqrt() * beta_t / (1 - a_t), alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)


def ddpm_posterior_mean(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
                        alpha_bar_prev: float | torch.Tensor) -> torch.Tensor:
    """mu_tilde(x_t, x0_hat) of Ho et al. (2020) Eq. 7. Shapes [B, ...]."""
    c_x0, c_xt = ddpm_posterior_coefficients(alpha_bar_t, alpha_bar_prev)
    return (expand_as(c_x0.to(x_t.device), x_t) * x0_hat + expand_as(c_xt.to(x_t.device), x_t) * x_t).to(x_t.dtype)


def ddpm_posterior_variance(alpha_bar_t: float | torch.Tensor, alpha_bar_prev: float | torch.Tensor,
                            variance_type: str = "fixed_small") -> torch.Tensor:
    """beta_tilde_t = (1-alpha_bar_prev)/(1-alpha_bar_t) beta_t (fixed_small, >= 1e-20), or beta_t (fixed_large).

    Ho et al. (2020) Sec. 3.2: both choices of sigma_t^2 give similar results.
    """
    a_t = torch.as_tensor(alpha_bar_t, dtype=torch.float32)
    a_prev = torch.as_tensor(alpha_bar_prev, dtype=torch.float32, device=a_t.device)
    beta_t = 1 - a_t / a_prev
    if variance_type == "fixed_small":
        return ((1 - a_prev) / (1 - a_t) * beta_t).clamp(min=1e-20)
    if variance_type == "fixed_large":
        return beta_t
    raise ValueError(f"unknown variance_type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}")


def ddpm_step(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
              alpha_bar_prev: float | torch.Tensor, noise: torch.Tensor | None = None,
              variance_type: str = "fixed_small",
              clip_sample_range: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral step x_t -> x_prev = mu_tilde + sqrt(var) noise (Ho et al. 2020, Alg. 2); returns (x_prev, x0_hat).

    Pass ``noise=None`` at the last step (t = 0), where no noise is added.
    """
    a_t = expand_as(alpha_bar_t, x_t)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()  # Tweedie, Eq. 15
    if clip_sample_range is not None:
        x0_hat = x0_hat.clamp(-clip_sample_range, clip_sample_range)
    x_prev = ddpm_posterior_mean(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)
    if noise is not None:
        var = ddpm_posterior_variance(alpha_bar_t, alpha_bar_prev, variance_type).to(x_t.device)
        x_prev = x_prev + expand_as(var, x_t).sqrt() * noise
    return x_prev.to(x_t.dtype), x0_hat.to(x_t.dtype)
