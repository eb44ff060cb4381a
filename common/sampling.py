"""Reference sampling loops over an eps function: DDIM (Song et al. 2021, Eq. 12) and DDPM (Ho et al. 2020, Alg. 2).

Code that is not a homework (toy training and evaluation, benchmarks, DPS) samples with these loops, which are built
only on ``common.ddim.ddim_step``, ``common.ddpm.ddpm_step`` and ``common.schedules``; the student schedulers of
``ddpm_ddim`` are never called from outside that package. With the same config the loops equal
``ddpm_ddim.schedulers`` and diffusers' ``DDIMScheduler`` / ``DDPMScheduler`` step for step (the previous timestep
is the next grid entry, see ``common.schedules.previous_timesteps``).

Randomness: x_T is passed in; noise for DDIM eta > 0 and for DDPM comes from ``generators``, one generator per
sample and one draw per step (``common.gpu.randn_per_sample``), so a sample does not depend on its batch.
Also here: the diffusers ``UNet2DModel`` glue (:func:`unet_eps`, :func:`model_shape`, :func:`load_model`) and the
sampling part of a diffusers scheduler config (:class:`SamplingConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from common.ddim import ddim_step
from common.ddpm import VARIANCE_TYPES, ddpm_step
from common.gpu import host_to_device, make_generators, randn_per_sample
from common.schedules import SPACINGS, alpha_bar_at, alphas_cumprod_from_betas, inference_timesteps, make_betas

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # eps_fn(x_t [B, C, H, W], t) -> eps_hat [B, C, H, W]
SAMPLERS = ("DDPM", "DDIM")


# ---------------------------------------------------------------------------------------------------------------
# Grids and loops


def grid_alpha_bars(timesteps: Sequence[int] | torch.Tensor, alphas_cumprod: torch.Tensor,
                    final_alpha_cumprod: float = 1.0, device: torch.device | str | None = None,
                    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(t, alpha_bar_t, alpha_bar_prev) for each step of a descending grid; after the last step alpha_bar_prev is
    ``final_alpha_cumprod`` (1 = a clean sample; DDIM's ``set_alpha_to_one=False`` uses alpha_bar_0). float32 0-d.

    The values live on ``device`` (default: alphas_cumprod's), copied there once for the whole grid through pinned
    memory (``common.gpu.host_to_device``): a CPU 0-d coefficient met by a CUDA sample is copied from pageable
    memory at every use (``common._broadcast.expand_as``), and each such copy makes the CPU wait for the GPU.
    """
    steps = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {steps[:8]}...")
    grid = torch.tensor(steps + [-1], dtype=torch.long)  # [S + 1]: the grid, then -1 after the last step
    bars = alpha_bar_at(alphas_cumprod, grid, final_alpha_cumprod)  # [S + 1] float32
    bars = host_to_device(bars, device if device is not None else alphas_cumprod.device)  # pinned, no wait
    for i, t in enumerate(steps):
        yield t, bars[i], bars[i + 1]


def _step_noise(x: torch.Tensor, generators: list[torch.Generator] | None, what: str) -> torch.Tensor:
    """One fp32 N(0, I) draw per sample, [B, C, H, W] on x's device."""
    if generators is None:
        raise ValueError(f"{what} needs `generators` (one per sample) for its noise")
    if len(generators) != x.shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {x.shape[0]}")
    return randn_per_sample(tuple(x.shape[1:]), generators, device=x.device, dtype=torch.float32)


