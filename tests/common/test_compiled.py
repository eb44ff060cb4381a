"""The compiled UNet path (common.compiled): torch.compile keeps the UNet's outputs, gradients and attributes.

CPU: dynamo tracing with the ``aot_eager`` backend (no code generation, seconds on 2 cores) equals eager exactly
enough; on a CPU ``fast_unet`` returns the plain UNet. ``-m gpu``: inductor inside CUDA graphs equals eager in
fp32 and fp16, plain and with gradients (DPS's path)."""

from __future__ import annotations

import pytest
import torch
from test_graphs import inputs, needs_cuda, tiny_unet

from common.compiled import compile_unet, fast_unet, is_compiled
from common.graphs import CudaGraphUNet, unwrap


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_aot_eager_compile_equals_eager_in_values_gradients_and_attributes():
    unet = tiny_unet()
    compiled = compile_unet(unet, backend="aot_eager")
    assert is_compiled(compiled) and not is_compiled(unet)
    assert compiled.config.cross_attention_dim == 16 and compiled.dtype == torch.float32
    x, t, emb = inputs(seed=3)
    x_c, x_e = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_c, out_e = compiled(x_c, t, emb).sample, unet(x_e, t, emb).sample
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    (out_c ** 2).sum().backward()
    (out_e ** 2).sum().backward()
    torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-5, atol=1e-6)


def test_fast_unet_is_plain_on_cpu_and_refuses_unknown_backends():
    unet = tiny_unet()
    assert fast_unet(unet, "cpu", cuda_graphs=True, compile=True) is unet
    assert fast_unet(CudaGraphUNet(unet), "cpu", cuda_graphs=True) is unet
    with pytest.raises(ValueError, match="unknown compile backend"):
        compile_unet(unet, backend="tensorrt")


def test_fast_unet_keeps_a_graphed_unet_and_its_graphs():  # the device is only named: no CUDA needed
    unet = tiny_unet()
    graphed = CudaGraphUNet(unet)
    assert fast_unet(graphed, "cuda", cuda_graphs=True) is graphed
    assert fast_unet(graphed, "cuda", cuda_graphs=False) is unet
    assert isinstance(fast_unet(unet, "cuda", cuda_graphs=True), CudaGraphUNet)


@pytest.mark.gpu
@needs_cuda
def test_gpu_compiled_graphs_equal_eager(monkeypatch, dtype=torch.float16):  # fp16: the --precision auto path
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    unet = tiny_unet().to("cuda", dtype)
    fast = fast_unet(unet, "cuda", cuda_graphs=True, compile=True)
    assert isinstance(fast, CudaGraphUNet) and is_compiled(fast) and unwrap(fast)._orig_mod is unet
    assert fast_unet(fast, "cuda", cuda_graphs=True, compile=True) is fast  # idempotent
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 5e-3, "atol": 5e-3}
    with torch.no_grad():
        for seed in (0, 1, 2):
            x, t, emb = inputs(seed=seed, device="cuda")
            out = fast(x.to(dtype), t, emb.to(dtype)).sample
            torch.testing.assert_close(out, unet(x.to(dtype), t, emb.to(dtype)).sample, **tol)
    assert fast.stats["captures"] == 1 and fast.stats["replays"] == 3 and fast.stats["eager"] == 0


@pytest.mark.gpu
@needs_cuda
def test_gpu_compiled_graphs_gradients_equal_eager(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    unet = tiny_unet().cuda()
    fast = fast_unet(unet, "cuda", cuda_graphs=True, compile=True)
    for seed in (0, 1):
        x, t, emb = inputs(seed=seed, device="cuda")
        x_c, x_e = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        (fast(x_c, t, emb).sample ** 2).sum().backward()
        (unet(x_e, t, emb).sample ** 2).sum().backward()
        torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-4, atol=1e-5)
    assert fast.stats["eager"] == 0
