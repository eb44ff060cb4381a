"""A seeded tiny latent-diffusion stand-in that the distillation cases share (``grading/cases/{sds,vsd,sdi,pds}.py``).

:class:`TinyUNet` answers the calls :class:`distillation.guidance.Guidance` and a student make of diffusers'
``UNet2DConditionModel``: ``unet(sample, timestep, encoder_hidden_states=..., cross_attention_kwargs=...,
return_dict=...)`` returning an output with ``.sample`` (also indexable, ``[0]``), and the adapter switches
``disable_adapters()`` / ``enable_adapters()`` over a LoRA on the cross-attention projections named like diffusers'
(``to_q``, ``to_k``, ``to_v``, ``to_out.0``; Hu et al. 2022, W x + scale B A x). It is a small nonlinear
eps-predictor (conv -> +time embedding -> cross-attention to the text -> conv) whose prediction depends on x_t, t
and the prompt, so every CFG, weighting, timestep and adapter mistake changes the outputs; it is float32, built in
milliseconds from the case's generator (so its weights change with the grading seed) and needs neither diffusers
nor peft (their imports alone would cost more than all the cases). The LoRA's B is drawn non-zero (unlike peft's
zero init) so the adapters change the prediction from the first call.

Nothing here imports ``distillation`` at import time: :func:`make_guidance` imports it inside the case's ``run``,
in the sandboxed worker, over the tree that holds the student's code.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import torch
from torch import nn

CHANNELS, TEXT_DIM, WIDTH = 4, 16, 8  # latent channels C, text embedding D, UNet width
T_MIN, T_MAX = 20, 980  # the handouts' t range U[0.02, 0.98] * 1000
LORA_RANK = 4  # NYCU Lab 3 --lora_rank 4


def generator(seed: int, salt: str) -> torch.Generator:
    """CPU generator of one case: the grading seed mixed with the case's salt; also pins torch's global RNG.

    A student's stray ``torch.randn`` in a region (against the rules) then draws the same numbers on every run of
    the case, so the outputs of a catalogued mistake that does so are reproducible.
    """
    mixed = (seed * 1_000_003 + zlib.crc32(salt.encode())) % (2**63)
    torch.manual_seed(mixed ^ 0x5EED)
    return torch.Generator().manual_seed(mixed)


def randint(g: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def latents(g: torch.Generator, batch: int) -> torch.Tensor:
    """Latents [B, 4, h, w] with h, w drawn from the seed in [4, 8] (hard-coded shapes do not pass)."""
    return randn(g, batch, CHANNELS, randint(g, 4, 8), randint(g, 4, 8))


def embeddings(g: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Text embeddings [2B, L, D] = cat(uncond, cond), unconditional first (the handouts' order)."""
    return randn(g, 2 * batch, length, TEXT_DIM)


def output(x: torch.Tensor | float) -> torch.Tensor:
    """A returned tensor: detached float64 CPU, contiguous, owning its memory (safetensors refuses shared storage)."""
    return torch.as_tensor(x).detach().to("cpu", torch.float64).contiguous().clone()


def per_sample(name: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{name_b: output(x[b])}``: one tensor per prompt, so each is scored against its own scale (the error is
    max |diff| / max |expected| per tensor, and a t = 20 gradient is ~50x smaller than a t = 980 one)."""
    return {f"{name}_{b}": output(x[b]) for b in range(x.shape[0])}


def alphas_cumprod() -> torch.Tensor:
    """alpha_bar_t [1000] of Stable Diffusion's scheduler (scaled_linear betas 0.00085 -> 0.012)."""
    from common.schedules import make_alphas_cumprod

    return make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)


class UNetOutput:
    """diffusers' ``UNet2DConditionOutput`` as far as callers use it: ``.sample`` and ``[0]``."""

    def __init__(self, sample: torch.Tensor):
        self.sample = sample

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.sample,)[index]


