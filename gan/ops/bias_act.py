"""Fused bias + activation + gain + clamp: y = clamp(act(x + b) * gain, -clamp, clamp).

StyleGAN2 (Karras et al. 2020) applies this after every convolution and fully-connected layer, with leaky ReLU
(alpha 0.2) and gain sqrt(2) to keep unit variance ("equalized learning rate", Karras et al. 2018, Sec. 4.1).
The CUDA kernel covers the piecewise-linear activations (linear, relu, lrelu); its derivative depends only on
the sign of y and on clamping, so the backward pass is a masked multiply and the second derivative w.r.t. x is
zero, which makes double backward (needed by R1) exact and cheap. Other activations use the reference path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gan.ops._plugin import get_plugin, use_cuda

# name -> (default alpha, default gain, CUDA kernel index or None)
ACTIVATIONS = {
    "linear":  (0.0, 1.0, 0),
    "relu":    (0.0, math.sqrt(2), 1),
    "lrelu":   (0.2, math.sqrt(2), 2),
    "tanh":    (0.0, 1.0, None),
    "sigmoid": (0.0, 1.0, None),
}


def _act_ref(x: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "linear":
        return x
    if act == "relu":
        return F.relu(x)
    if act == "lrelu":
        return F.leaky_relu(x, alpha)
    if act == "tanh":
        return torch.tanh(x)
    return torch.sigmoid(x)


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                 alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Reference implementation with plain PyTorch ops (any order of gradients via autograd)."""
    def_alpha, def_gain, _ = ACTIVATIONS[act]
    alpha = def_alpha if alpha is None else alpha
    gain = def_gain if gain is None else gain
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = _act_ref(x, act, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * act'(y), a masked multiply; it is linear in dy, and its derivative w.r.t. y is 0 a.e."""

    @staticmethod
    def forward(ctx, dy, y, spec):
        ctx.save_for_backward(y)
        ctx.spec = spec
        return get_plugin("bias_act").bias_act_grad(dy.contiguous(), y, *spec)

    @staticmethod
    def backward(ctx, d_dx):
        (y,) = ctx.saved_tensors
        return _BiasActGrad.apply(d_dx, y, ctx.spec), None, None


class _BiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, spec):
        x = x.contiguous()
        inner = math.prod(x.shape[dim + 1:])  # elements between consecutive channels
        b = b.to(x.dtype).contiguous() if b is not None else x.new_zeros([x.shape[dim]])
        y = get_plugin("bias_act").bias_act_fwd(x, b, inner, *spec)
        ctx.save_for_backward(y)
        ctx.spec, ctx.dim = spec, dim
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dx = _BiasActGrad.apply(dy, y, ctx.spec)
        db = None
        if ctx.needs_input_grad[1]:
            db = dx.sum(dim=[d for d in range(dx.ndim) if d != ctx.dim])
        return dx, db, None, None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str | None = None) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp), bias b [x.shape[dim]] broadcast along ``dim``.

    act: linear | relu | lrelu | tanh | sigmoid; alpha (lrelu slope, default 0.2) and gain (default sqrt(2) for
    relu/lrelu, else 1); clamp None disables clamping. impl: None (module default), "auto", "cuda" or "ref".
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from {', '.join(ACTIVATIONS)}")
    def_alpha, def_gain, cuda_idx = ACTIVATIONS[act]
    if cuda_idx is not None and use_cuda(x, "bias_act", impl):
        spec = (cuda_idx, float(def_alpha if alpha is None else alpha), float(def_gain if gain is None else gain),
                float(-1 if clamp is None else clamp))
        return _BiasActCuda.apply(x, b, dim % x.ndim, spec)
    return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
