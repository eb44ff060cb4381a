"""VSD through common.graphs.CudaGraphUNet (the fast path) equals VSD written out by hand (Wang et al. 2023,
Eqs. 9-10) on the tiny SD UNet: the loss, its gradient w.r.t. the latents (g) and the LoRA gradients, over two
AdamW steps (the graphs must see the LoRA's in-place updates). get_vsd_loss takes the pretrained CFG pair and
eps_lora from ONE mixed-adapter [3B] call; by hand they are the two separate calls. CPU: a graph stand-in that
fails a replay in another adapter state than its capture; ``-m gpu``: real CUDA graphs."""

from __future__ import annotations

import copy

import pytest
import torch
from distill_helpers import one_thread

from common.gpu import seed_everything
from common.graphs import CudaGraphUNet, EagerCapture, adapter_state, unwrap
from common.lora_precision import lora_compute_dtype
from distillation.guidance import Guidance


def setup(load_tiny_sd, device: str):
    pipe = load_tiny_sd()
    unet = pipe.unet.to(device)
    alphas_cumprod = pipe.scheduler.alphas_cumprod.float()
    ref = Guidance(unet, None, alphas_cumprod)
    ref.init_vsd(lora_rank=2)
    gen = torch.Generator().manual_seed(1)
    for name, p in unet.named_parameters():
        if "lora_B" in name:  # a fresh LoRA (B = 0) equals the pretrained model; make it differ
            p.data.copy_(torch.randn(p.shape, generator=gen).to(p.device) * 0.3)
    return unet, alphas_cumprod


def draws(device: str, batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 8, 8, generator=gen)
    emb = torch.randn(2 * batch, 16, 16, generator=gen)  # cat(uncond, cond)
    t, t_lora = torch.tensor([700, 300])[:batch], torch.tensor([250, 900])[:batch]
    noise, noise_lora = torch.randn(batch, 4, 8, 8, generator=gen), torch.randn(batch, 4, 8, 8, generator=gen)
    return [v.to(device) for v in (latents, emb, t, noise, t_lora, noise_lora)]


def vsd_by_hand(unet, alphas_cumprod, latents, emb, scale, t, noise, t_lora, noise_lora):
    """L = 1/2 sum (x - sg(x - g))^2 + mean (eps_lora(x_t', t', y) - eps')^2 with
    g = (1 - a_t) (eps_pre^cfg(x_t, t, y) - eps_lora(x_t, t, y)) (dreamfusion w), independent of distillation."""
    a = alphas_cumprod.to(latents.device)
    a_t, a_l = a[t].view(-1, 1, 1, 1), a[t_lora].view(-1, 1, 1, 1)
    cond = emb[latents.shape[0]:]
    x = latents.detach()
    x_t = a_t.sqrt() * x + (1 - a_t).sqrt() * noise
    with torch.no_grad():
        unet.disable_adapters()
        eps_u, eps_c = unet(torch.cat([x_t, x_t]), torch.cat([t, t]), encoder_hidden_states=emb).sample.chunk(2)
        eps_pre = eps_u + scale * (eps_c - eps_u)
        unet.enable_adapters()
        eps_lora = unet(x_t, t, encoder_hidden_states=cond).sample
    g = (1 - a_t) * (eps_pre - eps_lora)
    x_tl = a_l.sqrt() * x + (1 - a_l).sqrt() * noise_lora
    loss_lora = ((unet(x_tl, t_lora, encoder_hidden_states=cond).sample - noise_lora) ** 2).mean()
    return 0.5 * ((latents - (latents - g).detach()) ** 2).sum() + loss_lora


def run_steps(step_fn, unet, latents, steps: int = 2):
    """Two AdamW steps on (latents, LoRA); returns the losses, latent grads and LoRA grads of each step."""
    latents = latents.clone().requires_grad_(True)
    lora = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [latents], "lr": 0.1}, {"params": lora, "lr": 1e-2}], weight_decay=0.0)
    record = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = step_fn(latents)
        loss.backward()
        record.append((loss.detach().clone(), latents.grad.clone(), [p.grad.clone() for p in lora]))
        opt.step()
    return record


def compare(load_tiny_sd, device: str, wrap, tol: dict):
    unet, alphas_cumprod = setup(load_tiny_sd, device)
    latents, emb, t, noise, t_lora, noise_lora = draws(device)
    hand_unet, graph_unet = copy.deepcopy(unet), copy.deepcopy(unet)
    wrapped = wrap(graph_unet)
    guidance = Guidance(wrapped, None, alphas_cumprod)  # freezes every weight: unfreeze the LoRA again
    guidance.lora_params = [p.requires_grad_(True) for n, p in graph_unet.named_parameters() if "lora_" in n]
    assert len(guidance.lora_params) == len([p for p in hand_unet.parameters() if p.requires_grad]) > 0
    hand = run_steps(lambda x: vsd_by_hand(hand_unet, alphas_cumprod, x, emb, 7.5, t, noise, t_lora, noise_lora),
                     hand_unet, latents)
    fast = run_steps(lambda x: guidance.get_vsd_loss(x, emb, 7.5, t=t, noise=noise, t_lora=t_lora,
                                                     noise_lora=noise_lora), graph_unet, latents)
    for (loss_h, g_h, lora_h), (loss_f, g_f, lora_f) in zip(hand, fast):
        torch.testing.assert_close(loss_f, loss_h, **tol)
        torch.testing.assert_close(g_f, g_h, **tol)
        for a, b in zip(lora_f, lora_h):
            torch.testing.assert_close(a, b, **tol)
    assert g_h.abs().max() > 1e-3 and max(p.abs().max() for p in lora_h) > 1e-4  # not trivially zero
    return wrapped


