"""Diffusion Posterior Sampling (Chung et al. 2023, Algorithm 1 as implemented in the authors' code).

On top of each DDIM step x_t -> x'_{t-1} (the reference ``common.ddim.ddim_step``, so DPS does not depend on the
DDIM homework), DPS pulls the sample toward consistency with the measurement y = A(x) + n:

    x_{t-1} = x'_{t-1} - zeta * grad_{x_t} || y - A(x0_hat(x_t)) ||_2          (handout Formula 11)

x0_hat is the (clipped) Tweedie estimate, so the gradient backpropagates through the UNet. The norm is *not*
squared: the code's step equals the paper's rule zeta_i = zeta' / ||y - A(x0_hat)|| with zeta' = 2 zeta (DPS repo
issue #20). For a batch, each image uses its own norm (the gradient of the sum of per-image norms), so an image's
reconstruction does not depend on the others in its batch.
"""

from __future__ import annotations

from typing import Any

import torch

from common.ddim import ddim_step
from common.divergence import LazyChecks
from common.gpu import randn_per_sample
from common.sampling import SamplingConfig, ddim_sample_loop, grid_alpha_bars, model_shape, unet_eps
from dps.operators import Operator

X_BOUND = 1e3  # |x_t| of a sane chain stays below ~10 (x_T ~ N(0, I)); beyond this the step size zeta blew it up
LAZY_DEVICES = ("cuda",)  # devices whose per-step checks are read a step late (tests add "cpu" to exercise it)


def dps_update(prev_sample: torch.Tensor, sample: torch.Tensor, pred_original_sample: torch.Tensor,
               measurement: torch.Tensor, operator: Operator, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPS correction. Returns (x_{t-1} detached [B, C, H, W], per-image residual norm [B]).

    ``sample`` is x_t (requires grad), ``pred_original_sample`` is x0_hat(x_t) computed from it with the graph
    kept, ``prev_sample`` is the plain DDIM x'_{t-1}, ``measurement`` is y and ``scale`` is zeta.
    """
    # TODO: norm = per-image ||y - A(x0_hat)||_2 (not squared); prev_sample -= scale * grad_{x_t} sum(norm)
    # BEGIN SOLUTION dps-update
    residual = measurement - operator.forward(pred_original_sample)
    norm = torch.linalg.vector_norm(residual.flatten(1), dim=1)  # [B]
    norm_grad = torch.autograd.grad(outputs=norm.sum(), inputs=sample)[0]
    prev_sample = prev_sample - scale * norm_grad
    # END SOLUTION
    return prev_sample.detach(), norm.detach()


def dps_sample(unet: torch.nn.Module, config: SamplingConfig, measurement: torch.Tensor, operator: Operator,
               num_inference_steps: int, scale: float, generators: list[torch.Generator], eta: float = 0.0,
               progress: Any = None, checks: LazyChecks | None = None) -> torch.Tensor:
    """Reconstruct a batch from ``measurement`` with DPS on DDIM. Returns [B, C, H, W] float32 in [-1, 1].

    ``config`` is the model's scheduler config (``common.sampling.sampling_config``): grid, alpha_bar, clipping.
    ``scale`` = 0 gives plain DDIM sampling (the measurement is then ignored). The divergence check of every
    step goes through ``checks`` (a fresh ``common.divergence.LazyChecks`` by default): on a GPU it is read a
    step late, so the loop never waits for the GPU, and all of it is read before this returns.
    """
    if scale < 0:
        raise ValueError(f"DPS scale must be >= 0, got {scale}")
    device = next(unet.parameters()).device
    timesteps = config.timesteps(num_inference_steps)
    x = randn_per_sample(model_shape(unet), generators, device=device, dtype=torch.float32)  # x_T
    if scale == 0:
        with torch.no_grad():
            x = ddim_sample_loop(lambda x_t, t: unet_eps(unet, x_t, t), x, timesteps, config.alphas_cumprod, eta,
                                 generators, config.clip_sample, config.final_alpha_cumprod, progress)
        return _checked(x)
    measurement = measurement.to(device)
    checks = LazyChecks(lazy_devices=LAZY_DEVICES) if checks is None else checks
    hint = f"lower --scale (now {scale:g})"
    steps = grid_alpha_bars(timesteps, config.alphas_cumprod, config.final_alpha_cumprod, device)
    for step, (t, alpha_bar_t, alpha_bar_prev) in enumerate(steps, start=1):
        noise = randn_per_sample(tuple(x.shape[1:]), generators, device=device) if eta > 0 else None
        x = x.detach().requires_grad_(True)  # x_t
        with torch.enable_grad():  # x0_hat keeps the graph through the UNet for the gradient w.r.t. x_t
            prev_sample, x0_hat = ddim_step(x, unet_eps(unet, x, t), alpha_bar_t, alpha_bar_prev, eta, noise,
                                            config.clip_sample)
            x, _ = dps_update(prev_sample, x, x0_hat, measurement, operator, scale)
        checks.add(x, f"the DPS sample (after t = {t})", step, X_BOUND, hint)
        checks.poll()  # reads the check of the previous step, which the GPU has finished
        if progress is not None:
            progress.update(1)
    checks.flush()
    return _checked(x)


def _checked(x: torch.Tensor) -> torch.Tensor:
    """x clamped to [-1, 1], or a one-line error when the chain produced NaN or inf (clamping would hide it)."""
    if not torch.isfinite(x).all():
        raise ValueError("DPS produced NaN or inf; check dps_update, or lower --scale")
    return x.detach().clamp(-1, 1)
