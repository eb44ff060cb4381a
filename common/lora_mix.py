"""Mixed-adapter batches for a peft LoRA inside a diffusers model: one forward, the LoRA on some samples only.

A peft LoRA layer computes y = W x + s B(A(x)) (Hu et al. 2022, Eq. 3; peft ``lora.Linear`` / ``lora.Conv2d``,
B without bias). Inside :func:`mixed_adapters` each LoRA layer runs y = W x on the whole batch and adds
s B(A(x)) in place on the contiguous runs of samples named by the adapter only, so sample i gets W x_i exactly
(``"__base__"``, as with the adapters disabled) or W x_i + s B A x_i. The runs are Python slices fixed when the
block opens: nothing is indexed on the device and nothing is copied to it. Why not peft's own
``adapter_names=[...]`` mixed batch: its ``_mixed_batch_forward`` indexes with Python lists (``x[[0, 2]]``), i.e.
an implicit blocking host-to-device copy, a CUDA stream sync, two per LoRA layer (NVIDIA, "sync-free code:
indexing tensors"), which CUDA graphs cannot capture either. Why not the whole batch through the LoRA times a 0/1
mask (this module's first version): VSD's [3B] call then ran the LoRA on the 2B pretrained rows for nothing.
Contract: the adapters enabled with ``adapter`` the only active one, unmerged, plain LoRA (no DoRA or other
variant, no LoRA bias), peft Linear/Conv layers whose base layer does not keep its output for the backward pass
(nn.Linear, nn.Conv*); the first dimension of every LoRA layer's input is the batch.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import torch

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_ATTR = "_lora_mix_names"  # set on each LoRA layer while a mixed batch is active (read by common.graphs)
_CACHE = "_lora_mix_layers"  # (peft_config items, LoRA layers) cached on the model


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


def _runs(names: tuple[str, ...]) -> list[tuple[int, int]]:
    """[(start, stop)]: the maximal runs of consecutive samples that get the adapter (not ``BASE``)."""
    runs: list[tuple[int, int]] = []
    for i, name in enumerate(names):
        if name == BASE:
            continue
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _mixed_forward(layer: torch.nn.Module, x: torch.Tensor, *args: Any, adapter: str, n: int,
                   runs: list[tuple[int, int]], **kwargs: Any) -> torch.Tensor:
    """peft's LoRA forward, y = W x + s B(A(dropout(x))), with the LoRA term on the rows of ``runs`` only.

    x [N, ...]; the base layer's output [N, ...] gets s B A x_i added on those rows (its own dtype, the LoRA
    computed in the LoRA weights' dtype as peft casts it). A Linear LoRA in the output's dtype adds s B h with one
    in-place ``addmm_`` (B's GEMM, the scale and the add in one kernel, where peft launches three; VSD's [3B]
    call on an H200 at 1 prompt: 15.8 -> 15.4 ms).
    """
    if x.shape[0] != n:
        raise ValueError(f"mixed adapter batch: {n} adapter names for a batch of {x.shape[0]}")
    y = layer.base_layer(x, *args, **kwargs)
    lora_a, lora_b = layer.lora_A[adapter], layer.lora_B[adapter]
    dropout, scaling = layer.lora_dropout[adapter], layer.scaling[adapter]
    fused = isinstance(lora_b, torch.nn.Linear) and lora_b.weight.dtype == y.dtype and y.is_contiguous()
    for start, stop in runs:
        h = lora_a(dropout(x[start:stop].to(lora_a.weight.dtype)))  # [n_run, ..., r]
        if fused:  # y_run += s h B^T, in place
            y[start:stop].view(-1, y.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), lora_b.weight.t(), alpha=scaling)
        else:
            y[start:stop] += (lora_b(h) * scaling).to(y.dtype)
    return y


@contextlib.contextmanager
def mixed_adapters(model: torch.nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """Inside the block every peft LoRA layer of ``model`` runs sample i with ``adapter_names[i]`` (``BASE`` or
    the one active adapter). The layers' mixed forwards and the marker :func:`active_names` reads are removed
    on exit, also on an error. Raises ValueError without LoRA layers or outside the contract (module doc),
    RuntimeError nested.
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
    mixed = partial(_mixed_forward, adapter=adapter, n=len(names), runs=_runs(names))
    try:
        for m in layers:
            m.__dict__["forward"] = partial(mixed, m)  # an instance attribute: nn.Module.__call__ runs it
            m.__dict__[_ATTR] = names
        yield
    finally:
        for m in layers:
            m.__dict__.pop("forward", None)
            m.__dict__.pop(_ATTR, None)


__all__ = ["BASE", "active_names", "lora_layers", "mixed_adapters", "supports_mixed_batch"]
