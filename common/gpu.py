"""GPU plumbing: device choice, precision policy, seeding, timing and memory reports.

Precision policy: model forward passes may run in fp16/bf16, but every diffusion coefficient
(alpha_bar_t, sigma_t, ...) is computed in fp32 (see ``common.schedules``) and cast at the last moment.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: fp16 weights for frozen models on CUDA, fp32 elsewhere


def get_device(name: str = "auto") -> torch.device:
    """Return the requested device; ``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:  # torch's message lists two dozen backends
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available here; use --device cpu")
    return device


def precision_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """Map ``auto|fp32|fp16|bf16`` to a dtype for frozen model weights.

    ``auto`` is fp16 on CUDA and fp32 elsewhere; fp16 on CPU falls back to fp32 (CPU fp16 convs are slow or
    missing). Schedules, Tweedie and optimised tensors stay fp32 whatever this returns.
    """
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    dtype = PRECISIONS[precision]
    if torch.device(device).type == "cpu" and dtype == torch.float16:
        return torch.float32
    return dtype


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator("cpu").manual_seed(seed)


def make_generators(seeds: Iterable[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, so a sample does not depend on its batch (EDM's StackedRandomGenerator idea)."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def randn_per_sample(shape: tuple[int, ...], generators: list[torch.Generator], device=None,
                     dtype=None) -> torch.Tensor:
    """Stack one ``randn(shape)`` per generator: result is [len(generators), *shape]."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device, dtype=dtype) for g in generators]).to(device)


class CudaTimer:
    """Wall-clock timer that uses CUDA events on GPU (synchronised) and perf_counter elsewhere.

    >>> with CudaTimer(device) as t: run()
    >>> t.ms
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.ms = float("nan")

    def __enter__(self) -> CudaTimer:
        if self.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self._end.record()
            torch.cuda.synchronize(self.device)
            self.ms = self._start.elapsed_time(self._end)
        else:
            self.ms = (time.perf_counter() - self._t0) * 1e3


def reset_peak_memory(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak allocated CUDA memory in MiB since the last reset (nan off-GPU)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return float("nan")


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile`` when asked and supported, else the module unchanged."""
    if enabled and hasattr(torch, "compile"):
        return torch.compile(module)
    return module


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Autocast for half precision on CUDA; a no-op for fp32 or CPU."""
    device = torch.device(device)
    if dtype == torch.float32 or device.type != "cuda":
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield
