"""Noise predictors eps_theta(x_t, t) for the synchronized sampler: text-conditioned UNets with CFG.

All instances go through the UNet in one batch per step ([uncond x N, cond x N], Ho & Salimans 2022 Eq. 6),
split into chunks of at most ``max_batch`` rows when memory requires. Each instance has its own prompt
embedding (one prompt for every window of a panorama, one prompt per view of an ambiguous image).
DeepFloyd IF predicts 2C channels (eps and a learned variance, Nichol & Dhariwal 2021 Sec. 3.1): the variance
half is split off (DDIM with eta = 0 never uses it).
"""

from __future__ import annotations

from typing import Any

import torch

from common.cfg import cfg_combine
from common.gpu import host_to_device
from common.tweedie import eps_from_v
from synchronization.core import DDIMSchedule


@torch.no_grad()
def encode_text(tokenizer: Any, text_encoder: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    """Per-token text features [B, L, D] as the diffusers pipelines make them (CLIP: no mask; T5: masked)."""
    is_t5 = getattr(text_encoder.config, "model_type", "") == "t5"
    max_length = 77 if is_t5 else int(getattr(tokenizer, "model_max_length", 77))  # IF: T5 with 77 tokens
    tokens = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    param = next(text_encoder.parameters())
    kwargs = {}
    if is_t5:  # DeepFloyd IF passes the attention mask
        kwargs["attention_mask"] = tokens.attention_mask.to(param.device)
    hidden = text_encoder(tokens.input_ids.to(param.device), **kwargs)[0]
    return hidden.to(param.dtype)


def split_eps_variance(model_output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a [B, 2C, H, W] IF output into (eps [B, C, ...], variance [B, C, ...]); C-channel outputs pass."""
    if model_output.shape[1] == channels:
        return model_output, None
    if model_output.shape[1] == 2 * channels:
        return model_output[:, :channels], model_output[:, channels:]
    raise ValueError(f"model predicts {model_output.shape[1]} channels for {channels}-channel inputs")


class TextDenoiser:
    """eps_hat(x_t, t) with classifier-free guidance for N instances.

    cond / uncond: prompt embeddings [N, L, D] (row i conditions instance i). ``condition`` (IF stage II): a
    [N, C', H, W] image concatenated to x_t along channels; ``class_labels``: IF-II's noise level.
    """

    def __init__(self, unet: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float,
                 schedule: DDIMSchedule, max_batch: int | None = None, condition: torch.Tensor | None = None,
                 class_labels: int | None = None):
        self.unet, self.cond, self.uncond = unet, cond, uncond
        self.guidance_scale, self.schedule = float(guidance_scale), schedule
        self.max_batch = max_batch
        self.condition, self.class_labels = condition, class_labels
        self.calls = 0  # UNet forward calls, for benchmarks
        self._constants: dict[str, torch.Tensor] = {}  # step-invariant tensors on the sample's device

    def _constant(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Step-invariant tensors, built on ``like``'s device once instead of at every step (a Python scalar or a
        CPU tensor sent to a GPU is copied from pageable memory, which makes the CPU wait for the GPU)."""
        if name not in self._constants:
            self._constants[name] = {
                "embeds": lambda: torch.cat([self.uncond, self.cond]),  # [2N, L, D]: both CFG branches
                "condition": lambda: self.condition.to(like),  # [N, C', H, W] (IF stage II)
                "scale": lambda: host_to_device(torch.tensor(self.guidance_scale, dtype=torch.float32), like.device),
                "alphas_cumprod": lambda: host_to_device(self.schedule.alphas_cumprod, like.device),  # [T]
            }[name]()
        return self._constants[name]

    def _unet(self, x: torch.Tensor, t: int, embeds: torch.Tensor) -> torch.Tensor:
        param = next(self.unet.parameters())
        chunk = self.max_batch or x.shape[0]
        outs = []
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk].to(param.dtype)
            kwargs = {}
            if self.class_labels is not None:
                kwargs["class_labels"] = torch.full((xb.shape[0],), self.class_labels, device=xb.device)
            tt = torch.full((xb.shape[0],), t, device=xb.device, dtype=torch.long)
            outs.append(self.unet(xb, tt, encoder_hidden_states=embeds[start : start + chunk], **kwargs).sample)
            self.calls += 1
        return torch.cat(outs)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        n, c = x_t.shape[:2]
        x_in = x_t if self.condition is None else torch.cat([x_t, self._constant("condition", x_t)], dim=1)
        if self.guidance_scale == 1.0:
            eps, _ = split_eps_variance(self._unet(x_in, t, self.cond), c)
        else:
            out = self._unet(torch.cat([x_in, x_in]), t, self._constant("embeds", x_t))
            eps_both, _ = split_eps_variance(out, c)
            eps = cfg_combine(eps_both[:n].float(), eps_both[n:].float(), self._constant("scale", x_t))
        if self.schedule.prediction_type == "v_prediction":
            a_t = self._constant("alphas_cumprod", x_t)[t]  # 0-d, on x_t's device
            eps = eps_from_v(x_t.float(), eps.float(), a_t)
        return eps.to(x_t.dtype)
