"""CUDA graphs for diffusers UNet calls: capture once per input signature, replay with one launch afterwards.

A Stable Diffusion UNet forward launches ~2k small kernels; at batch 1 the GPU waits on Python (launch-bound:
25-41 ms per SDS step eager vs 7 ms under graphs on an H200, issue #19). A CUDA graph (NVIDIA CUDA Programming
Guide, "CUDA Graphs"; ``torch.cuda.CUDAGraph``) records the kernels of one call on static buffers; a replay
reruns them on whatever the buffers hold. :class:`CudaGraphUNet` wraps a UNet with the diffusers call signature
``(sample, timestep, encoder_hidden_states=None, **kwargs) -> .sample`` and keeps one graph per signature
(shapes, dtypes, devices, non-tensor arguments, train/eval, peft adapter state, mixed-adapter blocks):

* no gradient needed (``torch.no_grad``: SDS-style losses, DDPM/DDIM sampling, synchronization): a plain graph;
* a gradient through the UNet (DPS's grad w.r.t. x_t, VSD's LoRA fit): ``torch.cuda.make_graphed_callables``
  (forward and backward graphs inside one autograd node) when ``autograd=True``, else eager;
* eager fallback: off CUDA, ``enabled=False``, training mode, autocast, nested tensor arguments, more than
  ``max_graphs`` signatures, or a capture that failed (warned once).

Weights may change in place between replays (optimiser steps on a LoRA): a graph reads parameter memory, never
copies it; replacing a parameter's storage (``p.data = ...``, ``.to()``) needs :meth:`CudaGraphUNet.reset`
(``.to()`` calls it). Outputs are cloned, so two calls never alias. An autograd graph supports one backward per
forward, in order (forward, then its backward, before the next forward of the same signature).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import torch

from common.lora_mix import active_names

Capture = Callable[[Callable[[], torch.Tensor], int, Any], tuple[Callable[[], Any], torch.Tensor]]


def capture_cuda_graph(fn: Callable[[], torch.Tensor], warmup: int, pool: Any) -> tuple[Callable[[], Any],
                                                                                          torch.Tensor]:
    """Warm ``fn`` up on a side stream (cuDNN/cuBLAS autotuning, allocator), then capture one call.

    Returns (replay, static output): ``replay()`` reruns the captured kernels, which write the static output.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph.replay, out


class EagerCapture:
    """A stand-in for :func:`capture_cuda_graph` that runs anywhere (tests on CPU): the capture runs ``fn``
    once, a replay reruns it into the static output. Like a real graph, a replay is valid only in the state of
    its capture: with ``state_fn``, a replay in another state raises AssertionError (a cache key that misses
    that state fails a test). ``calls`` counts captures."""

    def __init__(self, state_fn: Callable[[], Hashable] | None = None):
        self.state_fn, self.calls = state_fn, 0

    def __call__(self, fn: Callable[[], torch.Tensor], warmup: int, pool: Any):
        self.calls += 1
        out = fn()
        state = self.state_fn() if self.state_fn else None

        def replay() -> None:
            if self.state_fn and self.state_fn() != state:
                raise AssertionError("replayed a graph in another state than its capture")
            out.copy_(fn())

        return replay, out


def make_graphed_module(module: torch.nn.Module, sample_args: tuple[torch.Tensor, ...], warmup: int) -> Callable:
    """``torch.cuda.make_graphed_callables`` with unused inputs allowed (a LoRA that is switched off)."""
    return torch.cuda.make_graphed_callables(module, sample_args, num_warmup_iters=max(warmup, 1),
                                             allow_unused_input=True)


def sample_of(out: Any) -> torch.Tensor:
    """The ``.sample`` of a diffusers output (or element 0 of the ``return_dict=False`` tuple)."""
    return out.sample if hasattr(out, "sample") else out[0]


class GraphOutput(NamedTuple):
    """What a graphed call returns: ``.sample`` like diffusers' output, ``[0]`` like its tuple."""

    sample: torch.Tensor


