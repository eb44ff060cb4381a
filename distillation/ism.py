"""Interval Score Matching (ISM; LucidDreamer, Liang et al. 2024, Eq. 16).

:func:`ism_gradient` is the exercise; :class:`ISMMixin` gives :class:`distillation.guidance.Guidance` the public
``get_ism_loss``, which draws t and the noise, calls it without autograd and turns its g into the
stop-gradient loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from common.cfg import split_cfg_batch
from common.ddim import ddim_inversion_step
from common.tweedie import add_noise, x0_from_eps
from distillation.update import record_update, stop_gradient_loss

if TYPE_CHECKING:
    from distillation.guidance import Guidance


def ism_gradient(guidance: Guidance, x: torch.Tensor, text_embeddings: torch.Tensor, guidance_scale: float,
                 t: torch.Tensor, noise: torch.Tensor, delta_t: int, delta_s: int, inv_steps: int):
    """ISM update g = w(t) (eps_hat_cfg(x_t, t, y) - eps_hat(x_s, s, 0)) (Liang et al. 2024, Eq. 16).

    x [B, C, h, w] the clean latents (no grad), text_embeddings [2B, L, D] = cat(uncond, cond), t [B] long,
    noise [B, C, h, w]. s = t - delta_t; x_s comes from n = min(s // delta_s, inv_steps) unconditional DDIM
    inversion steps of size delta_s (``common.ddim.ddim_inversion_step``) started at add_noise(x, eps, s - n
    delta_s); x_t is one more inversion step s -> t with eps(x_s, s, 0). Samples that need fewer steps idle
    (exact copies), so a batch equals its single runs. w = ``guidance.weight(t)`` (sqrt((1 - alpha_bar_t) /
    alpha_bar_t) with ``w_schedule="lucid"``). Returns (g, x_t, eps_t), all [B, C, h, w].
    """
    # TODO: x_s (n inversion steps), eps_s, x_t (inversion s -> t), eps_t (CFG), g = w(t) (eps_t - eps_s)
    # BEGIN SOLUTION ism-loss
    uncond = split_cfg_batch(text_embeddings)[0]
    s = (t - delta_t).clamp(min=0)
    n = torch.clamp(s // delta_s, max=inv_steps)
    t_init = s - n * delta_s
    x_s = add_noise(x, noise, guidance.alpha_bar(t_init))
    for k in range(int(n.max())):
        tau, tau_next = t_init + n.clamp(max=k) * delta_s, t_init + n.clamp(max=k + 1) * delta_s
        eps_hat = guidance.unet_eps(x_s, tau, uncond)
        stepped = ddim_inversion_step(x_s, eps_hat, guidance.alpha_bar(tau), guidance.alpha_bar(tau_next))
        x_s = torch.where((tau_next > tau).view(-1, 1, 1, 1), stepped, x_s)
    eps_s = guidance.unet_eps(x_s, s, uncond)  # eps(x_s, s, 0)
    x_t = ddim_inversion_step(x_s, eps_s, guidance.alpha_bar(s), guidance.alpha_bar(t))
    eps_t = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)
    g = guidance.weight(t).view(-1, 1, 1, 1) * (eps_t - eps_s)
    # END SOLUTION
    return g, x_t, eps_t


class ISMMixin:
    """``get_ism_loss`` of :class:`distillation.guidance.Guidance`."""

    def get_ism_loss(self: Guidance, latents: torch.Tensor, text_embeddings: torch.Tensor,
                     guidance_scale: float = 7.5, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                     delta_t: int = 80, delta_s: int = 200, inv_steps: int = 5, grid: str = "2d-sds",
                     generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Interval Score Matching (Liang et al. 2024, Eq. 16): dL/dx = w(t) (eps_cfg(x_t, t, y) - eps(x_s, s, 0)).

        t ~ U[t_min, t_max] and the noise unless given; w = sqrt((1 - alpha_bar_t) / alpha_bar_t) by default
        (``w_schedule="lucid"``). A NaN/inf g raises :class:`distillation.update.NonFiniteUpdate`.
        """
        t = self.draw_t(latents.shape[0], t, generators)
        noise = self.draw_noise(latents, noise, generators)
        with torch.no_grad():
            g, x_t, eps_t = ism_gradient(self, latents.detach().float(), text_embeddings, guidance_scale, t, noise,
                                         delta_t, delta_s, inv_steps)
        record_update(self, "ism", t, g, x0_hat=x0_from_eps(x_t, eps_t, self.alpha_bar(t)))
        return stop_gradient_loss(latents, g)
