"""Score Distillation Sampling (SDS; Poole et al. 2023, DreamFusion, Eq. 3).

:func:`sds_gradient` is the exercise (KAIST CS492D A4 and NYCU Lab 3, ``get_sds_loss``); :class:`SDSMixin`
gives :class:`distillation.guidance.Guidance` its public ``get_sds_loss``, which draws t and the noise,
calls it without autograd and turns its g into the stop-gradient loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from common.tweedie import add_noise, x0_from_eps
from distillation.update import record_update, stop_gradient_loss

if TYPE_CHECKING:
    from distillation.guidance import Guidance


def sds_gradient(guidance: Guidance, x: torch.Tensor, text_embeddings: torch.Tensor, guidance_scale: float,
                 grad_scale: float, t: torch.Tensor, noise: torch.Tensor):
    """SDS update g = grad_scale w(t) (eps_hat_cfg(x_t, y, t) - eps) (Poole et al. 2023, Eq. 3).

    x [B, C, h, w] the clean latents (no grad), text_embeddings [2B, L, D] = cat(uncond, cond), t [B] long,
    noise eps [B, C, h, w]. x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps (``add_noise``); the CFG
    prediction is ``guidance.predict_eps``; w(t) is ``guidance.weight(t)`` [B] (1 - alpha_bar_t by default).
    Returns (g, x_t, eps_hat), all [B, C, h, w].
    """
    # TODO: x_t, eps_hat (CFG) and the SDS gradient g = grad_scale w(t) (eps_hat - noise) (Eq. 3)
    # BEGIN SOLUTION sds-loss
    x_t = add_noise(x, noise, guidance.alpha_bar(t))
    eps_hat = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)
    g = grad_scale * guidance.weight(t).view(-1, 1, 1, 1) * (eps_hat - noise)
    # END SOLUTION
    return g, x_t, eps_hat


class SDSMixin:
    """``get_sds_loss`` of :class:`distillation.guidance.Guidance`."""

    def get_sds_loss(self: Guidance, latents: torch.Tensor, text_embeddings: torch.Tensor,
                     guidance_scale: float = 25.0, grad_scale: float = 1.0, t: torch.Tensor | None = None,
                     noise: torch.Tensor | None = None,
                     generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Score Distillation Sampling (Poole et al. 2023, Eq. 3): loss with dL/dx = w(t) (eps_hat_cfg - eps).

        t ~ U[t_min, t_max] and eps ~ N(0, I) unless given; the frozen UNet runs without autograd (no UNet
        backward). ``grad_scale`` multiplies g (the KAIST handout's argument). A NaN/inf g raises
        :class:`distillation.update.NonFiniteUpdate`.
        """
        t = self.draw_t(latents.shape[0], t, generators)
        noise = self.draw_noise(latents, noise, generators)
        with torch.no_grad():
            g, x_t, eps_hat = sds_gradient(self, latents.detach().float(), text_embeddings, guidance_scale,
                                           grad_scale, t, noise)
        record_update(self, "sds", t, g, x0_hat=x0_from_eps(x_t, eps_hat, self.alpha_bar(t)))
        return stop_gradient_loss(latents, g)