class _Positional(torch.nn.Module):
    """The UNet as a function of its tensor arguments only (``make_graphed_callables`` takes positional
    tensors); non-tensor arguments are fixed per signature."""

    def __init__(self, unet: torch.nn.Module, names: tuple[str, ...], constants: dict[str, Any]):
        super().__init__()
        self.unet, self.names, self.constants = unet, names, constants

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        kwargs = {**dict(zip(self.names, tensors)), **self.constants}
        return sample_of(self.unet(kwargs.pop("sample"), kwargs.pop("timestep"), **kwargs))


class _Plain(NamedTuple):
    static: dict[str, Any]  # the captured call's inputs: tensors are static buffers
    replay: Callable[[], Any]
    out: torch.Tensor  # static output, rewritten by each replay


def adapter_state(unet: torch.nn.Module, cache: dict | None = None) -> tuple:
    """(adapter names, disabled, active adapters, merged, scalings, mixed) of a peft LoRA on a diffusers model; ().

    diffusers' ``enable_adapters`` / ``disable_adapters`` / ``set_adapters`` switch every tuner layer at once,
    so the first layer speaks for all; ``mixed`` is the per-sample adapter names a
    :func:`common.lora_mix.mixed_adapters` block applies (None outside one), which change the computation but
    not the shapes. ``cache`` (a dict) keeps that layer between calls.
    """
    config = getattr(unet, "peft_config", None)
    if not config:
        return ()
    names = tuple(config)
    cache = {} if cache is None else cache
    if cache.get("names") != names:
        from peft.tuners.tuners_utils import BaseTunerLayer

        cache["names"] = names
        cache["layer"] = next((m for m in unet.modules() if isinstance(m, BaseTunerLayer)), None)
    layer = cache["layer"]
    if layer is None:
        return names
    scaling = tuple(sorted(getattr(layer, "scaling", {}).items()))
    mixed = active_names(layer)
    return names, bool(layer.disable_adapters), tuple(layer.active_adapters), bool(layer.merged), scaling, mixed


def _describe(name: str, value: Any) -> Hashable:
    """Hashable description of one argument; raises TypeError for values a graph cannot key on."""
    if isinstance(value, torch.Tensor):
        return name, tuple(value.shape), value.dtype, value.device, value.requires_grad
    if isinstance(value, (dict, list)) or (isinstance(value, tuple) and any(isinstance(v, torch.Tensor)
                                                                            for v in value)):
        raise TypeError(f"{name}: nested arguments run eagerly")
    hash(value)
    return name, value


