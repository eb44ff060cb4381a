"""DDIM sampling and inversion steps (Song, Meng & Ermon 2021).

Notation (see ``common.notation``): alpha_bar_t at the current step, alpha_bar_prev at the less noisy
target of a sampling step, alpha_bar_next at the noisier target of an inversion step.
"""

from __future__ import annotations

import torch

from common._broadcast import expand_as


def ddim_sigma(alpha_bar_t: float | torch.Tensor, alpha_bar_prev: float | torch.Tensor,
               eta: float = 0.0) -> torch.Tensor:
    """sigma_t(eta) = eta sqrt((1-alpha_bar_prev)/(1-alpha_bar_t)) sqrt(1 - alpha_bar_t/alpha_bar_prev)  (DDIM Eq. 16).

    eta = 1 gives the DDPM posterior standard deviation sqrt(beta_tilde_t) (Ho et al. 2020, Eq. 7).
    """
    a_t = torch.as_tensor(alpha_bar_t, dtype=torch.float32)
    a_prev = torch.as_tensor(alpha_bar_prev, dtype=torch.float32, device=a_t.device)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    return eta * variance.clamp(min=0).sqrt()


def ddim_step(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
              alpha_bar_prev: float | torch.Tensor, eta: float = 0.0, noise: torch.Tensor | None = None,
              clip_sample_range: float | None = None,
              use_clipped_model_output: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update x_t -> x_prev (DDIM Eq. 12), returning ``(x_prev, x0_hat)``.

    x_prev = sqrt(alpha_bar_prev) x0_hat                          # "predicted x0"
           + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_hat          # "direction pointing to x_t"
           + sigma_t noise                                         # random noise, sigma_t = ddim_sigma(eta)
    Shapes: x_t, eps_hat, noise [B, ...]. ``noise`` is required when eta > 0 (randomness is passed in).
    ``clip_sample_range`` clamps x0_hat (diffusers' clip_sample); with ``use_clipped_model_output`` eps_hat
    is re-derived from the clamped x0_hat, as in diffusers.
    """
    a_t, a_prev = expand_as(alpha_bar_t, x_t), expand_as(alpha_bar_prev, x_t)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
    if clip_sample_range is not None:
        x0_hat = x0_hat.clamp(-clip_sample_range, clip_sample_range)
        if use_clipped_model_output:
            eps_hat = (x_t - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
    sigma_eta_t = expand_as(ddim_sigma(alpha_bar_t, alpha_bar_prev, eta).to(x_t.device), x_t)
    dir_xt = (1 - a_prev - sigma_eta_t**2).clamp(min=0).sqrt() * eps_hat
    x_prev = a_prev.sqrt() * x0_hat + dir_xt
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs `noise` (randomness is passed in)")
        x_prev = x_prev + sigma_eta_t * noise
    return x_prev.to(x_t.dtype), x0_hat.to(x_t.dtype)


def ddim_inversion_step(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
                        alpha_bar_next: float | torch.Tensor, eta: float = 0.0,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM inversion step x_t -> x_next toward more noise (DDIM Eq. 12 run backwards; Mokady et al. 2023).

    x_next = sqrt(alpha_bar_next) x0_hat + sqrt(1 - alpha_bar_next - sigma^2) eps_hat + sigma noise,
    with x0_hat the Tweedie estimate at t and sigma = ddim_sigma(alpha_bar_next, alpha_bar_t, eta), the
    standard deviation of the DDIM step between the two levels (SDI's ``inversion_eta``, Lukoianov et al. 2024).
    With eta = 0 and an exact eps oracle, ``ddim_step`` from x_next returns x_t exactly.
    """
    a_t, a_next = expand_as(alpha_bar_t, x_t), expand_as(alpha_bar_next, x_t)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
    sigma = expand_as(ddim_sigma(alpha_bar_next, alpha_bar_t, eta).to(x_t.device), x_t)
    x_next = a_next.sqrt() * x0_hat + (1 - a_next - sigma**2).clamp(min=0).sqrt() * eps_hat
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_inversion_step with eta > 0 needs `noise` (randomness is passed in)")
        x_next = x_next + sigma * noise
    return x_next.to(x_t.dtype)
