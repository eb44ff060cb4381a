"""What every benchmark script shares: comma-list options (``common.cli.CommaChoice`` / ``CommaInts``, re-exported
here as ``bench.CommaChoice`` ...), usage errors as one ``Error:`` line (exit 2), the CUDA requirement with its CPU
smoke escape, eager-vs-graphs modes, strict JSON."""

from __future__ import annotations

import gc
from typing import Any

import click
import torch

from common.cli import CONTEXT_SETTINGS, CommaChoice, CommaInts, OneLineCommand, UserError  # noqa: F401 (re-exported)
from common.gpu import PRECISION_CHOICES, get_device, precision_dtype
from common.runs import json_number, write_json_atomic

GRAPH_MODES = ("eager", "graphs", "compile")  # graphs: common.graphs.CudaGraphUNet; compile: torch.compile inside it
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


BenchCommand = OneLineCommand  # usage errors (bad choices, ranges) print as one ``Error:`` line, exit code 2


def bench_command(**kwargs: Any):
    """``click.command`` with :class:`BenchCommand` and the repo's context settings."""
    return click.command(cls=BenchCommand, context_settings=CONTEXT_SETTINGS, **kwargs)


PRECISIONS = CommaChoice(PRECISION_CHOICES)


def bench_device(name: str, smoke: bool, smoke_flag: str = "") -> torch.device:
    """The torch device of ``--device``; full-size runs need CUDA, a CPU run needs the smoke flag (if any)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"this benchmark needs a CUDA GPU and none is available (or pass --device cpu "
                        f"{smoke_flag} for a smoke run)".replace("  ", " "))
    device = get_device(name)  # ValueError (one line) for tpu, ...
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type != "cuda" and not smoke:
        raise UserError(f"this benchmark needs a CUDA GPU (or pass --device cpu {smoke_flag} for a smoke run); "
                        f"got --device {name} -> {device.type}")
    return device


def resolve_precisions(precisions: list[str], device: torch.device) -> list[tuple[str, torch.dtype]]:
    """(label, dtype) per requested precision (``auto`` -> fp16 on CUDA, fp32 on CPU), each dtype once."""
    rows: dict[torch.dtype, str] = {}
    for name in precisions:
        dtype = precision_dtype(name, device)
        rows.setdefault(dtype, f"{DTYPE_NAMES[dtype]}" if name != "auto" else f"auto={DTYPE_NAMES[dtype]}")
    return [(label, dtype) for dtype, label in rows.items()]


def graph_modes(modes: list[str], device: torch.device) -> list[str]:
    """The eager/graphs modes that apply: CUDA graphs exist on CUDA only (a CPU smoke run says so)."""
    if device.type != "cuda" and set(modes) - {"eager"}:
        print("note: --graphs graphs/compile need CUDA; CPU rows are eager only")
        modes = [m for m in modes if m == "eager"]
    return modes or ["eager"]


def wrap_unet(unet: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The UNet of one row: plain (eager), in CUDA graphs (graphs), or compiled inside CUDA graphs (compile);
    a fresh wrapper per row, so every row captures (and compiles) its own graphs."""
    if mode == "eager":
        return unet
    from common.compiled import compile_unet
    from common.graphs import CudaGraphUNet

    return CudaGraphUNet(compile_unet(unet) if mode == "compile" else unet)


def import_diffusers():
    """diffusers, or a one-line error (the GPU machine may lack it: benchmarks/device_run.sh installs wheels)."""
    try:
        import diffusers
        from diffusers.utils import logging as diffusers_logging
    except ImportError as err:
        raise UserError(f"diffusers is not installed ({err}); pip install diffusers") from err
    diffusers_logging.set_verbosity_error()  # silence the fp16 .to() notices
    return diffusers


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def write_rows(path: str | None, data: dict) -> None:
    """Strict JSON (NaN peak memory on CPU becomes null), written atomically."""
    if path:
        write_json_atomic(path, _nulls(data))


def _nulls(value: Any) -> Any:
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return value


def mib(value: float) -> str:
    """Peak MiB for a table cell ('-' off CUDA)."""
    return "-" if value != value else f"{value:.0f}"


def reset_memory(device: torch.device) -> None:
    """Empty the allocator's cache and reset the peaks, so a row's reserved peak is its own."""
    if device.type == "cuda":
        gc.collect()  # graphed modules hold reference cycles: free their graphs' pools now
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, float]:
    """(peak allocated, peak reserved) MiB since :func:`reset_memory`; NaN off CUDA. CUDA graphs keep their
    intermediates in private pools, which count as reserved, not allocated: read both."""
    if device.type != "cuda":
        return float("nan"), float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20