class CudaGraphUNet(torch.nn.Module):
    """A UNet that replays CUDA graphs of its calls (same call signature and ``.sample`` output as diffusers).

    ``warmup`` eager calls on a side stream precede each capture; at most ``max_graphs`` signatures are kept
    (further ones run eagerly). ``capture`` / ``make_graphed`` / ``device_types`` exist for tests (a fake
    capture on CPU exercises the cache); ``state_fn`` adds caller state to the key. Attributes the wrapper does
    not have (``config``, ``dtype``, ``disable_adapters``, ``add_adapter`` ...) are the UNet's.
    """

    def __init__(self, unet: torch.nn.Module, enabled: bool = True, autograd: bool = True, warmup: int = 2,
                 max_graphs: int = 8, capture: Capture | None = None, make_graphed: Callable | None = None,
                 device_types: tuple[str, ...] = ("cuda",), state_fn: Callable[[], Hashable] | None = None):
        super().__init__()
        self.unet = unet
        self.enabled, self.autograd, self.warmup, self.max_graphs = enabled, autograd, warmup, max_graphs
        self.capture = capture or capture_cuda_graph
        self.make_graphed = make_graphed or make_graphed_module
        self.device_types, self.state_fn = tuple(device_types), state_fn
        self.stats = {"captures": 0, "replays": 0, "eager": 0}
        self._graphs: dict[Hashable, Any] = {}
        self._failed: set[Hashable] = set()
        self._warned: set[str] = set()
        self._adapter_cache: dict = {}
        self._pool = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name == "unet" or "unet" not in modules:
                raise
            return getattr(modules["unet"], name)

    def replays(self, x: torch.Tensor) -> bool:
        """Whether calls with inputs like ``x`` can replay graphs (the wrapper on, ``x`` on one of its devices)."""
        return self.enabled and x.device.type in self.device_types

    def reset(self) -> None:
        """Drop every graph (after replacing weights' storage or moving the model)."""
        self._graphs.clear()
        self._failed.clear()
        self._pool = None

    def _apply(self, fn, *args, **kwargs):  # .to(), .half(), .cuda(): the graphs point at the old memory
        self.reset()
        return super()._apply(fn, *args, **kwargs)

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        if encoder_hidden_states is not None:  # UNet2DModel takes none
            kwargs["encoder_hidden_states"] = encoder_hidden_states
        inputs = {"sample": sample, "timestep": timestep, **dict(sorted(kwargs.items()))}
        mode = self._mode(inputs)
        if mode != "eager":  # a Python number timestep: a tensor, so its value is not part of the key
            inputs = self._tensor_timestep(inputs)
        key = self._key(mode, inputs) if mode != "eager" else None
        sample_out = None
        if key is not None and key not in self._failed and (key in self._graphs or not self._full()):
            sample_out = self._run_plain(key, inputs) if mode == "graph" else self._run_autograd(key, inputs)
        if sample_out is None:  # eager, or the capture failed (eager from now on for this signature)
            self.stats["eager"] += 1
            return self.unet(sample, timestep, **kwargs)
        return (sample_out,) if kwargs.get("return_dict", True) is False else GraphOutput(sample_out)

    # ----------------------------------------------------------------------------------------------------------

    def _mode(self, inputs: dict[str, Any]) -> str:
        """``eager``, ``graph`` (no gradient needed) or ``autograd`` (a gradient flows through the UNet)."""
        tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
        if (not self.enabled or self.unet.training or not tensors
                or any(t.device.type not in self.device_types for t in tensors)
                or torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu")):
            return "eager"
        if torch.is_grad_enabled() and (any(t.requires_grad for t in tensors)
                                        or any(p.requires_grad for p in self.unet.parameters())):
            return "autograd" if self.autograd else "eager"
        return "graph"

    def _key(self, mode: str, inputs: dict[str, Any]) -> Hashable | None:
        try:
            signature = tuple(_describe(name, value) for name, value in inputs.items())
            extra = self.state_fn() if self.state_fn is not None else None
            hash(extra)
        except TypeError:
            return None
        trainable = sum(p.requires_grad for p in self.unet.parameters()) if mode == "autograd" else 0
        return (mode, signature, adapter_state(self.unet, self._adapter_cache), trainable, extra)

    def _full(self) -> bool:
        if len(self._graphs) < self.max_graphs:
            return False
        self._warn("full", f"CudaGraphUNet: more than {self.max_graphs} input signatures; new ones run eagerly")
        return True

    def _warn(self, tag: str, message: str) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    @staticmethod
    def _tensor_timestep(inputs: dict[str, Any]) -> dict[str, Any]:
        """A Python number timestep becomes a 0-d tensor on the sample's device (what diffusers would build
        inside the call, which a capture cannot do): int -> int64, float -> float64."""
        t = inputs["timestep"]
        if isinstance(t, torch.Tensor):
            return inputs
        dtype = torch.int64 if isinstance(t, int) else torch.float64
        return {**inputs, "timestep": torch.tensor(t, dtype=dtype, device=inputs["sample"].device)}

    def _device_guard(self, inputs: dict[str, Any]):
        device = inputs["sample"].device
        return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()

    def _run_plain(self, key: Hashable, inputs: dict[str, Any]) -> torch.Tensor | None:
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture_plain(key, inputs)
            if entry is None:
                return None
        with torch.inference_mode(False), torch.no_grad():
            for name, value in inputs.items():
                if isinstance(value, torch.Tensor):
                    entry.static[name].copy_(value)
        entry.replay()
        self.stats["replays"] += 1
        return entry.out.clone()

    def _capture_plain(self, key: Hashable, inputs: dict[str, Any]) -> _Plain | None:
        with torch.inference_mode(False), torch.no_grad():
            static = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

            def run() -> torch.Tensor:
                kwargs = dict(static)
                return sample_of(self.unet(kwargs.pop("sample"), kwargs.pop("timestep"), **kwargs))

            try:
                with self._device_guard(inputs):
                    if self._pool is None and inputs["sample"].device.type == "cuda":
                        self._pool = torch.cuda.graph_pool_handle()
                    replay, out = self.capture(run, self.warmup, self._pool)
            except RuntimeError as err:
                return self._capture_failed(key, err)
        self.stats["captures"] += 1
        self._graphs[key] = entry = _Plain(static, replay, out)
        return entry

    def _run_autograd(self, key: Hashable, inputs: dict[str, Any]) -> torch.Tensor | None:
        names = tuple(k for k, v in inputs.items() if isinstance(v, torch.Tensor))
        tensors = tuple(inputs[k] for k in names)
        graphed = self._graphs.get(key)
        if graphed is None:
            constants = {k: v for k, v in inputs.items() if k not in names}
            module = _Positional(self.unet, names, constants)
            sample_args = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)
            try:
                with self._device_guard(inputs):
                    graphed = self.make_graphed(module, sample_args, self.warmup)
            except (RuntimeError, AssertionError) as err:
                return self._capture_failed(key, err)
            self.stats["captures"] += 1
            self._graphs[key] = graphed
        self.stats["replays"] += 1
        return graphed(*tensors).clone()

    def _capture_failed(self, key: Hashable, err: BaseException) -> None:
        """Remember a signature whose capture raised (it runs eagerly from now on) and warn once."""
        self._failed.add(key)
        self._warn(f"failed-{key[0]}", f"CudaGraphUNet: capture failed ({type(err).__name__}: "
                   f"{str(err).splitlines()[0] if str(err) else ''}); this signature runs eagerly")
        return None


