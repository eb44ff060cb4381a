"""common.graphs.CudaGraphUNet: eager fallback equals the UNet exactly; the signature cache (a fake capture on
CPU); real CUDA graphs equal eager (``-m gpu``, skipped without CUDA)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from common.graphs import CudaGraphUNet, EagerCapture, adapter_state, maybe_graph, unwrap


def needs_cuda(test):
    """GPU-marked (benchmarks/device_run.sh runs `-m gpu`) and skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one intra-op thread (a busy 2-core CPU makes 2 threads 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return unet.eval().requires_grad_(False)


def add_lora(unet: torch.nn.Module) -> None:
    """A rank-2 LoRA whose B is random (a fresh LoRA has B = 0 and changes nothing)."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    gen = torch.Generator().manual_seed(1)
    for name, p in unet.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen))


def fake_wrapper(unet, **kwargs) -> CudaGraphUNet:
    """Graphs on CPU too: the capture is EagerCapture, which fails a replay in another adapter state than its
    capture's; the autograd path's "graph" is the module itself."""
    return CudaGraphUNet(unet, capture=EagerCapture(lambda: adapter_state(unet)), device_types=("cpu", "cuda"),
                         make_graphed=lambda module, args, warmup: module, **kwargs)


def inputs(batch: int = 2, seed: int = 0, device: str = "cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    emb = torch.randn(batch, 5, 16, generator=gen)
    return x.to(device), t.to(device), emb.to(device)


def test_cpu_calls_run_eagerly_and_exactly():
    unet = tiny_unet()
    wrapped = CudaGraphUNet(unet)  # real capture, CUDA only: on CPU every call is the UNet itself
    x, t, emb = inputs()
    with torch.no_grad():
        out = wrapped(x, t, encoder_hidden_states=emb)
        ref = unet(x, t, encoder_hidden_states=emb)
    assert torch.equal(out.sample, ref.sample)
    assert wrapped.stats == {"captures": 0, "replays": 0, "eager": 1}


def test_one_graph_per_signature_and_replays_follow_new_inputs():
    unet = tiny_unet()
    wrapped = fake_wrapper(unet)
    with torch.no_grad():
        for seed in (0, 1):  # same signature, new values: one capture, the replay sees the new inputs
            x, t, emb = inputs(seed=seed)
            torch.testing.assert_close(wrapped(x, t, emb).sample, unet(x, t, emb).sample, rtol=0, atol=0)
        assert (wrapped.capture.calls, wrapped.stats["replays"]) == (1, 2)
        x, t, emb = inputs(batch=3, seed=2)  # a new batch size, then a Python int timestep: new signatures
        torch.testing.assert_close(wrapped(x, t, emb).sample, unet(x, t, emb).sample, rtol=0, atol=0)
        for step in (37, 981):  # the value of a Python int timestep is data, not part of the signature
            torch.testing.assert_close(wrapped(x, step, emb)[0], unet(x, step, emb).sample, rtol=0, atol=0)
        assert wrapped.capture.calls == 3 and len(wrapped._graphs) == 3


def test_outputs_are_copies_not_the_static_buffer():
    unet = tiny_unet()
    wrapped = fake_wrapper(unet)
    (x1, t, emb), (x2, _, _) = inputs(seed=0), inputs(seed=1)
    with torch.no_grad():
        first = wrapped(x1, t, emb).sample
        wrapped(x2, t, emb)  # the replay rewrites the static output
        torch.testing.assert_close(first, unet(x1, t, emb).sample, rtol=0, atol=0)


def test_training_mode_autocast_and_disabled_run_eagerly():
    unet = tiny_unet()
    wrapped = fake_wrapper(unet)
    x, t, emb = inputs()
    with torch.no_grad():
        wrapped.train()
        wrapped(x, t, emb)
        wrapped.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            wrapped(x, t, emb)
        wrapped.enabled = False
        wrapped(x, t, emb)
    assert wrapped.stats["eager"] == 3 and wrapped.capture.calls == 0
    assert not unet.training  # eval() reached the wrapped UNet again


def test_adapter_state_is_part_of_the_key():
    unet = tiny_unet()
    add_lora(unet)
    wrapped = fake_wrapper(unet)
    x, t, emb = inputs()
    with torch.no_grad():
        outs = {}
        for _ in range(2):
            for enabled in (False, True):
                unet.enable_adapters() if enabled else unet.disable_adapters()
                outs[enabled] = wrapped(x, t, emb).sample
                torch.testing.assert_close(outs[enabled], unet(x, t, emb).sample, rtol=0, atol=0)
    assert wrapped.capture.calls == 2 and wrapped.stats["replays"] == 4
    assert (outs[True] - outs[False]).abs().max() > 1e-3  # the LoRA changes the prediction


def test_gradients_through_the_unet_take_the_autograd_path():
    unet = tiny_unet()
    add_lora(unet)  # trainable LoRA parameters, frozen base weights
    ref_unet = copy.deepcopy(unet)
    wrapped = fake_wrapper(unet)
    x, t, emb = inputs()
    for _ in range(2):
        x_in, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        (wrapped(x_in, t, emb).sample ** 2).sum().backward()
        (ref_unet(x_ref, t, emb).sample ** 2).sum().backward()
        torch.testing.assert_close(x_in.grad, x_ref.grad, rtol=0, atol=0)
    lora = [(n, p.grad) for n, p in unet.named_parameters() if p.requires_grad]
    ref = dict((n, p.grad) for n, p in ref_unet.named_parameters() if p.requires_grad)
    assert len(lora) == 64 and all(torch.equal(g, ref[n]) for n, g in lora)
    assert wrapped.stats["captures"] == 1 and wrapped.stats["replays"] == 2  # one autograd entry, no plain one
    wrapped.autograd = False
    wrapped(x.clone().requires_grad_(True), t, emb)
    assert wrapped.stats["eager"] == 1


def test_max_graphs_and_failed_captures_fall_back_to_eager():
    unet = tiny_unet()
    wrapped = fake_wrapper(unet, max_graphs=1)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped(*inputs(batch=1))
        x, t, emb = inputs(batch=2)
        torch.testing.assert_close(wrapped(x, t, emb).sample, unet(x, t, emb).sample, rtol=0, atol=0)
        assert wrapped.stats == {"captures": 1, "replays": 1, "eager": 1}

        def broken(fn, warmup, pool):
            broken.calls += 1
            raise RuntimeError("operation not permitted when stream is capturing")

        broken.calls = 0
        failing = CudaGraphUNet(unet, capture=broken, device_types=("cpu",))
        for _ in range(2):
            torch.testing.assert_close(failing(x, t, emb).sample, unet(x, t, emb).sample, rtol=0, atol=0)
    assert broken.calls == 1 and failing.stats["eager"] == 2  # not retried
    messages = [str(w.message) for w in caught]
    assert any("more than 1 input signatures" in m for m in messages)
    assert any("capture failed (RuntimeError: operation not permitted" in m for m in messages)


def test_wrapper_forwards_attributes_and_maybe_graph_chooses():
    unet = tiny_unet()
    wrapped = maybe_graph(unet, True, "cuda")
    assert isinstance(wrapped, CudaGraphUNet) and maybe_graph(wrapped, True, "cuda") is wrapped
    assert maybe_graph(unet, True, "cpu") is unet and maybe_graph(wrapped, False, "cuda") is unet
    assert unwrap(wrapped) is unet and unwrap(unet) is unet
    assert wrapped.config is unet.config and wrapped.dtype == torch.float32
    assert wrapped.requires_grad_(False) is wrapped and wrapped.eval() is wrapped
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in unet.parameters()]
    wrapped._graphs["stale"] = object()
    wrapped.to(torch.float64)  # moved weights: the old graphs would read freed memory
    assert wrapped._graphs == {} and next(unet.parameters()).dtype == torch.float64


def test_nested_arguments_run_eagerly():
    unet = tiny_unet()
    wrapped = fake_wrapper(unet)
    x, t, emb = inputs()
    with torch.no_grad():
        out = wrapped(x, t, emb, cross_attention_kwargs={"scale": 1.0})
        torch.testing.assert_close(out.sample, unet(x, t, emb).sample, rtol=0, atol=0)
    assert wrapped.stats["eager"] == 1 and wrapped.capture.calls == 0


# ---------------------------------------------------------------------------------------------------------------
# Real CUDA graphs (python -m pytest -m gpu tests/common/test_graphs.py on a GPU machine)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_graph_replays_equal_eager(dtype, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    unet = tiny_unet().to("cuda", dtype)
    wrapped = CudaGraphUNet(unet)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-3, "atol": 2e-3}
    with torch.no_grad():
        for seed in (0, 1, 2):
            x, t, emb = inputs(seed=seed, device="cuda")
            out = wrapped(x.to(dtype), t, emb.to(dtype)).sample
            torch.testing.assert_close(out, unet(x.to(dtype), t, emb.to(dtype)).sample, **tol)
        out = wrapped(x.to(dtype), 321, emb.to(dtype)).sample
        torch.testing.assert_close(out, unet(x.to(dtype), 321, emb.to(dtype)).sample, **tol)
    assert wrapped.stats == {"captures": 2, "replays": 4, "eager": 0}


@pytest.mark.gpu
@needs_cuda
def test_gpu_autograd_graph_gradients_equal_eager(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    unet = tiny_unet()
    add_lora(unet)
    unet.cuda()
    ref_unet = copy.deepcopy(unet)
    wrapped = CudaGraphUNet(unet)
    for seed in (0, 1):
        x, t, emb = inputs(seed=seed, device="cuda")
        x_in, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        for p in list(unet.parameters()) + list(ref_unet.parameters()):
            p.grad = None
        (wrapped(x_in, t, emb).sample ** 2).mean().backward()
        (ref_unet(x_ref, t, emb).sample ** 2).mean().backward()
        torch.testing.assert_close(x_in.grad, x_ref.grad, rtol=1e-4, atol=1e-6)
        grads = dict((n, p.grad) for n, p in ref_unet.named_parameters() if p.requires_grad)
        for name, p in unet.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)
    assert wrapped.stats == {"captures": 1, "replays": 2, "eager": 0}


@pytest.mark.gpu
@needs_cuda
def test_gpu_ddpm_sampling_through_the_wrapper_equals_eager():
    from common.gpu import make_generators
    from common.sampling import sample_unet, sampling_config
    from common.toy.train_faces import build_tiny_unet

    torch.manual_seed(0)
    unet = build_tiny_unet(16).cuda().eval().requires_grad_(False)
    config = sampling_config({"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": True})
    wrapped = CudaGraphUNet(unet)
    for sampler in ("DDPM", "DDIM"):
        ref = sample_unet(unet, config, sampler, 8, make_generators([0, 1], "cuda"))
        out = sample_unet(wrapped, config, sampler, 8, make_generators([0, 1], "cuda"))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert wrapped.stats["captures"] == 1 and wrapped.stats["replays"] == 16