class LoRALinear(nn.Module):
    """y = W x + b + scale (B A x) while the adapter is enabled (Hu et al. 2022, Eq. 3); plain W x + b without one."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.lora_A: nn.Parameter | None = None  # [r, in]
        self.lora_B: nn.Parameter | None = None  # [out, r]
        self.enabled, self.scale = True, 1.0

    def add_lora(self, g: torch.Generator, rank: int) -> list[nn.Parameter]:
        fan_in, fan_out = self.base.in_features, self.base.out_features
        self.lora_A = nn.Parameter(torch.randn(rank, fan_in, generator=g) / math.sqrt(fan_in))
        self.lora_B = nn.Parameter(torch.randn(fan_out, rank, generator=g) / math.sqrt(rank))
        return [self.lora_A, self.lora_B]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.lora_A is not None and self.enabled and self.scale:
            y = y + self.scale * (x @ self.lora_A.T) @ self.lora_B.T
        return y


class TinyUNet(nn.Module):
    """eps_hat(x_t, t, y) [N, 4, h, w] for x_t [N, 4, h, w], t [N] (or a scalar), y [N, L, 16]; see the module doc."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        self.conv_in = nn.Conv2d(CHANNELS, WIDTH, 3, padding=1)
        self.time_proj = nn.Linear(8, WIDTH)
        self.to_q = LoRALinear(nn.Linear(WIDTH, WIDTH))
        self.to_k = LoRALinear(nn.Linear(TEXT_DIM, WIDTH))
        self.to_v = LoRALinear(nn.Linear(TEXT_DIM, WIDTH))
        self.to_out = nn.ModuleList([LoRALinear(nn.Linear(WIDTH, WIDTH))])
        self.conv_out = nn.Conv2d(WIDTH, CHANNELS, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        self.config = _Config(CHANNELS, 8, TEXT_DIM)

    def lora_layers(self) -> list[LoRALinear]:
        return [self.to_q, self.to_k, self.to_v, self.to_out[0]]

    def add_lora(self, g: torch.Generator, rank: int = LORA_RANK) -> list[nn.Parameter]:
        """Add the LoRA (A and B drawn from ``g``, B non-zero) and return its parameters, which require grad."""
        return [p for layer in self.lora_layers() for p in layer.add_lora(g, rank)]

    def disable_adapters(self) -> None:
        for layer in self.lora_layers():
            layer.enabled = False

    def enable_adapters(self) -> None:
        for layer in self.lora_layers():
            layer.enabled = True

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                cross_attention_kwargs: dict | None = None, return_dict: bool = True, **unused):
        N, _, H, W = sample.shape
        t = torch.as_tensor(timestep, device=sample.device).float().reshape(-1).expand(N)  # [N]
        freqs = torch.arange(1, 5, dtype=torch.float32, device=sample.device)  # [4]
        phase = t[:, None] / 1000 * freqs[None, :] * math.pi  # [N, 4]
        temb = self.time_proj(torch.cat([phase.sin(), phase.cos()], dim=1))  # [N, WIDTH]
        h = torch.tanh(self.conv_in(sample) + temb[:, :, None, None])  # [N, WIDTH, H, W]
        scale = (cross_attention_kwargs or {}).get("scale", 1.0)
        for layer in self.lora_layers():
            layer.scale = scale
        tokens = h.flatten(2).transpose(1, 2)  # [N, HW, WIDTH]
        q, k, v = self.to_q(tokens), self.to_k(encoder_hidden_states), self.to_v(encoder_hidden_states)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(WIDTH), dim=-1) @ v  # [N, HW, WIDTH]
        h = h + self.to_out[0](attn).transpose(1, 2).reshape(N, WIDTH, H, W)
        eps = self.conv_out(torch.tanh(h)) + 0.5 * sample * (t / 1000).view(-1, 1, 1, 1)  # [N, 4, H, W]
        return UNetOutput(eps) if return_dict else (eps,)


class _Config(dict):
    """The few ``unet.config`` fields a caller may read (attribute and key access, like diffusers' FrozenDict)."""

    def __init__(self, in_channels: int, sample_size: int, cross_attention_dim: int):
        super().__init__(in_channels=in_channels, sample_size=sample_size, cross_attention_dim=cross_attention_dim)
        self.__dict__.update(self)


def make_guidance(g: torch.Generator, lora: bool = False):
    """(Guidance over a fresh TinyUNet drawn from ``g``, the UNet, its LoRA parameters or []).

    The Guidance is built as the homeworks build it (t in [20, 980], w(t) = 1 - alpha_bar_t); with ``lora`` the
    LoRA is added after the Guidance froze the UNet, so only the LoRA parameters require grad, and it is
    registered as ``guidance.lora_params`` as ``init_vsd`` does.
    """
    from distillation.guidance import Guidance

    unet = TinyUNet(g)
    guidance = Guidance(unet, None, alphas_cumprod(), t_min=T_MIN, t_max=T_MAX)
    params = unet.add_lora(g) if lora else []
    guidance.lora_params = params
    return guidance, unet, params


def grad_of(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """dL/dx of a loss that takes the optimised latents (a fresh leaf copy of ``x``)."""
    v = x.clone().requires_grad_(True)
    loss_fn(v).backward()
    return v.grad


def watch_parameters(module: nn.Module) -> dict[str, float]:
    """Make every parameter of ``module`` require grad and count what reaches it (a hook per parameter).

    Returns the live tally {"calls", "abs_sum"}: both stay 0 unless something back-propagates into the module.
    """
    tally = {"calls": 0.0, "abs_sum": 0.0}

    def hook(grad: torch.Tensor) -> None:
        tally["calls"] += 1
        tally["abs_sum"] += float(grad.detach().abs().sum())

    for p in module.parameters():
        p.requires_grad_(True)
        p.register_hook(hook)
    return tally
