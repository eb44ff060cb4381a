"""Posterior Distillation Sampling (PDS; Koo et al. 2024, Eq. 11): editing by matching DDPM posterior noises.

:func:`pds_gradient` is the exercise (KAIST CS492D A4 ``get_pds_loss``); :class:`PDSMixin` gives
:class:`distillation.guidance.Guidance` the public ``get_pds_loss``, which draws t and the two shared noises,
chooses the posterior's beta_t (:func:`posterior_beta`), calls it without autograd and turns its g into the
stop-gradient loss on the target latents.

Two posteriors (docs/distillation.md has the derivation and the plot of psi(t), k(t)): with shared noises
g = psi(t) (x_tgt - x_src) + k(t) (eps_hat_tgt - eps_hat_src), where

- ``"official"`` (default, the PDS code's ``compute_posterior_mean``): the training schedule's one-step
  beta_t = betas[t] and alpha_t = 1 - beta_t with alpha_bar_{t - t_delta} (its 500-step grid, t_delta = 2). Then
  psi(t) > 0 (1.6 at t = 21, 0.08 at t = 301, 0.02 at t = 601 on SD's schedule) pulls the edit toward the source;
- ``"exact"``: beta_t = 1 - alpha_bar_t / alpha_bar_{t - t_delta}, the exact posterior of the t -> t - t_delta
  jump. Then psi = 0: PDS is DDS weighted by k(t).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from common.tweedie import add_noise, x0_from_eps
from distillation.update import pair_embeddings, record_update, stop_gradient_loss

if TYPE_CHECKING:
    from distillation.guidance import Guidance

POSTERIORS = ("official", "exact")


def check_posterior(posterior: str) -> None:
    """Raise ValueError unless ``posterior`` is one of :data:`POSTERIORS`."""
    if posterior not in POSTERIORS:
        raise ValueError(f"unknown PDS posterior {posterior!r}; choose one of {', '.join(POSTERIORS)}")


def posterior_beta(guidance: Guidance, t: torch.Tensor, t_delta: int, posterior: str = "official") -> torch.Tensor:
    """beta_t [B] of the PDS posterior: betas[t] (``"official"``) or 1 - alpha_bar_t / alpha_bar_{t-t_delta}."""
    check_posterior(posterior)
    if posterior == "official":
        return guidance.beta(t)
    return 1 - guidance.alpha_bar(t) / guidance.alpha_bar((t - t_delta).clamp(min=0))


def pds_gradient(guidance: Guidance, x_src: torch.Tensor, x_tgt: torch.Tensor, src_text_embedding: torch.Tensor,
                 tgt_text_embedding: torch.Tensor, guidance_scale: float, grad_scale: float, t: torch.Tensor,
                 noise_t: torch.Tensor, noise_prev: torch.Tensor, t_delta: int, beta_t: torch.Tensor):
    """PDS update g = grad_scale (z_tgt - z_src) (Koo et al. 2024, Eq. 11; the official code's sign and posterior).

    x_src, x_tgt [B, C, h, w] (no grad), embeddings [2B, L, D] = cat(uncond, cond) of each prompt, t [B] long,
    t_prev = t - t_delta (t_delta = 2: the official 500-step grid), beta_t [B] the posterior's per-step beta
    (the training schedule's betas[t] in the official code; alpha_t = 1 - beta_t). Both branches k share the
    noises: x_t^k = add_noise(x^k, eps_t, t), x_prev^k = add_noise(x^k, eps_prev, t_prev); x0_hat^k = Tweedie of
    the CFG prediction; mu^k = c0 x0_hat^k + c1 x_t^k with c0 = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t),
    c1 = sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) (Ho et al. 2020, Eq. 7, as the official
    ``compute_posterior_mean``); sigma_t = sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t);
    z^k = (x_prev^k - mu^k) / sigma_t. Run both branches as one [2B] batch: x = cat(src, tgt) with
    ``pair_embeddings(src_text_embedding, tgt_text_embedding)``. Returns (g [B, C, h, w], x0_hat [2B, C, h, w]).
    """
    # TODO: x0_hat [2B] (src, tgt), mu = c0 x0_hat + c1 x_t (with beta_t), z = (x_prev - mu) / sigma_t, g
    # BEGIN SOLUTION pds-loss
    t_prev = (t - t_delta).clamp(min=0)
    a_t, a_prev = guidance.alpha_bar(t), guidance.alpha_bar(t_prev)  # [B]
    c0 = a_prev.sqrt() * beta_t / (1 - a_t)  # posterior mean coefficients, alpha_t = 1 - beta_t
    c1 = (1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)
    sigma_t = ((1 - a_prev) / (1 - a_t) * beta_t).sqrt()
    c0, c1, sigma_t = (torch.cat([v, v]).view(-1, 1, 1, 1) for v in (c0, c1, sigma_t))  # [2B, 1, 1, 1]
    x0 = torch.cat([x_src, x_tgt])  # [2B]: src then tgt
    x_t = add_noise(x0, torch.cat([noise_t, noise_t]), torch.cat([a_t, a_t]))
    x_prev = add_noise(x0, torch.cat([noise_prev, noise_prev]), torch.cat([a_prev, a_prev]))
    embeddings = pair_embeddings(src_text_embedding, tgt_text_embedding)
    eps_hat = guidance.predict_eps(x_t, torch.cat([t, t]), embeddings, guidance_scale)
    x0_hat = x0_from_eps(x_t, eps_hat, torch.cat([a_t, a_t]))
    mu = c0 * x0_hat + c1 * x_t
    z_src, z_tgt = ((x_prev - mu) / sigma_t).chunk(2)
    g = grad_scale * (z_tgt - z_src)
    # END SOLUTION
    return g, x0_hat


class PDSMixin:
    """``get_pds_loss`` of :class:`distillation.guidance.Guidance`."""

    def get_pds_loss(self: Guidance, src_latents: torch.Tensor, tgt_latents: torch.Tensor,
                     src_text_embedding: torch.Tensor, tgt_text_embedding: torch.Tensor, guidance_scale: float = 7.5,
                     grad_scale: float = 1.0, t: torch.Tensor | None = None, noise_t: torch.Tensor | None = None,
                     noise_prev: torch.Tensor | None = None, t_delta: int = 2, posterior: str = "official",
                     generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Posterior Distillation Sampling (Koo et al. 2024, Eq. 11), official sign: dL/dx_tgt = z_tgt - z_src.

        t ~ U[t_min, t_max], eps_t and eps_prev ~ N(0, I) unless given (drawn in that order). Only the target
        latents are optimised. (The KAIST README writes the opposite sign; the official code uses this one.)
        ``posterior``: ``"official"`` (one-step beta_t = betas[t], the PDS code) or ``"exact"`` (the exact
        t -> t - t_delta posterior: a k(t)-weighted DDS); see :func:`posterior_beta` and docs/distillation.md.
        A NaN/inf g raises :class:`distillation.update.NonFiniteUpdate`.
        """
        check_posterior(posterior)  # before any draw
        B = tgt_latents.shape[0]
        t = self.draw_t(B, t, generators)
        noise_t = self.draw_noise(tgt_latents, noise_t, generators)
        noise_prev = self.draw_noise(tgt_latents, noise_prev, generators)
        beta_t = posterior_beta(self, t, t_delta, posterior)
        with torch.no_grad():
            g, x0_hat = pds_gradient(self, src_latents.detach().float(), tgt_latents.detach().float(),
                                     src_text_embedding, tgt_text_embedding, guidance_scale, grad_scale, t, noise_t,
                                     noise_prev, t_delta, beta_t)
        record_update(self, "pds", t, g, x0_hat=x0_hat[B:])
        return stop_gradient_loss(tgt_latents, g)
