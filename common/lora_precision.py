"""A peft LoRA trained in float32 and computed in its frozen model's dtype (fp16 / bf16): mixed precision.

A peft LoRA layer computes y = W x + s B(A(x)) (Hu et al. 2022, Eq. 3) after casting x to the dtype of A's weight
(peft ``lora.Linear.forward``: ``_cast_input_dtype``). Kept in float32 for AdamW (an fp16 weight of |w| ~ 0.25 has
a spacing of 2.4e-4 and would drop lr-1e-4 updates), a LoRA inside an fp16 UNet casts every attention input to
float32 and runs float32 GEMMs on CUDA cores: on an H200 that made VSD's LoRA fit 30 % slower than the same fit
computed in fp16 (SD 2.1 base, 10 prompts: 97.5 vs 79.5 ms, ``benchmarks/probe_vsd_parts.py``), and the [3B]
no-grad call ~40 % slower than the same call without a LoRA.

:func:`compute_lora_in` keeps each LoRA weight's float32 tensor as the trainable parameter (the optimiser's master
copy, as diffusers' LoRA training scripts keep it) and makes the layer see ``weight.to(dtype)`` through a
``torch.nn.utils.parametrize`` parametrization: a differentiable cast, so the GEMMs run in the frozen model's dtype
and the gradient reaches the float32 master (cast back to float32). The cast is recomputed at every access, so
in-place optimiser updates of the master are seen by the next call, also inside a CUDA graph (it reads the
master's memory). Not torch.autocast: it would also move the frozen model's norms and softmax to float32.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize


class CastTo(torch.nn.Module):
    """The parametrization weight -> weight.to(dtype) (differentiable: the gradient is cast back)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(self.dtype)


def lora_weight_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The lora_A / lora_B submodules (one per adapter) of every peft LoRA layer in ``model``."""
    from common.lora_mix import lora_layers

    return [sub for layer in lora_layers(model) for table in (layer.lora_A, layer.lora_B) for sub in table.values()]


def compute_lora_in(model: torch.nn.Module, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    """Make every peft LoRA weight of ``model`` float32 (the trainable parameter) computed in ``dtype``.

    Returns the float32 LoRA parameters (those that require grad). With ``dtype`` float32 nothing is
    parametrized (the weights are only made float32). Calling it again re-targets the cast to ``dtype``.
    Raises ValueError without LoRA layers.
    """
    modules = lora_weight_modules(model)
    if not modules:
        raise ValueError("compute_lora_in: the model has no peft LoRA layers")
    params = []
    for module in modules:
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight.data = module.weight.data.float()
        if dtype != torch.float32:
            parametrize.register_parametrization(module, "weight", CastTo(dtype), unsafe=True)  # dtype changes
            params.append(module.parametrizations.weight.original)
        else:
            params.append(module.weight)
    return [p for p in params if p.requires_grad]


def lora_compute_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype the LoRA weights of ``model`` compute in (the first lora_A's), None without a LoRA."""
    modules = lora_weight_modules(model)
    return modules[0].weight.dtype if modules else None


__all__ = ["CastTo", "compute_lora_in", "lora_compute_dtype", "lora_weight_modules"]
