"""Broadcasting of per-sample scalars (float, 0-d or [B] tensors) against [B, ...] samples."""

from __future__ import annotations

import torch


def expand_as(a: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return ``a`` as a float32 tensor shaped [B, 1, ..., 1] (or [] for scalars) on x's device.

    Coefficients stay in float32 (or float64 when x is float64) even when x is half precision; the
    arithmetic promotes, and callers cast the result back with ``.to(x.dtype)``.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    a = torch.as_tensor(a, device=x.device, dtype=dtype)
    if a.ndim == 0:
        return a
    if a.ndim != 1 or a.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample coefficient of shape {tuple(a.shape)} does not match batch {x.shape[0]}")
    return a.reshape(-1, *([1] * (x.ndim - 1)))
