"""Variational Score Distillation (VSD; Wang et al. 2023, ProlificDreamer, Eqs. 9-10) with a peft LoRA.

:func:`vsd_terms` is the exercise (NYCU Lab 3 ``get_vsd_loss``; optional in KAIST A4); :class:`VSDMixin` gives
:class:`distillation.guidance.Guidance` ``init_vsd`` (the pre-wired LoRA), ``pretrained_and_lora_eps`` (the
pretrained CFG pair and the LoRA prediction in one [3B] UNet call), ``lora_loss`` and the public
``get_vsd_loss``, which draws t, t' and the noises and turns g into the stop-gradient loss. UNet calls per VSD
step: one [3B] forward without grad + the LoRA fit's [B] forward and backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from common.cfg import cfg_combine, split_cfg_batch
from common.lora_mix import BASE, lora_layers, mixed_adapters, supports_mixed_batch
from common.lora_precision import LoraMasters
from common.tweedie import add_noise, x0_from_eps
from distillation.update import record_update, stop_gradient_loss

if TYPE_CHECKING:
    from distillation.guidance import Guidance

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def vsd_terms(guidance: Guidance, x: torch.Tensor, text_embeddings: torch.Tensor, guidance_scale: float,
              t: torch.Tensor, noise: torch.Tensor, t_lora: torch.Tensor, noise_lora: torch.Tensor):
    """VSD update g = w(t) (eps_pre_cfg(x_t, y, t) - eps_lora(x_t, y, t)) (Eq. 9) and the LoRA loss (Eq. 10).

    x [B, C, h, w] the clean latents (no grad), text_embeddings [2B, L, D] = cat(uncond, cond), t, t_lora [B]
    long, noise, noise_lora [B, C, h, w]. ``guidance.pretrained_and_lora_eps(x_t, t, text_embeddings, s)`` gives
    both predictions with ONE UNet call on a [3B] batch: eps_pre the pretrained model's CFG (adapters off) and
    eps_lora the LoRA model's conditional prediction (adapters on, no CFG). The LoRA is fitted on a fresh
    x_t' = add_noise(x, noise_lora, t_lora) with ``guidance.lora_loss`` (Eq. 10). Called without autograd
    (eps_pre and eps_lora are stop-gradient), except inside ``guidance.lora_loss``, which keeps the LoRA grads.
    Returns (g, loss_lora, x_t, eps_pre): g, x_t, eps_pre [B, C, h, w]; loss_lora a scalar.
    """
    # TODO: x_t, eps_pre and eps_lora (pretrained_and_lora_eps), g = w(t) (eps_pre - eps_lora), loss_lora
    # BEGIN SOLUTION vsd-loss
    cond = split_cfg_batch(text_embeddings)[1]
    x_t = add_noise(x, noise, guidance.alpha_bar(t))
    eps_pre, eps_lora = guidance.pretrained_and_lora_eps(x_t, t, text_embeddings, guidance_scale)
    g = guidance.weight(t).view(-1, 1, 1, 1) * (eps_pre - eps_lora)
    x_t_lora = add_noise(x, noise_lora, guidance.alpha_bar(t_lora))
    loss_lora = guidance.lora_loss(x_t_lora, t_lora, noise_lora, cond)
    # END SOLUTION
    return g, loss_lora, x_t, eps_pre


class VSDMixin:
    """``init_vsd``, ``pretrained_and_lora_eps``, ``lora_loss`` and ``get_vsd_loss`` of
    :class:`distillation.guidance.Guidance`."""

    def init_vsd(self: Guidance, lora_rank: int = 4) -> list[torch.nn.Parameter]:
        """Add a peft LoRA (rank r, alpha = r, gaussian A / zero B, on to_q/to_k/to_v/to_out.0) to the UNet.

        The same UNet is eps_pretrained with adapters disabled and eps_lora with them enabled; at step 0 both
        agree (B = 0). Returns the LoRA parameters, float32 for AdamW, for their own optimiser group; in an fp16
        / bf16 UNet they are float32 masters of LoRA weights that compute in its dtype
        (:class:`common.lora_precision.LoraMasters`; ``unet_eps`` pushes each optimiser step into the layers).
        """
        from peft import LoraConfig

        config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian",
                            target_modules=LORA_TARGETS)
        self.unet.add_adapter(config)
        self.lora_masters = LoraMasters(self.unet, self.dtype)
        self.lora_params = self.lora_masters.params
        return self.lora_params

    def lora_adapter(self: Guidance) -> str | None:
        """The one active peft adapter when the UNet can run it and the base model in one mixed batch, else None
        (no peft LoRA, several active adapters, DoRA ...: :func:`common.lora_mix.supports_mixed_batch`)."""
        layers = lora_layers(self.unet)
        active = list(layers[0].active_adapters) if layers else []
        return active[0] if len(active) == 1 and supports_mixed_batch(self.unet, active[0]) else None

    def pretrained_and_lora_eps(self: Guidance, x_t: torch.Tensor, t: torch.Tensor, text_embeddings: torch.Tensor,
                                guidance_scale: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_pre, eps_lora) [B, C, h, w] of ProlificDreamer Eq. 9 for x_t [B, C, h, w], t [B], [2B] embeddings.

        eps_pre = eps_u + s (eps_c - eps_u) of the pretrained model (adapters off), eps_lora the LoRA model's
        conditional prediction (no CFG). ONE UNet call on [3B] = cat(x_t, x_t, x_t) with cat(uncond, cond, cond)
        and per-sample adapters [base] * 2B + [lora] * B (:mod:`common.lora_mix`: the LoRA on its B rows only); like
        ``unet_eps``: UNet dtype in, float32 out, v-prediction converted. Without a peft LoRA that supports mixed
        batches: the two calls (``disable_adapters`` + ``predict_eps``, ``enable_adapters`` + ``unet_eps``),
        same results. The adapters are enabled afterwards.
        """
        uncond, cond = split_cfg_batch(text_embeddings)
        self.unet.enable_adapters()
        adapter = self.lora_adapter()
        if adapter is None:
            self.unet.disable_adapters()
            eps_pre = self.predict_eps(x_t, t, text_embeddings, guidance_scale)
            self.unet.enable_adapters()
            return eps_pre, self.unet_eps(x_t, t, cond)
        B = x_t.shape[0]
        with mixed_adapters(self.unet, [BASE] * (2 * B) + [adapter] * B):
            eps = self.unet_eps(torch.cat([x_t, x_t, x_t]), torch.cat([t, t, t]), torch.cat([uncond, cond, cond]))
        eps_uncond, eps_cond, eps_lora = eps.chunk(3)  # [B, C, h, w] each
        return cfg_combine(eps_uncond, eps_cond, guidance_scale), eps_lora

    def lora_loss(self: Guidance, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  cond_embeddings: torch.Tensor) -> torch.Tensor:
        """Diffusion loss of the LoRA model on a detached sample: mean (eps_lora(x_t, t, y) - eps)^2.

        Always with autograd (also inside ``get_vsd_loss``'s no-grad call), so the LoRA gets its gradient.
        """
        self.unet.enable_adapters()
        with torch.enable_grad():
            eps_lora = self.unet_eps(x_t.detach(), t, cond_embeddings)
            return ((eps_lora - noise) ** 2).mean()

    def get_vsd_loss(self: Guidance, latents: torch.Tensor, text_embeddings: torch.Tensor,
                     guidance_scale: float = 7.5, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                     lora_loss_weight: float = 1.0, t_lora: torch.Tensor | None = None,
                     noise_lora: torch.Tensor | None = None,
                     generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Variational Score Distillation (Wang et al. 2023, Eq. 9) with a LoRA particle model (call init_vsd).

        t, t' ~ U[t_min, t_max] and fresh noises unless given (drawn in the order t, eps, t', eps');
        loss = L_vsd + lora_loss_weight * mean (eps_lora(x_t', y, t') - eps')^2 with dL_vsd/dx = g. A NaN/inf
        g or LoRA loss raises :class:`distillation.update.NonFiniteUpdate`.
        """
        B = latents.shape[0]
        t = self.draw_t(B, t, generators)
        noise = self.draw_noise(latents, noise, generators)
        t_lora = self.draw_t(B, t_lora, generators)
        noise_lora = self.draw_noise(latents, noise_lora, generators)
        with torch.no_grad():
            g, loss_lora, x_t, eps_pre = vsd_terms(self, latents.detach().float(), text_embeddings,
                                                   guidance_scale, t, noise, t_lora, noise_lora)
        if self.lora_params and not loss_lora.requires_grad:
            raise ValueError("the vsd LoRA loss has no gradient: compute it with guidance.lora_loss")
        record_update(self, "vsd", t, g, x0_hat=x0_from_eps(x_t, eps_pre, self.alpha_bar(t)),
                      lora_loss=loss_lora.detach())
        return stop_gradient_loss(latents, g) + lora_loss_weight * loss_lora
