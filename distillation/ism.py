"""Interval Score Matching (ISM; LucidDreamer, Liang et al. 2024, Eq. 16).

:func:`ism_gradient` is the exercise; :class:`ISMMixin` gives :class:`distillation.guidance.Guidance` the public
``get_ism_loss``, which draws t and the noise, picks where the inversion starts (:func:`inversion_start`, the
``grid``) and which prompt it inverts with, calls it without autograd and turns its g into the stop-gradient loss.

Inversion grids (docs/distillation.md), both ending at s = t - delta_t with steps of delta_s:

- ``"2d-sds"`` (default; luocfprime/2d-sds ``ism``): n = min(s // delta_s, inv_steps) full steps from
  t_start = s - n delta_s, where the noise is added;
- ``"luciddreamer"`` (LucidDreamer ``add_noise_with_cfg``): noise at t_start = max(s - inv_steps delta_s, 0),
  then steps of delta_s with a partial last step up to s.

Both references invert with the EMPTY prompt (LucidDreamer's ``embedding_inverse``, 2d-sds's null text), not the
negative prompt: pass ``inversion_embeddings`` (or set ``guidance.inversion_embeddings``) when the uncond half of
``text_embeddings`` is a non-empty negative prompt.
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

GRIDS = ("2d-sds", "luciddreamer")


def inversion_start(t: torch.Tensor, delta_t: int, delta_s: int, inv_steps: int, grid: str = "2d-sds") -> torch.Tensor:
    """t_start [B]: the level where ISM adds the noise before inverting to s = max(t - delta_t, 0) (see GRIDS)."""
    s = (t - delta_t).clamp(min=0)
    if grid == "2d-sds":
        return s - torch.clamp(s // delta_s, max=inv_steps) * delta_s
    if grid == "luciddreamer":
        return (s - inv_steps * delta_s).clamp(min=0)
    raise ValueError(f"unknown ISM grid {grid!r}; choose one of {', '.join(GRIDS)}")


def ism_gradient(guidance: Guidance, x: torch.Tensor, text_embeddings: torch.Tensor, guidance_scale: float,
                 t: torch.Tensor, noise: torch.Tensor, delta_t: int, delta_s: int, t_start: torch.Tensor,
                 inversion_embeddings: torch.Tensor):
    """ISM update g = w(t) (eps_hat_cfg(x_t, t, y) - eps_hat(x_s, s, 0)) (Liang et al. 2024, Eq. 16).

    x [B, C, h, w] the clean latents (no grad), text_embeddings [2B, L, D] = cat(uncond, cond), t [B] long,
    noise [B, C, h, w], t_start [B] (:func:`inversion_start`), inversion_embeddings [B, L, D] (the empty prompt:
    "0" in eps(., ., 0)). s = t - delta_t; x_s comes from add_noise(x, eps, t_start) and DDIM inversion steps
    (``common.ddim.ddim_inversion_step``) on tau_k = min(t_start + k delta_s, s) with eps(x, tau_k, 0); x_t is one
    more inversion step s -> t with eps_s = eps(x_s, s, 0). Samples that reach s sooner idle (exact copies), so a
    batch equals its single runs. w = ``guidance.weight(t)`` (sqrt((1 - alpha_bar_t) / alpha_bar_t) with
    ``w_schedule="lucid"``). UNet calls: one per inversion step (the rows still inverting, ``unet_eps(...,
    rows=...)``, where t is on the host; B rows where it is on the GPU), eps_s (B), one CFG call (2B) at t.
    t and t_start on the host keep the grid's arithmetic (n_steps, the rows) off the GPU: nothing waits for it.
    Returns (g, x_t, eps_t), all [B, C, h, w].
    """
    # TODO: x_s (inversion from t_start), eps_s, x_t (inversion s -> t), eps_t (CFG), g = w(t) (eps_t - eps_s)
    # BEGIN SOLUTION ism-loss
    s = (t - delta_t).clamp(min=0)
    x_s = add_noise(x, noise, guidance.alpha_bar(t_start))
    n_steps = int(((s - t_start + delta_s - 1) // delta_s).max())  # ceil((s - t_start) / delta_s)
    for k in range(n_steps):
        tau, tau_next = torch.minimum(t_start + k * delta_s, s), torch.minimum(t_start + (k + 1) * delta_s, s)
        moving = tau_next > tau  # [B] bool: the rows still inverting
        eps_hat = guidance.unet_eps(x_s, tau, inversion_embeddings, rows=moving)
        stepped = ddim_inversion_step(x_s, eps_hat, guidance.alpha_bar(tau), guidance.alpha_bar(tau_next))
        x_s = torch.where(guidance.on_device(moving).view(-1, 1, 1, 1), stepped, x_s)
    eps_s = guidance.unet_eps(x_s, s, inversion_embeddings)  # eps(x_s, s, 0)
    x_t = ddim_inversion_step(x_s, eps_s, guidance.alpha_bar(s), guidance.alpha_bar(t))
    eps_t = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)
    g = guidance.weight(t).view(-1, 1, 1, 1) * (eps_t - eps_s)
    # END SOLUTION
    return g, x_t, eps_t


class ISMMixin:
    """``get_ism_loss`` of :class:`distillation.guidance.Guidance`."""

    def ism_inversion_embeddings(self: Guidance, text_embeddings: torch.Tensor,
                                 given: torch.Tensor | None) -> torch.Tensor:
        """[B, L, D] prompt of the inversion: ``given``, else ``self.inversion_embeddings``, else the uncond half.

        A [1, L, D] embedding (the empty prompt) is repeated over the B prompts.
        """
        uncond = split_cfg_batch(text_embeddings)[0]
        emb = given if given is not None else self.inversion_embeddings
        if emb is None:
            return uncond
        if emb.ndim != 3 or emb.shape[0] not in (1, uncond.shape[0]) or emb.shape[1:] != uncond.shape[1:]:
            raise ValueError(f"ISM inversion embeddings of shape {tuple(emb.shape)} do not match the prompts' "
                             f"{tuple(uncond.shape)}")
        return emb.to(uncond.device, uncond.dtype).expand_as(uncond)

    def get_ism_loss(self: Guidance, latents: torch.Tensor, text_embeddings: torch.Tensor,
                     guidance_scale: float = 7.5, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                     delta_t: int = 80, delta_s: int = 200, inv_steps: int = 5, grid: str = "2d-sds",
                     generators: Sequence[torch.Generator] | None = None,
                     inversion_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Interval Score Matching (Liang et al. 2024, Eq. 16): dL/dx = w(t) (eps_cfg(x_t, t, y) - eps(x_s, s, 0)).

        t ~ U[t_min, t_max] and the noise unless given; w = sqrt((1 - alpha_bar_t) / alpha_bar_t) by default
        (``w_schedule="lucid"``). ``grid``: ``"2d-sds"`` or ``"luciddreamer"`` (:func:`inversion_start`).
        ``inversion_embeddings`` [1 or B, L, D]: the empty prompt both references invert with (default
        ``self.inversion_embeddings``, else the uncond half of ``text_embeddings``). A NaN/inf g raises
        :class:`distillation.update.NonFiniteUpdate`.
        """
        if grid not in GRIDS:
            raise ValueError(f"unknown ISM grid {grid!r}; choose one of {', '.join(GRIDS)}")
        inv_emb = self.ism_inversion_embeddings(text_embeddings, inversion_embeddings)
        t = self.draw_t(latents.shape[0], t, generators, host=True)  # the grid's arithmetic stays on the host
        noise = self.draw_noise(latents, noise, generators)
        t_start = inversion_start(t, delta_t, delta_s, inv_steps, grid)
        with torch.no_grad():
            g, x_t, eps_t = ism_gradient(self, latents.detach().float(), text_embeddings, guidance_scale, t, noise,
                                         delta_t, delta_s, t_start, inv_emb)
        record_update(self, "ism", t, g, x0_hat=x0_from_eps(x_t, eps_t, self.alpha_bar(t)))
        return stop_gradient_loss(latents, g)
