"""Diffusion synchronization: joint DDIM sampling of several instance spaces tied to one canonical space.

SyncTweedies (Kim et al. 2024, "SyncTweedies: A General Generative Framework Based on Synchronized Diffusions",
Sec. 3-4): a canonical variable z (a panorama latent, an ambiguous image) is seen through projections
f_i (crops, views) as instance variables x^i = f_i(z) that a pretrained model can denoise; an unprojection g
maps instance values back, averaging where several instances land (the least-squares solution, MultiDiffusion
Eq. 3-5). At every step one variable is averaged through ``g`` and re-projected with ``f``:

| ``sync`` | instance-space case (SyncTweedies Tab. 1) | canonical-space variant (``canonical=True``) |
|---|---|---|
| ``eps`` | case 1: eps_i <- f_i(g(eps))               | case 4: delta = g(eps_i(f_i(z_t)))   (Visual Anagrams) |
| ``x0``  | case 2: x0_i <- f_i(g(x0))  (SyncTweedies)  | case 5: z0_hat = g(x0_i)                               |
| ``xt``  | case 3: x_prev_i <- f_i(g(x_prev))           | case 6: z_prev = g(x_prev_i)         (MultiDiffusion) |
| ``none``| case 0: independent instances              | -                                                      |

phi (Tweedie, ``compute_tweedie``) and psi (DDIM eta = 0, ``compute_prev_state``) are affine in (x_t, eps, x0),
so with linear maps whose g o f is the identity and instances started from one canonical noise all six give the
same trajectory; they differ with independent starts (``init="independent"``) or non-invertible maps.

A *mapping* is any object with ``forward_mapping(z [1, ...]) -> x [N, ...]`` and
``inverse_mapping(x [N, ...]) -> z [1, ...]``. A *denoiser* is ``eps_fn(x_t [N, C, H, W], t: int) -> eps_hat``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from tqdm.auto import tqdm

from common._broadcast import expand_as
from common.divergence import LazyChecks, check_bounded
from common.sampling import grid_alpha_bars
from common.schedules import alpha_bar_at, inference_timesteps, make_betas, previous_timesteps
from common.sync import SYNC_CASES, EpsFn, Mapping, sync_sample_loop, synchronize

SYNC_VARIABLES = SYNC_CASES  # ("x0", "eps", "xt", "none")
INITS = ("canonical", "independent")


# ---------------------------------------------------------------------------------------------------------------
# The reverse step (handout Task 0)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def compute_tweedie(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """phi: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)  (Tweedie; DDIM Eq. 12).

    ``eps_hat`` may carry extra channels (DeepFloyd IF predicts eps and a learned variance, 2C channels): only
    the first C = x_t.shape[1] are the noise. Computed in fp32 and cast back to x_t's dtype.
    """
    dtype = x_t.dtype
    eps_hat = _at_least_fp32(eps_hat[:, : x_t.shape[1]])  # IF: drop the variance channels; [N, C, H, W]
    x_t = _at_least_fp32(x_t)  # [N, C, H, W]
    alpha_bar_t = expand_as(alpha_bar_t, x_t)  # fp32 tensor, 0-d or [N, 1, 1, 1]
    # TODO: x0_hat from x_t, eps_hat and alpha_bar_t (Tweedie's formula, DDIM Eq. 12)
    # BEGIN SOLUTION sync-tweedie
    x0_hat = (x_t - torch.sqrt(1 - alpha_bar_t) * eps_hat) / torch.sqrt(alpha_bar_t)
    # END SOLUTION
    return x0_hat.to(dtype)


def compute_prev_state(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
                       alpha_bar_prev: float | torch.Tensor) -> torch.Tensor:
    """psi: deterministic DDIM (eta = 0, Song et al. 2021 Eq. 12) from x_t and a given x0_hat.

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev) eps(x_t, x0_hat), with the implied noise
    eps = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t). In fp32: at the last step alpha_bar_prev
    rounds to 1 in fp16 and the skeleton's fp16 arithmetic gave 0/0.
    """
    dtype = x_t.dtype
    x_t, x0_hat = _at_least_fp32(x_t), _at_least_fp32(x0_hat)  # [N, C, H, W]
    alpha_bar_t, alpha_bar_prev = expand_as(alpha_bar_t, x_t), expand_as(alpha_bar_prev, x_t)  # fp32 tensors
    # TODO: x_prev from x_t and x0_hat: the implied noise, then DDIM Eq. 12 with eta = 0
    # BEGIN SOLUTION sync-prev-state
    eps_hat = (x_t - torch.sqrt(alpha_bar_t) * x0_hat) / torch.sqrt(1 - alpha_bar_t)
    x_prev = torch.sqrt(alpha_bar_prev) * x0_hat + torch.sqrt(1 - alpha_bar_prev) * eps_hat
    # END SOLUTION
    return x_prev.to(dtype)


def one_step_process(mapping: Mapping, eps_fn: EpsFn, x_t: torch.Tensor, t: int, alpha_bar_t: torch.Tensor,
                     alpha_bar_prev: torch.Tensor, sync: str = "x0") -> tuple[torch.Tensor, torch.Tensor]:
    """One synchronized DDIM step of all instances x_t [N, C, H, W]; returns (x_prev, x0_hat), both [N, ...].

    ``sync`` picks the variable averaged through the canonical space (SyncTweedies cases 1/2/3, or 0 = none).
    """
    if sync not in SYNC_VARIABLES:
        raise ValueError(f"unknown sync variable {sync!r}; choose one of {', '.join(SYNC_VARIABLES)}")
    eps_hat = eps_fn(x_t, t)[:, : x_t.shape[1]]  # eps_theta(x_t^i) [N, C, H, W] (IF: variance dropped)
    # TODO: x0_hat and x_prev, averaging eps_hat (eps), x0_hat (x0) or x_prev (xt) with synchronize()
    # BEGIN SOLUTION sync-one-step
    if sync == "eps":  # case 1
        eps_hat = synchronize(mapping, eps_hat)
    x0_hat = compute_tweedie(x_t, eps_hat, alpha_bar_t)
    if sync == "x0":  # case 2: SyncTweedies
        x0_hat = synchronize(mapping, x0_hat)
    x_prev = compute_prev_state(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)
    if sync == "xt":  # case 3
        x_prev = synchronize(mapping, x_prev)
    # END SOLUTION
    return x_prev, x0_hat


def canonical_one_step_process(mapping: Mapping, eps_fn: EpsFn, z_t: torch.Tensor, t: int,
                               alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor,
                               sync: str = "x0") -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step of the canonical sample z_t [1, ...]; the instances x_t^i = f_i(z_t) only query the model.

    eps: average the noise (case 4, Visual Anagrams); x0: average the Tweedie estimates (case 5); xt: average
    the per-instance DDIM updates (case 6, MultiDiffusion). Returns (z_prev, z0_hat).
    """
    if sync not in ("eps", "x0", "xt"):
        raise ValueError(f"canonical denoising synchronizes eps, x0 or xt, got {sync!r}")
    x_t = mapping.forward_mapping(z_t)
    eps_hat = eps_fn(x_t, t)[:, : x_t.shape[1]]
    if sync == "eps":
        z0_hat = compute_tweedie(z_t, mapping.inverse_mapping(eps_hat), alpha_bar_t)
        return compute_prev_state(z_t, z0_hat, alpha_bar_t, alpha_bar_prev), z0_hat
    x0_hat = compute_tweedie(x_t, eps_hat, alpha_bar_t)
    z0_hat = mapping.inverse_mapping(x0_hat)
    if sync == "x0":
        return compute_prev_state(z_t, z0_hat, alpha_bar_t, alpha_bar_prev), z0_hat
    x_prev = compute_prev_state(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)
    return mapping.inverse_mapping(x_prev), z0_hat


