"""upfirdn2d: upsample by zero insertion, pad (negative pads crop), FIR filter, downsample by striding.

StyleGAN2 (Karras et al. 2020, App. B) resamples with a separable [1, 3, 3, 1] low-pass filter, following
Zhang (2019) "Making Convolutional Networks Shift-Invariant Again". In 1D, for input length H:

    u[i * up] = x[i] (zeros between), length H * up
    p = pad(u, pad0 before, pad1 after)
    c[j] = sum_k p[j + k] * w[k]            (correlation with w = flip(f); true convolution with f)
    y[o] = c[o * down],   length (H * up + pad0 + pad1 - fh) // down + 1

The op is linear in x; its adjoint (the backward pass) is again an upfirdn2d with up and down swapped, the
flipped kernel and shifted pads, so the CUDA path gets gradients of every order from the same kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan.ops._plugin import get_plugin, use_cuda


def setup_filter(f: list[float] | torch.Tensor, normalize: bool = True, device=None) -> torch.Tensor:
    """1D taps -> separable 2D filter [fh, fw] (outer product), normalised to sum 1."""
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 1:
        f = f.ger(f)
    if normalize:
        f = f / f.sum()
    return f


def _pairs(value, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) == 2 and n == 4:  # (pad_x, pad_y)
        return (value[0], value[0], value[1], value[1])
    if len(value) != n:
        raise ValueError(f"expected {n} values, got {value}")
    return value


def upfirdn2d_ref(x: torch.Tensor, w: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
                  pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reference path: correlation kernel w [fh, fw], up/down (x, y), pad (x0, x1, y0, y1). Plain PyTorch.

    Without upsampling: pad (negative pads crop), then one depthwise conv with stride ``down`` (only the kept
    outputs are computed). With upsampling, zero insertion + correlation with w equals a transposed conv with
    flip(w) and stride ``up`` (no multiplications by the inserted zeros), shifted by fh - 1 - pad0 and cropped
    or padded to the module docstring's length. Both are about 4x cheaper than filtering at full rate on a CPU.
    """
    C = x.shape[1]
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    fh, fw = w.shape
    weight = w.to(x.dtype)[None, None].expand(C, 1, fh, fw)  # depthwise  [C, 1, fh, fw]
    if upx == upy == 1:
        return F.conv2d(F.pad(x, [px0, px1, py0, py1]), weight, stride=(downy, downx), groups=C)
    y = F.conv_transpose2d(x, weight.flip([2, 3]), stride=(upy, upx), groups=C)  # [B, C, (H-1) up + fh, ...]
    y = F.pad(y, [px0 - fw + 1, upx + px1 - fw, py0 - fh + 1, upy + py1 - fh])  # to (H up + p0 + p1 - fh + 1)
    return y[:, :, ::downy, ::downx]


def _adjoint_pad(in_size: int, out_size: int, f_size: int, up: int, down: int, pad0: int, pad1: int):
    """Pads of the adjoint upfirdn2d along one axis (see module docstring for the forward definition)."""
    conv_len = in_size * up + pad0 + pad1 - f_size + 1
    return f_size - 1 - pad0, conv_len - out_size * down + f_size - 1 - pad1


class _UpFirDn2dCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, up, down, pad):
        ctx.save_for_backward(w)
        ctx.geom = (x.shape, up, down, pad)
        y = get_plugin("upfirdn2d").upfirdn2d(x.contiguous(), w.float().contiguous(), *up, *down, *pad)
        ctx.out_hw = y.shape[2:]
        return y

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        (_, _, H, W), (upx, upy), (downx, downy), (px0, px1, py0, py1) = ctx.geom
        Ho, Wo = ctx.out_hw
        fh, fw = w.shape
        gx0, gx1 = _adjoint_pad(W, Wo, fw, upx, downx, px0, px1)
        gy0, gy1 = _adjoint_pad(H, Ho, fh, upy, downy, py0, py1)
        dx = _UpFirDn2dCuda.apply(dy, w.flip([0, 1]), (downx, downy), (upx, upy), (gx0, gx1, gy0, gy1))
        assert dx.shape[2:] == (H, W), (dx.shape, H, W)
        return dx, None, None, None, None


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int | tuple = 1, down: int | tuple = 1, padding: int | tuple = 0,
              flip_filter: bool = False, gain: float = 1.0, impl: str | None = None) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch [B, C, H, W] with the 2D filter f [fh, fw].

    up/down: int or (x, y); padding: int, (x, y) or (x0, x1, y0, y1), negative values crop; flip_filter=False
    means true convolution with f (True: correlation); gain multiplies the filter. impl: None/auto/cuda/ref.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [B, C, H, W], got {tuple(x.shape)}")
    if f.ndim != 2 or f.requires_grad:
        raise ValueError("upfirdn2d expects a constant 2D filter (use setup_filter)")
    up2, down2, pad4 = _pairs(up, 2), _pairs(down, 2), _pairs(padding, 4)
    w = (f if flip_filter else f.flip([0, 1])) * gain  # correlation kernel
    if use_cuda(x, "upfirdn2d", impl):
        return _UpFirDn2dCuda.apply(x, w, up2, down2, pad4)
    return upfirdn2d_ref(x, w, up2, down2, pad4)


def filter2d(x: torch.Tensor, f: torch.Tensor, padding: int = 0, gain: float = 1.0, impl=None) -> torch.Tensor:
    """Same-size FIR filtering (plus ``padding`` extra pixels on each side)."""
    fh, fw = f.shape
    pad = (padding + fw // 2, padding + (fw - 1) // 2, padding + fh // 2, padding + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=pad, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, padding: int = 0, gain: float = 1.0,
               impl=None) -> torch.Tensor:
    """Upsample by ``up`` (zero insertion + low-pass f, gain up^2 keeps the mean): [B, C, H, W] -> [.., up H, up W]."""
    fh, fw = f.shape
    pad = (padding + (fw + up - 1) // 2, padding + (fw - up) // 2, padding + (fh + up - 1) // 2,
           padding + (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=pad, gain=gain * up * up, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, padding: int = 0, gain: float = 1.0,
                 impl=None) -> torch.Tensor:
    """Low-pass f then keep every ``down``-th pixel: [B, C, H, W] -> [.., H / down, W / down]."""
    fh, fw = f.shape
    pad = (padding + (fw - down + 1) // 2, padding + (fw - down) // 2, padding + (fh - down + 1) // 2,
           padding + (fh - down) // 2)
    return upfirdn2d(x, f, down=down, padding=pad, gain=gain, impl=impl)