def ddim_sample_loop(eps_fn: EpsFn, x_T: torch.Tensor, timesteps: Sequence[int] | torch.Tensor,
                     alphas_cumprod: torch.Tensor, eta: float = 0.0, generators: list[torch.Generator] | None = None,
                     clip_sample: float | None = None, final_alpha_cumprod: float = 1.0,
                     progress: Any = None) -> torch.Tensor:
    """DDIM from x_T down the descending ``timesteps`` (DDIM Eq. 12, sigma_t(eta) of Eq. 16). Returns x_0 [B, C, H, W]
    in x_T's dtype, not clamped.

    ``clip_sample`` clamps x0_hat to [-c, c] at every step; with eta > 0 each step draws one noise per sample from
    ``generators``. ``progress`` (a tqdm bar) is updated once per step. Differentiable unless called under no_grad.
    """
    x = x_T
    for t, alpha_bar_t, alpha_bar_prev in grid_alpha_bars(timesteps, alphas_cumprod, final_alpha_cumprod, x.device):
        eps_hat = eps_fn(x, t)  # [B, C, H, W]
        noise = _step_noise(x, generators, "DDIM with eta > 0") if eta > 0 else None
        x, _ = ddim_step(x, eps_hat, alpha_bar_t, alpha_bar_prev, eta, noise, clip_sample)
        if progress is not None:
            progress.update(1)
    return x


def ddpm_sample_loop(eps_fn: EpsFn, x_T: torch.Tensor, timesteps: Sequence[int] | torch.Tensor,
                     alphas_cumprod: torch.Tensor, generators: list[torch.Generator],
                     variance_type: str = "fixed_small", clip_sample: float | None = None,
                     progress: Any = None) -> torch.Tensor:
    """Ancestral DDPM from x_T down the descending ``timesteps`` (Ho et al. 2020, Alg. 2, on any grid: Nichol &
    Dhariwal 2021, Sec. 4). Returns x_0 [B, C, H, W] in x_T's dtype, not clamped.

    Every step with t > 0 adds sqrt(var) z with z one draw per sample from ``generators``; the step at t = 0 adds none.
    """
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"unknown variance_type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}")
    x = x_T
    for t, alpha_bar_t, alpha_bar_prev in grid_alpha_bars(timesteps, alphas_cumprod, 1.0, x.device):
        eps_hat = eps_fn(x, t)  # [B, C, H, W]
        noise = _step_noise(x, generators, "DDPM") if t > 0 else None
        x, _ = ddpm_step(x, eps_hat, alpha_bar_t, alpha_bar_prev, noise, variance_type, clip_sample)
        if progress is not None:
            progress.update(1)
    return x


# ---------------------------------------------------------------------------------------------------------------
# Scheduler configs


@dataclass(frozen=True)
class SamplingConfig:
    """What sampling needs from a diffusers DDPM/DDIM scheduler config (epsilon prediction)."""

    alphas_cumprod: torch.Tensor  # [T] float32, alpha_bar_t
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    clip_sample: float | None = 1.0  # clip_sample_range, or None without clip_sample
    final_alpha_cumprod: float = 1.0  # DDIM: 1 with set_alpha_to_one, else alpha_bar_0 (DDPM always uses 1)
    variance_type: str = "fixed_small"  # DDPM

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Descending int64 inference grid (``common.schedules.inference_timesteps``)."""
        return inference_timesteps(num_inference_steps, self.num_train_timesteps, self.timestep_spacing,
                                   self.steps_offset)


def sampling_config(config: dict[str, Any], **overrides: Any) -> SamplingConfig:
    """:class:`SamplingConfig` of a diffusers scheduler config dict, with diffusers' defaults for missing keys.

    ``overrides`` (e.g. ``timestep_spacing=``) replace config keys; None values are ignored.
    """
    cfg = {**dict(config), **{k: v for k, v in overrides.items() if v is not None}}
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"only epsilon-prediction models are supported, got {cfg['prediction_type']!r}")
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    T = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    else:
        betas = make_betas(cfg.get("beta_schedule", "linear"), T, cfg.get("beta_start", 1e-4),
                           cfg.get("beta_end", 0.02))
    alphas_cumprod = alphas_cumprod_from_betas(betas)  # [T]
    final = 1.0 if cfg.get("set_alpha_to_one", True) else float(alphas_cumprod[0])
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", True) else None
    return SamplingConfig(alphas_cumprod, spacing, int(cfg.get("steps_offset", 0)), clip, final,
                          cfg.get("variance_type", "fixed_small"))


# ---------------------------------------------------------------------------------------------------------------
# UNet2DModel glue and batched sampling


def unet_eps(unet: torch.nn.Module, x_t: torch.Tensor, t: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """eps_hat = eps_theta(x_t, t) from a diffusers ``UNet2DModel``, returned in float32. x_t: [B, C, H, W]."""
    dtype = dtype or next(unet.parameters()).dtype
    timesteps = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
    return unet(x_t.to(dtype), timesteps).sample.float()


def model_shape(unet: torch.nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the samples a ``UNet2DModel`` makes."""
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return int(cfg.in_channels), int(size), int(size)


