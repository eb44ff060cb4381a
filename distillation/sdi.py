"""Score Distillation via Reparametrized DDIM (SDI; Lukoianov et al. 2024, Alg. 1).

Three exercises (NYCU Lab 3 ``invert_noise`` and ``get_sdi_loss``): :func:`ddim_invert` (DDIM inversion of x0
to level t), :func:`sdi_target` (the Tweedie target at the inverted latent) and :func:`sdi_loss` (the cached
target, refreshed every ``update_interval`` steps, and the loss). :class:`SDIMixin` gives
:class:`distillation.guidance.Guidance` the public ``invert_noise``, ``sdi_refresh`` and ``get_sdi_loss``, which
draw the inversion noises, run without autograd, check the target and fill the diagnostics.

Inversion step with eta > 0 (``inversion_form``; docs/distillation.md): ``"authors"`` (default,
:func:`authors_inversion_step`, the SDI authors' threestudio code) x_next = sqrt(a_next) x0_hat +
sqrt(1 - a_next) eps_hat + sigma z, or ``"ddim"`` (``common.ddim.ddim_inversion_step``, DDIM Eq. 12 run
backwards) x_next = sqrt(a_next) x0_hat + sqrt(1 - a_next - sigma^2) eps_hat + sigma z. Both use
sigma = ``common.ddim.ddim_sigma(a_next, a, eta)`` and agree at eta = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from common._broadcast import expand_as
from common.ddim import ddim_inversion_step, ddim_sigma
from common.tweedie import x0_from_eps
from distillation.update import record_update

if TYPE_CHECKING:
    from distillation.guidance import Guidance

InversionStep = Callable[..., torch.Tensor]  # (x, eps_hat, alpha_bar_t, alpha_bar_next, eta, noise) -> x_next


def authors_inversion_step(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
                           alpha_bar_next: float | torch.Tensor, eta: float = 0.0,
                           noise: torch.Tensor | None = None) -> torch.Tensor:
    """The SDI authors' inversion step x_t -> x_next (threestudio ``ddim_inversion_step``, Lukoianov et al. 2024).

    x_next = sqrt(a_next) x0_hat + sqrt(1 - a_next) eps_hat + sigma noise, x0_hat the Tweedie estimate at t and
    sigma = ``ddim_sigma(a_next, a_t, eta)`` (eta sqrt of diffusers' ``_get_variance(next, t)``): the deterministic
    part is the eta = 0 DDIM step and the noise comes on top, so x_next has variance 1 - a_next + sigma^2 (not
    1 - a_next as ``common.ddim.ddim_inversion_step``). Shapes [B, ...]; ``noise`` is required when eta > 0.
    """
    a_next = expand_as(alpha_bar_next, x_t)
    x_next = a_next.sqrt() * x0_from_eps(x_t, eps_hat, alpha_bar_t) + (1 - a_next).sqrt() * eps_hat
    if eta > 0:
        if noise is None:
            raise ValueError("authors_inversion_step with eta > 0 needs `noise` (randomness is passed in)")
        x_next = x_next + expand_as(ddim_sigma(alpha_bar_next, alpha_bar_t, eta).to(x_t.device), x_t) * noise
    return x_next.to(x_t.dtype)


INVERSION_STEPS: dict[str, InversionStep] = {"authors": authors_inversion_step, "ddim": ddim_inversion_step}


def inversion_step_of(inversion_form: str) -> InversionStep:
    """The inversion step of ``inversion_form`` (``"authors"`` or ``"ddim"``)."""
    if inversion_form not in INVERSION_STEPS:
        raise ValueError(f"unknown SDI inversion form {inversion_form!r}; choose one of {', '.join(INVERSION_STEPS)}")
    return INVERSION_STEPS[inversion_form]


def ddim_invert(guidance: Guidance, x0: torch.Tensor, t: torch.Tensor, text_embeddings: torch.Tensor,
                guidance_scale: float, eta: float, noises: Sequence[torch.Tensor | None],
                step: InversionStep = authors_inversion_step) -> torch.Tensor:
    """DDIM inversion of the clean latents x0 [B, C, h, w] to exactly level t [B] (Mokady et al. 2023).

    n = len(noises) steps on the grid tau_k = round(k t / n), k = 0..n (tau_0 = 0 holds x0, tau_n = t, so no
    t vs t + delta mismatch as in threestudio); step k uses the CFG prediction ``guidance.predict_eps`` at
    (x, tau_k) with ``guidance_scale`` (diffusers' form; -7.5 here is threestudio's -8.5) and
    ``step(x, eps_hat, alpha_bar(tau_k), alpha_bar(tau_{k+1}), eta, noises[k])`` tau_k -> tau_{k+1} with
    stochasticity ``eta`` and noise ``noises[k]`` (None when eta = 0): :func:`authors_inversion_step` (default)
    or ``common.ddim.ddim_inversion_step``. Returns x_t [B, C, h, w].
    """
    # TODO: the grid tau_k = round(k t / n) and n DDIM inversion steps x0 -> x_t with CFG eps_hat
    # BEGIN SOLUTION sdi-invert-noise
    n_steps = len(noises)
    taus = (torch.arange(n_steps + 1, device=t.device)[:, None] * t[None, :] / n_steps).round().long()  # [n+1, B]
    x = x0
    for k in range(n_steps):
        eps_hat = guidance.predict_eps(x, taus[k], text_embeddings, guidance_scale)
        x = step(x, eps_hat, guidance.alpha_bar(taus[k]), guidance.alpha_bar(taus[k + 1]), eta, noises[k])
    return x
    # END SOLUTION


def sdi_target(guidance: Guidance, x0: torch.Tensor, t: torch.Tensor, text_embeddings: torch.Tensor,
               guidance_scale: float, inversion_guidance_scale: float, inversion_eta: float,
               noises: Sequence[torch.Tensor | None], step: InversionStep = authors_inversion_step) -> torch.Tensor:
    """x0_target = Tweedie(x_t, eps_hat_cfg(x_t, y, t)) with x_t = :func:`ddim_invert` of x0 to t (Alg. 1).

    The inversion uses ``inversion_guidance_scale``, ``inversion_eta``, ``noises`` and the inversion ``step``
    (pass it on); the Tweedie estimate the CFG prediction with ``guidance_scale`` at (x_t, t) and
    ``common.tweedie.x0_from_eps``. Returns [B, C, h, w].
    """
    # TODO: x_t = ddim_invert(x0 -> t), then the Tweedie estimate of the CFG prediction at (x_t, t)
    # BEGIN SOLUTION sdi-refresh
    x_t = ddim_invert(guidance, x0, t, text_embeddings, inversion_guidance_scale, inversion_eta, noises, step)
    eps_hat = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)
    return x0_from_eps(x_t, eps_hat, guidance.alpha_bar(t))
    # END SOLUTION


def sdi_loss(latents: torch.Tensor, target: torch.Tensor | None, step: int, update_interval: int,
             refresh: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """SDI loss 1/2 ||x - x0_target||^2 (sum; gradient x - x0_target) with a cached target (Alg. 1).

    ``target`` is the cached x0_target [B, C, h, w] (None before the first step); ``refresh()`` computes a new
    one (DDIM inversion of the current latents + Tweedie, costly). Refresh at step 0 (or without a cached
    target) and every ``update_interval`` steps; in between reuse the cache. Returns (loss, target).
    """
    # TODO: target (refresh() if none cached or every update_interval steps) and loss 1/2 ||x - target||^2
    # BEGIN SOLUTION sdi-loss
    if target is None or step % update_interval == 0:
        target = refresh()
    loss = 0.5 * ((latents - target) ** 2).sum()
    # END SOLUTION
    return loss, target


class SDIMixin:
    """``invert_noise``, ``sdi_refresh`` and ``get_sdi_loss`` of :class:`distillation.guidance.Guidance`."""

    def inversion_noises(self: Guidance, like: torch.Tensor, n_steps: int, eta: float,
                         generators: Sequence[torch.Generator] | None) -> list[torch.Tensor | None]:
        """The n_steps noises of a stochastic inversion (eta > 0), drawn in step order; Nones when eta = 0."""
        return [self.randn(like, generators) if eta > 0 else None for _ in range(n_steps)]

    @torch.no_grad()
    def invert_noise(self: Guidance, latents: torch.Tensor, t: torch.Tensor, text_embeddings: torch.Tensor,
                     n_steps: int = 10, guidance_scale: float = -7.5, eta: float = 0.3,
                     generators: Sequence[torch.Generator] | None = None,
                     inversion_form: str = "authors") -> torch.Tensor:
        """DDIM inversion of the clean latents to exactly level t [B] in ``n_steps`` steps (:func:`ddim_invert`)."""
        step = inversion_step_of(inversion_form)
        x0 = latents.detach().float()
        noises = self.inversion_noises(x0, n_steps, eta, generators)
        return ddim_invert(self, x0, t.to(self.device), text_embeddings, guidance_scale, eta, noises, step)

    @torch.no_grad()
    def sdi_refresh(self: Guidance, latents: torch.Tensor, text_embeddings: torch.Tensor, t: torch.Tensor,
                    guidance_scale: float, inversion_n_steps: int, inversion_guidance_scale: float,
                    inversion_eta: float, generators: Sequence[torch.Generator] | None = None,
                    inversion_form: str = "authors") -> torch.Tensor:
        """x0_target = Tweedie(x_t, eps_hat_cfg(x_t, y, t)), x_t the DDIM inversion of x0 to t (:func:`sdi_target`)."""
        step = inversion_step_of(inversion_form)
        x0 = latents.detach().float()
        noises = self.inversion_noises(x0, inversion_n_steps, inversion_eta, generators)
        return sdi_target(self, x0, t.to(self.device), text_embeddings, guidance_scale, inversion_guidance_scale,
                          inversion_eta, noises, step)

    def get_sdi_loss(self: Guidance, latents: torch.Tensor, text_embeddings: torch.Tensor,
                     guidance_scale: float = 7.5, t: torch.Tensor | None = None, step: int = 0,
                     update_interval: int = 25, inversion_n_steps: int = 10, inversion_guidance_scale: float = -7.5,
                     inversion_eta: float = 0.3, inversion_form: str = "authors",
                     generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Score Distillation via Reparametrized DDIM (Lukoianov et al. 2024, Alg. 1): loss 1/2 ||x - x0_target||^2.

        t [B] is annealed linearly from t_max to t_min by the caller (``linear`` t-schedule). Every
        ``update_interval`` steps (and at step 0) the target is refreshed by :meth:`sdi_refresh`; in between the
        cached ``self.sdi_target`` is reused, so most steps cost no UNet call. Gradient: x - x0_target.
        ``inversion_form``: ``"authors"`` (:func:`authors_inversion_step`) or ``"ddim"`` (only matters for eta > 0).
        A NaN/inf target raises :class:`distillation.update.NonFiniteUpdate`.
        """
        if t is None:
            raise ValueError("get_sdi_loss needs t: SDI anneals t from t_max to t_min (the linear t-schedule)")
        inversion_step_of(inversion_form)  # refuse an unknown form before any work

        def refresh() -> torch.Tensor:
            return self.sdi_refresh(latents, text_embeddings, t, guidance_scale, inversion_n_steps,
                                    inversion_guidance_scale, inversion_eta, generators, inversion_form)

        loss, target = sdi_loss(latents, self.sdi_target, step, update_interval, refresh)
        record_update(self, "sdi", t, latents.detach() - target, x0_hat=target)
        self.sdi_target = target
        return loss
