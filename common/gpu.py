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


def host_to_device(x: torch.Tensor, device: torch.device | str | None, pin: bool | None = None) -> torch.Tensor:
    """``x`` on ``device`` with the same values; a CPU tensor bound for CUDA goes through pinned memory.

    A copy from ordinary (pageable) CPU memory makes the CPU wait until the GPU has run everything queued
    before it; a copy from page-locked memory with ``non_blocking=True`` is queued like a kernel (CUDA C++
    Programming Guide, "Asynchronous Concurrent Execution"; torch's "pin_memory" note). ``pin``: None = exactly
    when ``x`` is on the CPU and ``device`` is CUDA; tests force it (pinning itself needs CUDA). An ``x`` that is
    already pinned is copied from directly: do not change it in place until the copy has run.
    """
    if device is None:
        return x
    device = torch.device(device)
    if pin is None:
        pin = x.device.type == "cpu" and device.type == "cuda"
    if not pin:
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)  # the caching host allocator keeps it until copied


def randn_per_sample(shape: tuple[int, ...], generators: list[torch.Generator], device=None,
                     dtype=None, pin: bool | None = None) -> torch.Tensor:
    """Stack one ``randn(shape)`` per generator: result is [len(generators), *shape].

    Each draw runs on its generator's device (CPU generators: the same numbers on every machine) and is moved
    to ``device`` by :func:`host_to_device` (``pin`` passed on), so CUDA never waits for a pageable copy.
    """
    draws = torch.stack([torch.randn(shape, generator=g, device=g.device, dtype=dtype) for g in generators])
    return host_to_device(draws, device, pin)


class HostCopy:
    """A small tensor's value on the host, copied behind the queued GPU work: :meth:`get` waits for that only.

    ``float(t)`` / ``.item()`` / ``.tolist()`` on a CUDA tensor waits until the GPU has finished everything
    queued so far. Here the value is copied with ``non_blocking=True`` into pinned memory and a CUDA event is
    recorded after the copy; :meth:`get` waits for that event alone (usually long passed when read a step
    later) and :meth:`ready` asks without waiting. Off CUDA the copy is the tensor itself (nothing to wait for).
    """

    def __init__(self, x: torch.Tensor):
        x = x.detach()
        self.event: torch.cuda.Event | None = None
        if x.device.type != "cuda":
            self.host = x
            return
        self.host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        self.host.copy_(x, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record(torch.cuda.current_stream(x.device))

    def ready(self) -> bool:
        """Whether :meth:`get` would return at once."""
        return self.event is None or self.event.query()

    def get(self) -> torch.Tensor:
        """The value as a CPU tensor (waits for the copy only)."""
        if self.event is not None:
            self.event.synchronize()
        return self.host


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