def load_model(name: str, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(UNet2DModel in eval mode without grads, scheduler config) of a registry name or local DDPM folder."""
    from common.registry import load_ddpm

    unet, config = load_ddpm(name, device, dtype)
    return unet.eval().requires_grad_(False), config


def sample_in_batches(sample_batch: Callable[[list[torch.Generator], Any], torch.Tensor], num_samples: int,
                      steps_per_batch: int, device: torch.device | str, seed: int = 0, batch_size: int = 10,
                      progress: bool = True) -> torch.Tensor:
    """Concatenate ``sample_batch(generators, bar)`` over batches; sample i uses a generator seeded ``seed + i``.

    ``bar`` is a tqdm bar of ``steps_per_batch`` steps per batch (``sample_batch`` updates it).
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError("num_samples and batch_size must be >= 1")
    outputs = []
    with tqdm(total=-(-num_samples // batch_size) * steps_per_batch, desc="sampling", unit="step",
              disable=not progress, leave=False) as bar:
        for start in range(0, num_samples, batch_size):
            seeds = range(seed + start, seed + min(num_samples, start + batch_size))
            outputs.append(sample_batch(make_generators(seeds, device), bar))
    return torch.cat(outputs)


@torch.no_grad()
def sample_unet(unet: torch.nn.Module, config: SamplingConfig, sampler: str, num_inference_steps: int,
                generators: list[torch.Generator], eta: float = 0.0, progress: Any = None) -> torch.Tensor:
    """One batch from a ``UNet2DModel`` with the reference DDIM or DDPM loop: x_T from ``generators``, then the
    chain. Returns [B, C, H, W] float32 clamped to [-1, 1] on the UNet's device."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    device = next(unet.parameters()).device
    x_T = randn_per_sample(model_shape(unet), generators, device=device, dtype=torch.float32)  # x_T ~ N(0, I)
    timesteps = config.timesteps(num_inference_steps)

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return unet_eps(unet, x_t, t)

    if sampler == "DDIM":
        x = ddim_sample_loop(eps_fn, x_T, timesteps, config.alphas_cumprod, eta, generators, config.clip_sample,
                             config.final_alpha_cumprod, progress)
    else:
        x = ddpm_sample_loop(eps_fn, x_T, timesteps, config.alphas_cumprod, generators, config.variance_type,
                             config.clip_sample, progress)
    return x.clamp(-1, 1)


def sample_images(unet: torch.nn.Module, config: SamplingConfig, sampler: str, num_samples: int,
                  num_inference_steps: int, seed: int = 0, batch_size: int = 10, eta: float = 0.0,
                  progress: bool = True) -> torch.Tensor:
    """``num_samples`` images [N, C, H, W] float32 in [-1, 1] with the reference sampler, in batches (sample i uses
    seed + i, so it does not depend on the batch size)."""
    device = next(unet.parameters()).device
    return sample_in_batches(
        lambda gens, bar: sample_unet(unet, config, sampler, num_inference_steps, gens, eta, bar),
        num_samples, num_inference_steps, device, seed, batch_size, progress)
