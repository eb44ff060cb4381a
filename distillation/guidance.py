"""Score distillation guidance: a thin wrapper around a text-to-image latent diffusion model (unet, vae, text
encoder, noise schedule) that carries one loss per method, one method per file (diffusers' scheduler style):
:mod:`distillation.sds`, :mod:`~distillation.vsd`, :mod:`~distillation.sdi`, :mod:`~distillation.pds`,
:mod:`~distillation.dds`, :mod:`~distillation.ism`.

Every ``get_*_loss`` returns a scalar whose gradient with respect to the optimised latents is the method's update
direction g (the stop-gradient target trick): ``loss = 1/2 sum (x - sg(x - g))^2``. Reduction convention: **sum**
over all elements and over the batch (no mean, no division by B), so for every prompt b of a batch
dL/dx_b = g_b exactly, independent of the batch size and the latent resolution (Adam is invariant to that scale).
The student's math is one small function per method (between solution markers) that takes the drawn t and
noises and returns g; the public ``get_*_loss`` around it draws them, runs it without autograd, raises
:class:`distillation.update.NonFiniteUpdate` on a NaN/inf g and leaves the diagnostics of the last call
(x0_hat, g, t) in ``self.aux`` for the progress previews.

Conventions: text embeddings are ``cat([uncond, cond])`` ([2B, L, D], unconditional first, as in the KAIST and
NYCU handouts); CFG is ``common.cfg.cfg_combine`` eps_u + s (eps_c - eps_u) (diffusers' form; threestudio's SDS
scale s is our s + 1); timesteps t are LongTensor [B] (one per prompt); randomness comes from ``noise=`` or from
one ``torch.Generator`` per prompt (``generators=``), so a prompt's result does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from common.cfg import cfg_combine, split_cfg_batch
from common.divergence import LazyChecks
from common.gpu import host_to_device, randn_per_sample
from common.graphs import CudaGraphUNet, graph_rows
from common.lora_precision import LoraMasters
from common.schedules import alpha_bar_at, make_alphas_cumprod, make_betas
from common.tweedie import eps_from_v
from distillation.dds import DDSMixin
from distillation.ism import ISMMixin
from distillation.pds import PDSMixin
from distillation.schedules import weight
from distillation.sdi import SDIMixin
from distillation.sds import SDSMixin
from distillation.vsd import VSDMixin

METHODS = ("sds", "vsd", "sdi", "pds", "ism", "dds")


def _named_schedule(cfg: Any) -> bool:
    """Whether a scheduler config is a beta schedule that ``common.schedules`` rebuilds (linear, scaled_linear)."""
    return cfg.get("trained_betas") is None and cfg.get("beta_schedule") in ("linear", "scaled_linear")


def alphas_cumprod_of(scheduler: Any) -> torch.Tensor:
    """alpha_bar_t [T] from a diffusers scheduler config through ``common.schedules`` (fallback: its own array)."""
    cfg = scheduler.config
    if _named_schedule(cfg):
        return make_alphas_cumprod(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    return scheduler.alphas_cumprod.float()


def betas_of(scheduler: Any) -> torch.Tensor:
    """The one-step beta_t [T] of a diffusers scheduler config (PDS's official posterior uses betas[t])."""
    cfg = scheduler.config
    if _named_schedule(cfg):
        return make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    return scheduler.betas.float()


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} [T] (alpha_bar_{-1} = 1), in float64 then float32."""
    a = alphas_cumprod.double()
    return (1 - a / torch.cat([a.new_ones(1), a[:-1]])).float()


class Guidance(SDSMixin, VSDMixin, SDIMixin, PDSMixin, ISMMixin, DDSMixin):
    """Frozen latent diffusion model + the distillation losses (SDS, VSD, SDI, PDS, ISM, DDS; one mixin each)."""

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module | None, alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", t_min: int = 20, t_max: int = 980, w_schedule: str = "dreamfusion",
                 betas: torch.Tensor | None = None):
        self.unet, self.vae = unet.requires_grad_(False).eval(), vae
        if vae is not None:
            vae.requires_grad_(False).eval()
        self.device = next(unet.parameters()).device
        self.dtype = next(unet.parameters()).dtype
        self.alphas_cumprod = alphas_cumprod.float().to(self.device)  # [T], alpha_bar_t
        if betas is None:
            betas = betas_from_alphas_cumprod(alphas_cumprod)
        self.betas = betas.float().to(self.device)  # [T], the one-step beta_t of the training schedule
        self.inversion_embeddings: torch.Tensor | None = None  # ISM: empty-prompt embedding [1 or B, L, D]
        self.prediction_type = prediction_type
        self.t_min, self.t_max, self.w_schedule = t_min, t_max, w_schedule
        self.aux: dict[str, torch.Tensor] = {}
        self.sdi_target: torch.Tensor | None = None
        self.lora_params: list[torch.nn.Parameter] = []
        self.lora_masters: LoraMasters | None = None  # set by init_vsd: float32 masters of a low-precision LoRA
        # None: a NaN/inf update raises NonFiniteUpdate at once; the runner sets a LazyChecks (queued, read a
        # step late, so a GPU step never waits) and the step its checks are named after
        self.checks: LazyChecks | None = None
        self.check_step: int | None = None

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> Guidance:
        """Build from a diffusers ``StableDiffusionPipeline`` (its text encoder is only used by encode_prompts)."""
        return cls(pipe.unet, pipe.vae, alphas_cumprod_of(pipe.scheduler),
                   pipe.scheduler.config.get("prediction_type", "epsilon"), betas=betas_of(pipe.scheduler), **kwargs)

    # -------------------------------------------------------------------------------------------------------
    # Model calls

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar_t for t [B] (float32 [B]); t = -1 gives 1."""
        return alpha_bar_at(self.alphas_cumprod, self.on_device(t))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """The training schedule's one-step beta_t for t [B] (float32 [B])."""
        return self.betas[self.on_device(t)]

    def weight(self, t: torch.Tensor, w_schedule: str | None = None) -> torch.Tensor:
        """w(t) [B] of the w-schedule (``self.w_schedule`` unless given)."""
        return weight(w_schedule or self.w_schedule, self.alpha_bar(t)).to(self.device)

    def unet_eps(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
        """eps_hat(x_t, t, y) of the UNet for [N] samples, in float32 (v-prediction converted to eps).

        t [N] on the device or the host (copied without making the CPU wait). ``rows`` [N] bool on the host:
        compute only those samples (one smaller UNet call; the others are 0), for ISM's inversion chain, where
        samples that reached s sooner idle; a UNet that replays CUDA graphs gets the call padded with idle rows
        to one of a few sizes (:func:`graph_rows`), so the chain needs a handful of graphs, not one per count.
        ``rows`` on the device is ignored (every row runs): its count would make the CPU wait for the GPU at
        every call (an H200, eager ISM at 10 prompts: 201 -> 456 ms per step).
        """
        t = self.on_device(t)
        if self.lora_masters is not None:
            self.lora_masters.push()  # the last optimiser step into the LoRA layers (a no-op if unchanged)
        if rows is not None and x_t.shape[0] > 1 and rows.device.type == "cpu":
            index = rows.nonzero().squeeze(1)  # [M]: the rows that run
            m = index.numel()
            if m < x_t.shape[0]:
                out = torch.zeros(x_t.shape, dtype=torch.float32, device=x_t.device)
                if m:
                    if self.replays_graphs(x_t):
                        index = torch.cat([index, (~rows).nonzero().squeeze(1)])[:graph_rows(m, x_t.shape[0])]
                    index = host_to_device(index, x_t.device)
                    picked = [v.index_select(0, index) for v in (x_t, t, embeddings.to(x_t.device))]
                    out.index_copy_(0, index[:m], self.unet_eps(*picked)[:m])
                return out
        out = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=embeddings.to(self.dtype)).sample.float()
        if self.prediction_type == "v_prediction":
            out = eps_from_v(x_t.float(), out, self.alpha_bar(t))
        return out

    def on_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device; from the host without making the CPU wait (``common.gpu.host_to_device``)."""
        return host_to_device(x, self.device)

    def replays_graphs(self, x: torch.Tensor) -> bool:
        """Whether the UNet replays CUDA graphs for inputs like ``x`` (a wrapper that is on, on x's device)."""
        return isinstance(self.unet, CudaGraphUNet) and self.unet.replays(x)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, text_embeddings: torch.Tensor,
                    guidance_scale: float | torch.Tensor) -> torch.Tensor:
        """CFG prediction eps_u + s (eps_c - eps_u) with ONE UNet call on the [2N] batch ``cat([x_t, x_t])``."""
        eps_both = self.unet_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), text_embeddings)
        eps_uncond, eps_cond = split_cfg_batch(eps_both)
        return cfg_combine(eps_uncond, eps_cond, guidance_scale)

    def randn(self, like: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        """Standard normal noise shaped like ``like``, one draw per sample from its own generator."""
        if generators is None:
            return torch.randn(like.shape, device=like.device, dtype=torch.float32)
        return randn_per_sample(tuple(like.shape[1:]), list(generators), device=like.device, dtype=torch.float32)

    def randint(self, low: int, high: int, n: int, generators: Sequence[torch.Generator] | None,
                host: bool = False) -> torch.Tensor:
        """Integers in [low, high] ([n] long), one per sample from its own generator. ``host``: returned where
        they are drawn, i.e. on the CPU for CPU generators or none (then the global CPU generator)."""
        if generators is None:
            return torch.randint(low, high + 1, (n,), device="cpu" if host else self.device)
        draws = torch.cat([torch.randint(low, high + 1, (1,), generator=g, device=g.device) for g in generators])
        return draws if host else host_to_device(draws, self.device)  # to CUDA: pinned, non-blocking

    def draw_t(self, n: int, t: torch.Tensor | None, generators: Sequence[torch.Generator] | None,
               host: bool = False) -> torch.Tensor:
        """t [n] long on the device: the given one, else t ~ U[t_min, t_max] (one draw per sample). ``host``: a
        t on the CPU stays there (given, or drawn there: :meth:`randint`), so schedule arithmetic on it, such as
        ISM's inversion grid, never waits for the GPU."""
        if t is None:
            return self.randint(self.t_min, self.t_max, n, generators, host)
        return t if host and t.device.type == "cpu" else t.to(self.device)

    def draw_noise(self, like: torch.Tensor, noise: torch.Tensor | None,
                   generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        """The given noise, else eps ~ N(0, I) shaped like ``like`` (one draw per sample)."""
        return self.randn(like, generators) if noise is None else noise

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> scaled latents (posterior mean x scaling_factor); differentiable."""
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return dist.mean.float() * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images [B, 3, H, W] in [-1, 1] (float32)."""
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return images.float().clamp(-1, 1)


def encode_prompts(tokenizer: Any, text_encoder: torch.nn.Module, prompts: Sequence[str],
                   device: torch.device | str) -> torch.Tensor:
    """Text encoder hidden states [N, L, D] for ``prompts`` (padded to the tokenizer's max length)."""
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0].float().to(device)

