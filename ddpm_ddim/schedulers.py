"""DDPM and DDIM schedulers: ``set_timesteps`` picks the inference grid, ``step`` does x_t -> x_{t-1}.

The student parts of each ``step`` (UMich EECS 498 HW5 part B, Sections 4-5) sit between solution markers,
laid out like the handout's TODOs; everything else (grids, variances, noise) comes from ``common``.
With the same config both classes equal diffusers' ``DDPMScheduler`` / ``DDIMScheduler`` step for step, except
that the DDIM previous timestep is the next entry of the grid (diffusers uses t - T//N, which leaves the grid for
``linspace`` and for ``trailing`` when T % N != 0: diffusers issue #12633).

Notation (``common.notation``): ``alpha_prod_t`` = alpha_bar_t, ``beta_prod_t`` = 1 - alpha_bar_t (the handout's
beta-bar), ``current_alpha_t`` = alpha_t = alpha_bar_t / alpha_bar_prev, ``current_beta_t`` = beta_t = 1 - alpha_t.
Coefficient arithmetic runs in float32 whatever the model's precision; results are cast to ``sample``'s dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from common.ddim import ddim_sigma
from common.ddpm import VARIANCE_TYPES, ddpm_posterior_variance
from common.gpu import randn_per_sample
from common.schedules import SPACINGS, inference_timesteps, make_betas, previous_timesteps

Generator = torch.Generator | list[torch.Generator] | None


@dataclass
class SchedulerOutput:
    """``prev_sample`` = x_{t-1}; ``pred_original_sample`` = x0_hat (after clipping), both [B, C, H, W]."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def step_noise(like: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` (fp32); a list of generators draws one sample each.

    With one CPU generator this draws exactly what diffusers' ``randn_tensor`` draws.
    """
    if isinstance(generator, list):
        if len(generator) != like.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {like.shape[0]}")
        return randn_per_sample(tuple(like.shape[1:]), generator, device=like.device, dtype=torch.float32)
    gen_device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=gen_device, dtype=torch.float32).to(like.device)


class _Scheduler:
    """Shared config, training schedule and inference grid of the two schedulers."""

    _keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample", "clip_sample_range",
             "timestep_spacing", "steps_offset", "prediction_type")

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", clip_sample: bool = True, clip_sample_range: float = 1.0,
                 timestep_spacing: str = "leading", steps_offset: int = 0, prediction_type: str = "epsilon"):
        if prediction_type != "epsilon":
            raise ValueError(f"only epsilon-prediction models are supported, got prediction_type={prediction_type!r}")
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"unknown timestep_spacing {timestep_spacing!r}; choose one of {', '.join(SPACINGS)}")
        self.num_train_timesteps, self.beta_start, self.beta_end = num_train_timesteps, beta_start, beta_end
        self.beta_schedule, self.clip_sample, self.clip_sample_range = beta_schedule, clip_sample, clip_sample_range
        self.timestep_spacing, self.steps_offset = timestep_spacing, steps_offset
        self.prediction_type = prediction_type
        self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)  # [T]
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # [T], alpha_bar_t
        self.one = torch.tensor(1.0)
        self.num_inference_steps: int | None = None
        self._set_grid(torch.arange(num_train_timesteps - 1, -1, -1))

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any):
        """Build from a diffusers scheduler config dict (unknown keys such as ``_class_name`` are ignored)."""
        known = cls._keys + getattr(cls, "_extra_keys", ())
        kwargs = {k: v for k, v in dict(config).items() if k in known}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._keys + getattr(self, "_extra_keys", ())}

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Pick ``num_inference_steps`` descending timesteps with ``timestep_spacing`` (common.schedules)."""
        self.num_inference_steps = num_inference_steps
        self._set_grid(inference_timesteps(num_inference_steps, self.num_train_timesteps, self.timestep_spacing,
                                           self.steps_offset).to(device or "cpu"))

    def _set_grid(self, timesteps: torch.Tensor) -> None:
        self.timesteps = timesteps  # [S] int64, descending
        self._prev = previous_timesteps(timesteps)  # [S]: the next grid entry, -1 after the last
        # t -> previous t as Python ints, so step() looks it up without a tensor search (or a GPU read) per step
        self._prev_of = dict(zip(timesteps.tolist(), self._prev.tolist()))

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The grid entry after ``timestep`` (-1 after the last one)."""
        prev = self._prev_of.get(int(timestep))
        if prev is None:
            raise ValueError(f"timestep {int(timestep)} is not on the inference grid; call set_timesteps first")
        return prev

    def _alpha_bar(self, t: int, final: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else final


class DDPMScheduler(_Scheduler):
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), on any grid of the training timesteps."""

    _extra_keys = ("variance_type",)

    def __init__(self, *args: Any, variance_type: str = "fixed_small", **kwargs: Any):
        super().__init__(*args, **kwargs)
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"unknown variance_type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}")
        self.variance_type = variance_type

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor,
             generator: Generator = None, noise: torch.Tensor | None = None) -> SchedulerOutput:
        """x_t -> x_{t-1} = mu_tilde(x_t, x0_hat) + sigma_t z (handout Formulas 1-8). Shapes [B, C, H, W].

        alpha_prod_t_prev = alpha_bar_{t-1} is 1 when prev_t < 0 (after the last step); current_alpha_t and
        current_beta_t are the per-step alpha_t = alpha_bar_t / alpha_bar_{t-1} and beta_t = 1 - alpha_t.
        ``noise`` (z) may be passed in; otherwise it is drawn with ``generator``. No noise is added at t = 0.
        """
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        x_t, eps_hat = sample.float(), model_output.float()  # x_t, eps_theta(x_t)
        # TODO: alpha_prod_t, alpha_prod_t_prev, beta_prod_t, beta_prod_t_prev, current_alpha_t, current_beta_t
        # BEGIN SOLUTION ddpm-coefficients
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        # END SOLUTION
        # TODO: pred_original_sample, the predicted x0 from x_t and eps_hat (Formula 1)
        # BEGIN SOLUTION ddpm-x0
        pred_original_sample = (x_t - beta_prod_t ** 0.5 * eps_hat) / alpha_prod_t ** 0.5
        # END SOLUTION
        if self.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.clip_sample_range, self.clip_sample_range)
        # TODO: pred_prev_sample, the posterior mean mu_tilde of x_{t-1} from x0_hat and x_t (Formula 2)
        # BEGIN SOLUTION ddpm-mean
        pred_original_sample_coeff = alpha_prod_t_prev ** 0.5 * current_beta_t / beta_prod_t
        current_sample_coeff = current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t
        pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * x_t
        # END SOLUTION
        if t > 0:  # sigma_t z with sigma_t^2 = beta_tilde_t (fixed_small) or beta_t (fixed_large)
            z = step_noise(x_t, generator) if noise is None else noise.float()
            a_prev = self._alpha_bar(prev_t, self.one)
            variance = ddpm_posterior_variance(self.alphas_cumprod[t], a_prev, self.variance_type)
            pred_prev_sample = pred_prev_sample + variance ** 0.5 * z  # a CPU 0-d scalar: no copy to the GPU
        return SchedulerOutput(pred_prev_sample.to(sample.dtype), pred_original_sample.to(sample.dtype))


