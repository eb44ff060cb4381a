"""The compiled UNet path: ``torch.compile`` (inductor) inside :class:`common.graphs.CudaGraphUNet`.

CUDA graphs remove the launch cost of a UNet call; inductor also fuses its memory-bound work (GroupNorm, SiLU,
the residual adds, the layout transposes around cuDNN), which CUDA graphs cannot. Measured on one H200, fp16,
one call (``benchmarks/bench_unet_knobs.py``, docs/benchmarks.md):

| UNet call | graphs | compile + graphs | first call (compilation) |
|---|---|---|---|
| SD 2.1 base, batch 2 (SDS, 1 prompt) | 11.3 ms | 6.9 ms | ~40 s |
| SD 2.1 base, batch 20 (SDS, 10 prompts) | 55.6 ms | 41.2 ms | ~40 s |
| CelebA-HQ 256 px DDPM, batch 10 | 35.7 ms | 19.5 ms | ~40 s |

Compilation happens once per input signature (batch size, dtype) and costs tens of seconds, so it pays for
runs of more than a few minutes: it is opt-in (``--compile``) on every entry point, while CUDA graphs alone
need no compilation. Shapes are static (``dynamic=False``): a new batch size compiles again rather than
running slower dynamic-shape kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import torch

from common.graphs import maybe_graph, unwrap

BACKENDS = ("inductor", "aot_eager")  # aot_eager: traced but not code-generated (the CPU tests' backend)


def compile_unet(unet: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile(unet)`` with static shapes; its attributes (``config``, ``dtype``, adapters) stay reachable.

    torch's ``OptimizedModule`` forwards unknown attributes to the module it wraps, so diffusers' ``unet.config``
    and peft's ``disable_adapters`` work as before (a changed adapter state recompiles: dynamo guards on it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown compile backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return torch.compile(unet, backend=backend, dynamic=False)


def is_compiled(unet: torch.nn.Module) -> bool:
    """Whether ``unet`` (or the UNet inside a CudaGraphUNet) is a ``torch.compile`` module."""
    return hasattr(unwrap(unet), "_orig_mod")


def fast_unet(unet: torch.nn.Module, device: torch.device | str, cuda_graphs: bool, compile: bool = False,
              backend: str = "inductor", **graph_kwargs: Any) -> torch.nn.Module:
    """The UNet an entry point runs: compiled when ``compile`` and on CUDA, then inside CUDA graphs when
    ``cuda_graphs`` and on CUDA; on a CPU the plain UNet (both options are CUDA speed-ups).

    Idempotent: a UNet that is already compiled is not compiled again.
    """
    if torch.device(device).type != "cuda":
        return maybe_graph(unet, False, device)
    inner = unwrap(unet)
    if compile and not is_compiled(inner):
        return maybe_graph(compile_unet(inner, backend), cuda_graphs, device, **graph_kwargs)
    return maybe_graph(unet, cuda_graphs, device, **graph_kwargs)  # keeps a CudaGraphUNet and its graphs


def unet_speed_options(graphs_measured: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--cuda_graphs/--no_cuda_graphs`` (default on) and ``--compile/--no_compile`` (default off) click
    options every GPU entry point shares; ``graphs_measured`` is the entry point's measured graphs speed-up."""
    graphs = click.option("--cuda_graphs/--no_cuda_graphs", default=True, show_default=True,
                          help="Replay the UNet's calls as CUDA graphs (common.graphs; CUDA only): equal to eager "
                               f"in the GPU tests; {graphs_measured}.")
    compiled = click.option("--compile/--no_compile", default=False, show_default=True,
                            help="Also torch.compile the UNet (common.compiled; CUDA only): ~40 s of compilation "
                                 "per batch size on a machine's first run, ~8 s on later ones (inductor's on-disk "
                                 "cache), then a faster UNet (H200: 1.8x at 256 px batch 10); worth it for runs of "
                                 "minutes.")
    return lambda command: graphs(compiled(command))


__all__ = ["BACKENDS", "compile_unet", "fast_unet", "is_compiled", "unet_speed_options"]
