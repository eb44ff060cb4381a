"""Posterior Distillation Sampling (PDS; Koo et al. 2024, Eq. 11): editing by matching DDPM posterior noises.

:func:`pds_gradient` is the exercise (KAIST CS492D A4 ``get_pds_loss``); :class:`PDSMixin` gives
:class:`distillation.guidance.Guidance` the public ``get_pds_loss``, which draws t and the two shared noises,
calls it without autograd and turns its g into the stop-gradient loss on the target latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from common.ddpm import ddpm_posterior_mean, ddpm_posterior_variance
from common.tweedie import add_noise, x0_from_eps
from distillation.update import pair_embeddings, record_update, stop_gradient_loss

if TYPE_CHECKING:
    from distillation.guidance import Guidance


def pds_gradient(guidance: Guidance, x_src: torch.Tensor, x_tgt: torch.Tensor, src_text_embedding: torch.Tensor,
                 tgt_text_embedding: torch.Tensor, guidance_scale: float, grad_scale: float, t: torch.Tensor,
                 noise_t: torch.Tensor, noise_prev: torch.Tensor, t_delta: int):
    """PDS update g = grad_scale (z_tgt - z_src) (Koo et al. 2024, Eq. 11; the official code's sign).

    x_src, x_tgt [B, C, h, w] (no grad), embeddings [2B, L, D] = cat(uncond, cond) of each prompt, t [B] long,
    t_prev = t - t_delta (t_delta = 2: the official 500-step grid). Both branches k share the noises:
    x_t^k = add_noise(x^k, eps_t, t), x_prev^k = add_noise(x^k, eps_prev, t_prev); x0_hat^k = Tweedie of the CFG
    prediction, mu^k = DDPM posterior mean (Ho et al. 2020, Eq. 7; ``common.ddpm``), sigma_t = sqrt(posterior
    variance), z^k = (x_prev^k - mu^k) / sigma_t. Run both branches as one [2B] batch: x = cat(src, tgt) with
    ``pair_embeddings(src_text_embedding, tgt_text_embedding)``. Returns (g [B, C, h, w], x0_hat [2B, C, h, w]).
    """
    # TODO: x0_hat [2B] (src, tgt), z_src, z_tgt = (x_prev - mu) / sigma_t, g = grad_scale (z_tgt - z_src)
    # BEGIN SOLUTION pds-loss
    t_prev = (t - t_delta).clamp(min=0)
    a_t, a_prev = guidance.alpha_bar(t), guidance.alpha_bar(t_prev)
    sigma_t = ddpm_posterior_variance(a_t, a_prev).sqrt().view(-1, 1, 1, 1)
    x0 = torch.cat([x_src, x_tgt])  # [2B]: src then tgt
    x_t = add_noise(x0, torch.cat([noise_t, noise_t]), torch.cat([a_t, a_t]))
    x_prev = add_noise(x0, torch.cat([noise_prev, noise_prev]), torch.cat([a_prev, a_prev]))
    embeddings = pair_embeddings(src_text_embedding, tgt_text_embedding)
    eps_hat = guidance.predict_eps(x_t, torch.cat([t, t]), embeddings, guidance_scale)
    x0_hat = x0_from_eps(x_t, eps_hat, torch.cat([a_t, a_t]))
    mu = ddpm_posterior_mean(x_t, x0_hat, torch.cat([a_t, a_t]), torch.cat([a_prev, a_prev]))
    z_src, z_tgt = ((x_prev - mu) / torch.cat([sigma_t, sigma_t])).chunk(2)
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
        A NaN/inf g raises :class:`distillation.update.NonFiniteUpdate`.
        """
        B = tgt_latents.shape[0]
        t = self.draw_t(B, t, generators)
        noise_t = self.draw_noise(tgt_latents, noise_t, generators)
        noise_prev = self.draw_noise(tgt_latents, noise_prev, generators)
        with torch.no_grad():
            g, x0_hat = pds_gradient(self, src_latents.detach().float(), tgt_latents.detach().float(),
                                     src_text_embedding, tgt_text_embedding, guidance_scale, grad_scale, t, noise_t,
                                     noise_prev, t_delta)
        record_update(self, "pds", t, g, x0_hat=x0_hat[B:])
        return stop_gradient_loss(tgt_latents, g)