class DDIMScheduler(_Scheduler):
    """DDIM sampling (Song et al. 2021, Eq. 12) with sigma_t(eta) of Eq. 16; eta = 0 is deterministic."""

    _extra_keys = ("set_alpha_to_one",)

    def __init__(self, *args: Any, set_alpha_to_one: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.set_alpha_to_one = set_alpha_to_one
        # alpha_bar used after the last step: 1 (a clean sample) or alpha_bar_0
        self.final_alpha_cumprod = self.one if set_alpha_to_one else self.alphas_cumprod[0]

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor, eta: float = 0.0,
             generator: Generator = None, noise: torch.Tensor | None = None,
             use_clipped_model_output: bool = False) -> SchedulerOutput:
        """x_t -> x_{t-1} (handout Formulas 9-10). Differentiable in ``sample`` (DPS backpropagates through it)."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        x_t, eps_hat = sample.float(), model_output.float()
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self._alpha_bar(prev_t, self.final_alpha_cumprod)
        # TODO: beta_prod_t (Formula 10) and pred_original_sample, the predicted x0 (Formula 9, first term)
        # BEGIN SOLUTION ddim-x0
        beta_prod_t = 1 - alpha_prod_t
        pred_original_sample = (x_t - beta_prod_t ** 0.5 * eps_hat) / alpha_prod_t ** 0.5
        # END SOLUTION
        if self.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.clip_sample_range, self.clip_sample_range)
            if use_clipped_model_output:  # re-derive eps_hat from the clipped x0_hat, as diffusers does
                eps_hat = (x_t - alpha_prod_t ** 0.5 * pred_original_sample) / beta_prod_t ** 0.5
        std_dev_t = ddim_sigma(alpha_prod_t, alpha_prod_t_prev, eta)  # sigma_t(eta), 0-d with the coefficients
        # TODO: prev_sample = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_hat (Formula 9)
        # BEGIN SOLUTION ddim-prev-sample
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** 0.5 * eps_hat
        prev_sample = alpha_prod_t_prev ** 0.5 * pred_original_sample + pred_sample_direction
        # END SOLUTION
        if eta > 0:
            z = step_noise(x_t, generator) if noise is None else noise.float()
            prev_sample = prev_sample + std_dev_t * z
        return SchedulerOutput(prev_sample.to(sample.dtype), pred_original_sample.to(sample.dtype))


def make_scheduler(name: str, config: dict[str, Any], **overrides: Any) -> DDPMScheduler | DDIMScheduler:
    """``DDPM`` or ``DDIM`` scheduler from a model's scheduler config (a DDPM config works for DDIM too)."""
    classes = {"DDPM": DDPMScheduler, "DDIM": DDIMScheduler}
    if name.upper() not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose DDPM or DDIM")
    return classes[name.upper()].from_config(config, **overrides)