def unwrap(unet: torch.nn.Module) -> torch.nn.Module:
    """The plain UNet inside a :class:`CudaGraphUNet` (or ``unet`` itself)."""
    return unet.unet if isinstance(unet, CudaGraphUNet) else unet


def maybe_graph(unet: torch.nn.Module, enabled: bool, device: torch.device | str, **kwargs: Any) -> torch.nn.Module:
    """``CudaGraphUNet(unet)`` when ``enabled`` and ``device`` is CUDA, else the plain UNet (idempotent)."""
    if not enabled or torch.device(device).type != "cuda":
        return unwrap(unet)
    return unet if isinstance(unet, CudaGraphUNet) else CudaGraphUNet(unet, **kwargs)


def graph_rows(m: int, n: int) -> int:
    """The rows of a call for m of n samples under CUDA graphs: the next size >= m of the form 2^k or 3 * 2^k
    (1, 2, 3, 4, 6, 8, 12, ...), at most n. At 10 prompts ISM's inversion chain
    (``distillation.guidance.Guidance.unet_eps``) then needs sizes 1, 2, 3, 4, 6, 8 and 10
    (7 graphs, the CFG call's 20 the 8th) and pads a step by ~2 idle rows where powers of two padded ~5 (an
    H200, 10 prompts: 151.6 -> 147.7 ms per ISM step)."""
    power = 1 << (m - 1).bit_length()  # the next power of two >= m
    return min(n, 3 * power // 4 if power >= 4 and 3 * power // 4 >= m else power)


__all__ = ["CudaGraphUNet", "EagerCapture", "GraphOutput", "adapter_state", "capture_cuda_graph", "graph_rows",
           "make_graphed_module", "maybe_graph", "sample_of", "unwrap"]
