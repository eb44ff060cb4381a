"""Build-once loader for the CUDA extensions with a single warning when the build is impossible."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

_HERE = Path(__file__).parent
_IMPLS = ("auto", "cuda", "ref")
_state = {"default": os.environ.get("GAN_OPS_IMPL", "auto"), "plugins": {}, "warned": False}


def set_default_impl(impl: str) -> None:
    """Choose ``auto`` (CUDA when possible), ``cuda`` (fail loudly if the build fails) or ``ref`` for all calls."""
    if impl not in _IMPLS:
        raise ValueError(f"unknown ops implementation {impl!r}; choose from {', '.join(_IMPLS)}")
    _state["default"] = impl


def get_default_impl() -> str:
    return _state["default"]


def _build(name: str):
    from torch.utils.cpp_extension import load

    sources = [str(_HERE / f"{name}.cpp"), str(_HERE / f"{name}.cu")]
    return load(name=f"gan_{name}_plugin", sources=sources, extra_cuda_cflags=["-O3"], verbose=False)


def get_plugin(name: str, strict: bool = False):
    """The compiled extension ``name`` (``bias_act`` or ``upfirdn2d``), or None if it cannot be built.

    The first failure prints one warning and is remembered, so later calls go straight to the reference path
    (retrying the build on every call is what made StyleGAN2-ADA's fallback slow, issue #39).
    """
    plugins = _state["plugins"]
    if name not in plugins:
        try:
            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device")
            plugins[name] = _build(name)
        except Exception as err:  # compiler, ninja or toolkit problems all mean: use the reference path
            plugins[name] = None
            plugins[name + ".error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"
            if strict:
                raise RuntimeError(f"could not build the CUDA kernels for {name}: {err}") from err
            if not _state["warned"]:
                _state["warned"] = True
                warnings.warn(f"gan.ops: could not build the CUDA kernels ({plugins[name + '.error']}); using the "
                              "slower pure-PyTorch reference ops. Check nvcc and ninja, or silence this with "
                              "GAN_OPS_IMPL=ref.", RuntimeWarning, stacklevel=3)
    if plugins[name] is None and strict:
        raise RuntimeError(f"could not build the CUDA kernels for {name}: {plugins.get(name + '.error')}")
    return plugins[name]


def use_cuda(x: torch.Tensor, name: str, impl: str | None) -> bool:
    """Resolve ``impl`` for tensor ``x``: True means call the CUDA kernel."""
    impl = impl or _state["default"]
    if impl not in _IMPLS:
        raise ValueError(f"unknown ops implementation {impl!r}; choose from {', '.join(_IMPLS)}")
    if impl == "ref" or not x.is_cuda:
        return False
    return get_plugin(name, strict=(impl == "cuda")) is not None
