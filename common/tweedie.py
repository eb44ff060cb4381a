"""Forward process and Tweedie conversions between x_t, eps, x0 and v.

Forward marginal (Ho et al. 2020, Eq. 4):  x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.
Tweedie's formula (Efron 2011; Chung et al. 2023 Eq. 9 for DPS) gives the posterior mean
E[x0 | x_t] = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) for an eps-prediction model.
Velocity (Salimans & Ho 2022, Sec. 4 / App. D): v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0.

All functions: tensors [B, ...]; alpha_bar_t a float, a 0-d tensor or a [B] tensor.
"""

from __future__ import annotations

import torch

from common._broadcast import expand_as


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x0) with the given noise (Ho et al. 2020, Eq. 4)."""
    a = expand_as(alpha_bar_t, x0)
    return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(x0.dtype)


def x0_from_eps(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """Tweedie estimate x0_hat = (x_t - sqrt(1-alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)  (DDIM Eq. 12)."""
    a = expand_as(alpha_bar_t, x_t)
    return ((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()).to(x_t.dtype)


def eps_from_x0(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`x0_from_eps`: eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1-alpha_bar_t)."""
    a = expand_as(alpha_bar_t, x_t)
    return ((x_t - a.sqrt() * x0_hat) / (1 - a).sqrt()).to(x_t.dtype)


def v_from_eps(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1-alpha_bar) x0, with x0 from Tweedie (Salimans & Ho 2022, Eq. 7 analogue)."""
    a = expand_as(alpha_bar_t, x_t)
    x0_hat = (x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()
    return (a.sqrt() * eps_hat - (1 - a).sqrt() * x0_hat).to(x_t.dtype)


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """Training target v = sqrt(alpha_bar) eps - sqrt(1-alpha_bar) x0 (diffusers' ``get_velocity``)."""
    a = expand_as(alpha_bar_t, x0)
    return (a.sqrt() * eps - (1 - a).sqrt() * x0).to(x0.dtype)


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """x0_hat = sqrt(alpha_bar) x_t - sqrt(1-alpha_bar) v  (Salimans & Ho 2022, App. D)."""
    a = expand_as(alpha_bar_t, x_t)
    return (a.sqrt() * x_t - (1 - a).sqrt() * v).to(x_t.dtype)


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """eps_hat = sqrt(1-alpha_bar) x_t + sqrt(alpha_bar) v  (threestudio's v->eps conversion for SD 2.1)."""
    a = expand_as(alpha_bar_t, x_t)
    return ((1 - a).sqrt() * x_t + a.sqrt() * v).to(x_t.dtype)