# ---------------------------------------------------------------------------------------------------------------
# Schedule and sampling loop


@dataclass(frozen=True)
class DDIMSchedule:
    """Inference grid and fp32 alpha_bar lookups of a diffusers scheduler config (DDIM, eta = 0)."""

    timesteps: torch.Tensor  # [S] int64, descending
    alphas_cumprod: torch.Tensor  # [T] float32
    final_alpha_cumprod: float  # alpha_bar used after the last step (set_alpha_to_one -> 1, else alpha_bar_0)
    prediction_type: str = "epsilon"

    def alpha_bars(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_bar_t, alpha_bar_prev) of grid step i, float32 0-d tensors."""
        t, t_prev = self.timesteps[i], previous_timesteps(self.timesteps)[i]
        return (alpha_bar_at(self.alphas_cumprod, t, self.final_alpha_cumprod),
                alpha_bar_at(self.alphas_cumprod, t_prev, self.final_alpha_cumprod))

    def steps(self, device: torch.device | str | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(t, alpha_bar_t, alpha_bar_prev) of every grid step, in order (the loop of ``common.sync``); the
        alpha_bars are copied to ``device`` (the sample's) once, not at every step."""
        return grid_alpha_bars(self.timesteps, self.alphas_cumprod, self.final_alpha_cumprod, device)


def schedule_from_config(config: dict[str, Any], num_inference_steps: int) -> DDIMSchedule:
    """DDIM grid from a diffusers scheduler config (SD: 981, 961, ..., 1; IF at 30 steps: 957, ..., 0)."""
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    T = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float32)
    else:
        betas = make_betas(config.get("beta_schedule", "linear"), T, float(config.get("beta_start", 1e-4)),
                           float(config.get("beta_end", 0.02)))
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    final = 1.0 if config.get("set_alpha_to_one", True) else float(alphas_cumprod[0])
    steps = inference_timesteps(num_inference_steps, T, config.get("timestep_spacing", "leading"),
                                int(config.get("steps_offset", 0)))
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type {prediction!r} is not supported (epsilon or v_prediction)")
    return DDIMSchedule(steps, alphas_cumprod, final, prediction)