def cpu_graphs(unet: torch.nn.Module) -> CudaGraphUNet:
    """The graph cache on a CPU: a stand-in capture that fails a replay in another adapter state than its
    capture, and autograd calls through the module itself."""
    return CudaGraphUNet(unet, capture=EagerCapture(lambda: adapter_state(unet)), device_types=("cpu",),
                         make_graphed=lambda module, args, warmup: module)


def test_vsd_through_graphs_equals_the_formula_on_cpu(load_tiny_sd):
    with one_thread():
        # eps_lora from the fused [3B] call vs a separate [B] call: float32 last-bit differences (other matmul
        # blocking, ~5e-7), ~5e-6 after an AdamW step (|g| ~ 0.7)
        wrapped = compare(load_tiny_sd, "cpu", cpu_graphs, {"rtol": 1e-5, "atol": 1e-5})
    # the fused [3B] call (pretrained CFG pair + eps_lora, mixed adapters, no grad) and the LoRA fit (autograd)
    assert wrapped.stats == {"captures": 2, "replays": 4, "eager": 0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vsd_through_real_cuda_graphs_equals_the_formula(load_tiny_sd, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32: TF32 would amplify
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # the formulas' last-bit differences
    wrapped = compare(load_tiny_sd, "cuda", CudaGraphUNet, {"rtol": 1e-4, "atol": 1e-5})
    assert wrapped.stats == {"captures": 2, "replays": 4, "eager": 0}  # the mixed batch is sync-free: capturable


def runner_vsd(load_tiny_sd, device: torch.device, graphs: bool, precision: str = "fp32"):
    """A 4-step, 2-prompt VSD run of distillation.runner: (images, latents, LoRA B weights, the guidance UNet)."""
    from distillation.runner import Item, Run, RunConfig

    cfg = RunConfig(loss_type="vsd", items=[Item("a red circle"), Item("a blue square")], steps=4, log_step=0,
                    warmup_steps=0, lora_lr=1e-2, cuda_graphs=graphs, precision=precision)
    seed_everything(cfg.seed)  # as run_distillation does per batch: the LoRA's A is drawn from torch's RNG
    job = Run(cfg, load_tiny_sd().to(device), device)
    images = job.optimise(progress=False)
    lora_b = [p.detach().flatten() for n, p in unwrap(job.guidance.unet).named_parameters() if "lora_B" in n]
    assert {p.dtype for p in job.guidance.lora_params} == {torch.float32}  # AdamW's masters, whatever computes
    assert lora_compute_dtype(unwrap(job.guidance.unet)) == job.guidance.dtype  # LoraMasters: computed in it
    return images, job.rep.param.detach(), torch.cat(lora_b), job.guidance.unet


def assert_runs_equal(eager, graphed, tol: dict):
    (img_e, rep_e, lora_e, _), (img_g, rep_g, lora_g, unet_g) = eager, graphed
    assert isinstance(unet_g, CudaGraphUNet) and unet_g.stats["replays"] > 0 and unet_g.stats["eager"] == 0
    assert lora_e.abs().max() > 1e-4  # the LoRA trained (its B starts at zero)
    torch.testing.assert_close(rep_g, rep_e, **tol)
    torch.testing.assert_close(lora_g, lora_e, **tol)
    torch.testing.assert_close(img_g, img_e, rtol=max(tol["rtol"], 1e-4), atol=max(tol["atol"], 1e-4))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: the LoRA computes in bf16, trains in float32
def test_the_runner_replays_vsd_through_the_graph_stand_in_and_equals_its_eager_run(load_tiny_sd, monkeypatch,
                                                                                    precision):
    """The runner's VSD calls (new t, t' every step, the LoRA updated in between) all hit the graph cache, and a
    replay in another adapter state than its capture would fail (CPU stand-in)."""
    import distillation.runner as runner

    cpu = torch.device("cpu")
    with one_thread():
        eager = runner_vsd(load_tiny_sd, cpu, graphs=False, precision=precision)
        monkeypatch.setattr(runner, "fast_unet", lambda unet, device, cuda_graphs, compile=False: cpu_graphs(unet))
        graphed = runner_vsd(load_tiny_sd, cpu, graphs=True, precision=precision)
    assert graphed[3].stats == {"captures": 2, "replays": 8, "eager": 0}
    assert_runs_equal(eager, graphed, {"rtol": 1e-5, "atol": 1e-6})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16 (auto on CUDA): the LoRA computes in fp16
def test_the_runner_replays_vsd_as_cuda_graphs_and_equals_its_eager_run(load_tiny_sd, monkeypatch, precision):
    """distillation.main's VSD with --cuda_graphs (the default) gives the eager run's images, LoRA and latents."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cuda = torch.device("cuda")
    eager = runner_vsd(load_tiny_sd, cuda, graphs=False, precision=precision)
    graphed = runner_vsd(load_tiny_sd, cuda, graphs=True, precision=precision)
    assert_runs_equal(eager, graphed, {"rtol": 1e-4, "atol": 1e-5} if precision == "fp32" else
                      {"rtol": 2e-3, "atol": 2e-3})
