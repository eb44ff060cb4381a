"""Mixed-adapter batches for a peft LoRA inside a diffusers model: one forward, the LoRA on some samples only.

A peft LoRA layer computes y = W x + s B(A(x)) (Hu et al. 2022, Eq. 3; peft ``lora.Linear`` / ``lora.Conv2d``,
B without bias). Inside :func:`mixed_adapters` a forward hook multiplies A(x) [N, ..., r] by a per-sample 0/1
mask, so sample i gets W x_i exactly (``"__base__"``, as with the adapters disabled) or W x_i + s B A x_i (the
adapter). Why not peft's own ``adapter_names=[...]`` mixed batch: its ``_mixed_batch_forward`` indexes with
Python lists (``x[[0, 2]]``), i.e. an implicit blocking host-to-device copy, a CUDA stream sync, two per LoRA
layer (NVIDIA, "sync-free code: indexing tensors"), which CUDA graphs cannot capture either. Here the LoRA runs
on all N samples (rank r: a few % of the layer's cost) and the mask lives on the device, made once per
(names, device, dtype) and kept (so a CUDA graph that read it reads the same memory at every replay).
Contract: the adapters enabled with ``adapter`` the only active one, unmerged, plain LoRA (no DoRA or other
variant, no LoRA bias), peft Linear/Conv layers; the first dimension of every hooked layer's input is the batch.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import torch

from common.gpu import host_to_device

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_ATTR = "_lora_mix_names"  # set on each hooked layer while a mixed batch is active (read by common.graphs)
_CACHE = "_lora_mix_layers"  # (peft_config items, LoRA layers) cached on the model
_MASKS: dict[tuple, torch.Tensor] = {}  # (names, device, dtype) -> mask [N]; never freed, never written


def _cache(model: torch.nn.Module) -> dict | None:
    """{"layers": the LoRA layers, adapter: why it is not a plain LoRA on them (None: it is)} of ``model``.

    A module walk costs ~5 ms on a Stable Diffusion UNet, so this is cached on ``model`` for its current
    ``peft_config`` entries (diffusers' ``add_adapter`` / ``delete_adapters`` and peft's injection change them).
    """
    config = getattr(model, "peft_config", None)
    if not config or "peft" not in sys.modules:  # no peft layer can exist (and its import costs seconds)
        return None
    key = tuple(config.items())
    cached = model.__dict__.get(_CACHE)
    if cached is None or len(cached[0]) != len(key) or any(a[0] != b[0] or a[1] is not b[1]
                                                           for a, b in zip(cached[0], key)):
        from peft.tuners.lora import LoraLayer

        cached = model.__dict__[_CACHE] = (key, {"layers": [m for m in model.modules() if isinstance(m, LoraLayer)]})
    return cached[1]


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The peft LoRA layers (``peft.tuners.lora.LoraLayer``) inside ``model``; [] without peft or a LoRA."""
    cache = _cache(model)
    return cache["layers"] if cache else []


def _structure(layer: torch.nn.Module, adapter: str) -> str | None:
    """Why ``adapter`` on ``layer`` is not a plain LoRA that a mask can gate (None: it is); fixed when added."""
    from peft.tuners.lora.layer import Linear, _ConvNd

    if not isinstance(layer, (Linear, _ConvNd)):
        return f"{type(layer).__name__} layers are not supported"
    if (adapter not in layer.lora_A or layer.use_dora.get(adapter, False) or adapter in layer.lora_variant
            or layer.lora_bias.get(adapter, False)):
        return f"{adapter!r} is not a plain LoRA on every layer (missing, DoRA, a variant or a LoRA bias)"
    return None


def _unsupported(model: torch.nn.Module, adapter: str) -> str | None:
    """Why :func:`mixed_adapters` cannot run ``model`` with ``adapter`` now (None: it can)."""
    cache = _cache(model)
    if not cache or not cache["layers"]:
        return "mixed adapter batches need a peft LoRA in the model"
    if adapter not in cache:
        cache[adapter] = next((r for r in (_structure(m, adapter) for m in cache["layers"]) if r), None)
    if cache[adapter]:
        return cache[adapter]
    if any(m.merged or m.disable_adapters or list(m.active_adapters) != [adapter] for m in cache["layers"]):
        return f"needs {adapter!r} as the only active, enabled, unmerged adapter"
    return None


def supports_mixed_batch(model: torch.nn.Module, adapter: str) -> bool:
    """Whether :func:`mixed_adapters` can run ``model`` with ``adapter`` and the base model in one batch."""
    return _unsupported(model, adapter) is None


def active_names(layer: torch.nn.Module) -> tuple[str, ...] | None:
    """The per-sample adapter names a :func:`mixed_adapters` block applies to ``layer`` now, else None."""
    return layer.__dict__.get(_ATTR)


def _mask(names: tuple[str, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (names, device, dtype)
    if key not in _MASKS:  # a normal tensor even under inference_mode, so autograd may save it later
        with torch.inference_mode(False):
            mask = torch.tensor([n != BASE for n in names], dtype=dtype)  # [N]
            _MASKS[key] = host_to_device(mask, device)  # pinned: a GPU step does not wait for the copy
    return _MASKS[key]


def _gate(module: torch.nn.Module, args: tuple, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A(x) [N, ..., r] times the mask [N] (broadcast over every other dimension)."""
    if out.shape[0] != mask.shape[0]:
        raise ValueError(f"mixed adapter batch: {mask.shape[0]} adapter names for a batch of {out.shape[0]}")
    return out * mask.view(-1, *([1] * (out.dim() - 1)))


@contextlib.contextmanager
def mixed_adapters(model: torch.nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """Inside the block every peft LoRA layer of ``model`` runs sample i with ``adapter_names[i]`` (``BASE`` or
    the one active adapter). The hooks and the marker :func:`active_names` reads are removed on exit, also on
    an error. Raises ValueError without LoRA layers or outside the contract (module doc), RuntimeError nested.
    """
    names = tuple(adapter_names)
    adapters = set(names) - {BASE}
    layers = lora_layers(model)
    if len(adapters) > 1:
        raise ValueError("mixed adapter batch: at most one adapter name besides BASE")
    adapter = adapters.pop() if adapters else next(iter(layers[0].active_adapters if layers else ()), "")
    reason = _unsupported(model, adapter)
    if reason:
        raise ValueError(f"mixed adapter batch: {reason}")
    if any(active_names(m) is not None for m in layers):
        raise RuntimeError("mixed_adapters blocks do not nest")
    handles: list[Any] = []
    try:
        for m in layers:
            lora_a = m.lora_A[adapter]
            mask = _mask(names, lora_a.weight.device, lora_a.weight.dtype)
            handles.append(lora_a.register_forward_hook(partial(_gate, mask=mask)))
            m.__dict__[_ATTR] = names
        yield
    finally:
        for h in handles:
            h.remove()
        for m in layers:
            m.__dict__.pop(_ATTR, None)


__all__ = ["BASE", "active_names", "lora_layers", "mixed_adapters", "supports_mixed_batch"]