def initial_noise(mapping: Mapping, canonical_shape: tuple[int, ...], num_instances: int,
                  instance_shape: tuple[int, ...], init: str, generator: torch.Generator) -> torch.Tensor:
    """x_T [N, ...]: f(z_T) of one canonical noise (``canonical``) or i.i.d. per instance (``independent``).

    Noise is drawn on the CPU generator, so a seed gives the same sample on every device.
    """
    if init == "canonical":
        return mapping.forward_mapping(torch.randn(canonical_shape, generator=generator))
    if init == "independent":
        return torch.randn((num_instances, *instance_shape), generator=generator)
    raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")


class NonFiniteSampleError(ValueError):
    """A sampling step produced NaN or inf (one line; a ``ValueError``, so CLIs print ``Error: ...``)."""


def _nonfinite_message(i: int, t: int) -> str:
    return (f"sampling produced NaN or inf at step {i} (t = {t}); check compute_tweedie, compute_prev_state and "
            "one_step_process, or use --precision fp32")


def check_step_finite(x: torch.Tensor, i: int, t: int) -> None:
    """Raise :class:`NonFiniteSampleError` naming the step when x holds NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteSampleError(_nonfinite_message(i, t))


STATE_BOUND = 1e3  # |x_t| of a sane run: noise ~N(0, 1), SD latents ~[-5, 5], pixels [-1, 1]; CFG 7.5-30 stays < 100
STATE_HINT = ("the guidance scale is probably far too high (CFG scales eps_cond - eps_uncond by it); "
              "lower --guidance_scale")
LAZY_DEVICES = ("cuda",)  # devices whose per-step checks are read a step late (tests add "cpu" to exercise it)


def check_step(x: torch.Tensor, i: int, t: int) -> None:
    """After step i: NaN/inf (:class:`NonFiniteSampleError`) or a blow-up far past any sane sample
    (``common.divergence.Diverged``, e.g. ``--guidance_scale 1e6``: CFG multiplies eps_c - eps_u by s), one line."""
    check_step_finite(x, i, t)
    check_bounded(x, STATE_BOUND, f"the sample x_t (t = {t})", step=i, hint=STATE_HINT)


class StepChecks(LazyChecks):
    """:func:`check_step` of every step (a ``common.sync`` CheckFn), read ``lag`` steps late on a GPU.

    A :class:`common.divergence.LazyChecks` whose NaN/inf verdict raises :class:`NonFiniteSampleError` with the
    message of :func:`check_step_finite`, so a late check reports exactly what the immediate one does (off
    ``lazy_devices``, e.g. on the CPU, each step is checked at once). Call :meth:`flush` after the loop.
    """

    def __init__(self, lag: int = 1, lazy_devices: tuple[str, ...] | None = None):
        super().__init__(lag, LAZY_DEVICES if lazy_devices is None else lazy_devices)

    def __call__(self, x: torch.Tensor, i: int, t: int) -> None:
        self.add(x, f"the sample x_t (t = {t})", i, STATE_BOUND, STATE_HINT, message=partial(_nonfinite_message, i, t),
                 error=NonFiniteSampleError)
        self.poll()


def sample(mapping: Mapping, eps_fn: EpsFn, schedule: DDIMSchedule, x_T: torch.Tensor, sync: str = "x0",
           canonical: bool = False, progress: bool = True, desc: str = "sync",
           checks: StepChecks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the full synchronized DDIM loop from instance noise x_T [N, ...].

    Returns (z_0 [1, ...] canonical, x_0 [N, ...] final instances). Instance mode: z_0 = g(x_0) (the skeleton
    then shows f(z_0)); with ``sync="none"`` x_0 are the independent samples. With ``canonical=True`` the
    canonical sample starts at g(x_T) (= z_T when x_T = f(z_T)) and is denoised directly; x_0 = f(z_0).
    Every step is checked by ``checks`` (a fresh :class:`StepChecks`: a step late on a GPU), all read before
    this returns.
    """
    step = canonical_one_step_process if canonical else one_step_process
    checks = StepChecks() if checks is None else checks
    x = mapping.inverse_mapping(x_T) if canonical else x_T  # canonical: z_T [1, ...]; else instances [N, ...]
    with tqdm(total=len(schedule.timesteps), desc=desc, disable=not progress, leave=False) as bar:
        x = sync_sample_loop(mapping, eps_fn, schedule.steps(x.device), x, sync, step, checks, bar)
    checks.flush()
    if canonical:
        return x, mapping.forward_mapping(x)
    return mapping.inverse_mapping(x), x

