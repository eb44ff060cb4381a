"""gan.ops: reference path vs naive loops (always), CUDA vs reference in value and 1st/2nd gradients (GPU only)."""

import math
import warnings

import numpy as np
import pytest
import torch

from gan.ops import _plugin, bias_act, downsample2d, setup_filter, upfirdn2d, upsample2d

CASES = [  # (up, down, padding (x0, x1, y0, y1), filter shape)
    (1, 1, (1, 2, 0, 1), (4, 3)),
    (2, 1, (2, 1, 2, 1), (4, 4)),
    (1, 2, (1, 1, 1, 1), (4, 4)),
    ((2, 1), (1, 2), (-1, 2, 3, -2), (3, 4)),
    (3, 2, (0, 0, 0, 0), (2, 5)),
]


def _naive_upfirdn2d(x, f, up, down, pad, flip_filter):
    """Textbook loops: zero-insert, pad, convolve (flip unless flip_filter), subsample."""
    x, f = x.double().numpy(), f.double().numpy()
    w = f if flip_filter else f[::-1, ::-1]
    upx, upy = (up, up) if isinstance(up, int) else up
    dx, dy = (down, down) if isinstance(down, int) else down
    px0, px1, py0, py1 = pad
    B, C, H, W = x.shape
    Hu, Wu = H * upy + py0 + py1, W * upx + px0 + px1
    p = np.zeros((B, C, Hu, Wu))
    for i in range(H):
        for j in range(W):
            a, b = i * upy + py0, j * upx + px0
            if 0 <= a < Hu and 0 <= b < Wu:
                p[:, :, a, b] = x[:, :, i, j]
    fh, fw = w.shape
    out = np.zeros((B, C, (Hu - fh) // dy + 1, (Wu - fw) // dx + 1))
    for o in range(out.shape[2]):
        for q in range(out.shape[3]):
            out[:, :, o, q] = (p[:, :, o * dy:o * dy + fh, q * dx:q * dx + fw] * w).sum((-1, -2))
    return torch.from_numpy(out)


@pytest.mark.parametrize("up,down,pad,fshape", CASES)
@pytest.mark.parametrize("flip", [False, True])
def test_upfirdn2d_ref_matches_naive(up, down, pad, fshape, flip):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    f = torch.randn(*fshape, generator=g, dtype=torch.float64)
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, impl="ref")
    torch.testing.assert_close(y, _naive_upfirdn2d(x, f, up, down, pad, flip))


def test_resample_helpers_keep_constants_and_shapes():
    f = setup_filter([1, 3, 3, 1])
    ones = torch.ones(1, 2, 8, 8)
    up, down = upsample2d(ones, f, impl="ref"), downsample2d(ones, f, impl="ref")
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))  # gain up^2 keeps mean
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))


def _naive_bias_act(x, b, act, alpha, gain, clamp):
    y = x + b.view(1, -1, 1, 1)
    y = {"linear": y, "relu": y.clamp(min=0), "lrelu": torch.where(y > 0, y, y * alpha),
         "tanh": torch.tanh(y), "sigmoid": 1 / (1 + torch.exp(-y))}[act] * gain
    return y.clamp(-clamp, clamp) if clamp is not None else y


@pytest.mark.parametrize("act,alpha,gain", [("linear", 0, 1), ("relu", 0, math.sqrt(2)), ("lrelu", 0.2, math.sqrt(2)),
                                            ("tanh", 0, 1), ("sigmoid", 0, 1)])
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_bias_act_ref_matches_formula(act, alpha, gain, clamp):
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(bias_act(x, b, act=act, clamp=clamp, impl="ref"),
                               _naive_bias_act(x, b, act, alpha, gain, clamp))


def test_failed_build_warns_once(monkeypatch):
    monkeypatch.setattr(_plugin, "_state", {"default": "auto", "plugins": {}, "warned": False})
    monkeypatch.setattr(_plugin.torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _plugin.get_plugin("bias_act") is None
        assert _plugin.get_plugin("upfirdn2d") is None
        assert _plugin.get_plugin("bias_act") is None
    assert len([w for w in caught if "could not build" in str(w.message)]) == 1
    with pytest.raises(RuntimeError):
        _plugin.get_plugin("bias_act", strict=True)


# ------------------------------------------------------------------------------------------------ CUDA


def needs_cuda(test):
    """GPU-marked (benchmarks/device_run.sh runs `-m gpu`) and skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def _grads(fn, x, first_weight, second_weight):
    """value, dL/dx and d/dx of <dL/dx, second_weight> (a second-order gradient, as in R1)."""
    x = x.detach().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad((y * first_weight + y.square()).sum(), x, create_graph=True)  # depends on x
    (gg,) = torch.autograd.grad((g * second_weight).sum(), x)  # back through the backward kernels
    return y, g, gg


def _compare(fn_cuda, fn_ref, x, atol):
    y = fn_ref(x)
    w1, w2 = torch.randn_like(y), torch.randn_like(x)
    for a, b in zip(_grads(fn_cuda, x, w1, w2), _grads(fn_ref, x, w1, w2)):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)


def _away_from_kinks(x, b, clamp, gain, margin=0.05):
    """Move entries whose x + b sits within ``margin`` of the relu kink or whose gain * (x + b) sits near the clamp.

    There the two paths may take different one-sided derivatives after fp16 rounding (torch's clamp passes the
    gradient at exactly +-clamp, the kernel sees only y and cannot tell a tie from a clamped value)."""
    v = x.float() + b.float().view(1, -1, 1, 1)
    near = (v.abs() < margin) | ((v.abs() * gain - clamp).abs() < margin)
    step = torch.where(v >= 0, 0.1, -0.1).to(x.dtype)
    return torch.where(near, x + step, x)


@needs_cuda
@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-10), (torch.float16, 3e-2)])
def test_bias_act_cuda_matches_ref(act, dtype, atol):
    x = torch.randn(4, 8, 9, 7, device="cuda", dtype=dtype) * 3
    b = torch.randn(8, device="cuda", dtype=dtype)
    x = _away_from_kinks(x, b, clamp=4.0, gain=2**0.5 if act != "linear" else 1.0)
    assert _plugin.get_plugin("bias_act", strict=True) is not None
    _compare(lambda t: bias_act(t, b, act=act, clamp=4.0, impl="cuda"),
             lambda t: bias_act(t, b, act=act, clamp=4.0, impl="ref"), x, atol)
    xb = x.detach().requires_grad_(True)
    bb = b.detach().requires_grad_(True)
    (db_cuda,) = torch.autograd.grad(bias_act(xb, bb, act=act, impl="cuda").sum(), bb)
    (db_ref,) = torch.autograd.grad(bias_act(xb, bb, act=act, impl="ref").sum(), bb)
    torch.testing.assert_close(db_cuda, db_ref, atol=atol * 10, rtol=atol * 10)


@needs_cuda
@pytest.mark.parametrize("up,down,pad,fshape", CASES)
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_upfirdn2d_cuda_matches_ref(up, down, pad, fshape, dtype, atol):
    assert _plugin.get_plugin("upfirdn2d", strict=True) is not None
    f = torch.randn(*fshape, device="cuda", dtype=torch.float32)
    x = torch.randn(2, 3, 7, 6, device="cuda", dtype=dtype)
    _compare(lambda t: upfirdn2d(t, f, up, down, pad, impl="cuda"),
             lambda t: upfirdn2d(t, f, up, down, pad, impl="ref"), x, atol)
