"""VSD's fused UNet call (``Guidance.pretrained_and_lora_eps``): ONE mixed-adapter forward on [3B] equals the two
separate calls of ProlificDreamer Eq. 9 written out here (the pretrained CFG pair with the adapters disabled, the
LoRA's conditional prediction with them enabled) on the tiny SD UNet with a non-zero LoRA, and the CUDA-graph key
tells the mixed call from a plain call of the same shapes."""

from __future__ import annotations

import pytest
import torch

from common.graphs import CudaGraphUNet, EagerCapture
from common.lora_mix import active_names, lora_layers
from distillation.guidance import Guidance


def make(load_tiny_sd, prediction_type: str = "epsilon"):
    pipe = load_tiny_sd()
    unet = pipe.unet
    guidance = Guidance(unet, None, pipe.scheduler.alphas_cumprod.float(), prediction_type=prediction_type)
    guidance.init_vsd(lora_rank=2)
    gen = torch.Generator().manual_seed(3)
    for name, p in unet.named_parameters():
        if "lora_B" in name:  # peft's B = 0 would make the LoRA model the pretrained one
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return guidance, unet


def draws(batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 4, 8, 8, generator=gen)
    emb = torch.randn(2 * batch, 16, 16, generator=gen)  # cat(uncond, cond)
    t = torch.tensor([900, 40, 500])[:batch]
    return x_t, t, emb


def by_hand(unet, alphas_cumprod, x_t, t, emb, scale, prediction_type):
    """The two calls: eps_u + s (eps_c - eps_u) with the adapters disabled, eps_lora(cond) with them enabled."""
    a = alphas_cumprod[t].view(-1, 1, 1, 1)

    def eps(out, x):  # v-prediction: eps = sqrt(a) v + sqrt(1 - a) x_t
        return a.sqrt() * out + (1 - a).sqrt() * x if prediction_type == "v_prediction" else out

    B = x_t.shape[0]
    with torch.no_grad():
        unet.disable_adapters()
        out = unet(torch.cat([x_t, x_t]), torch.cat([t, t]), encoder_hidden_states=emb).sample
        eps_u, eps_c = eps(out[:B], x_t), eps(out[B:], x_t)
        unet.enable_adapters()
        eps_lora = eps(unet(x_t, t, encoder_hidden_states=emb[B:]).sample, x_t)
    return eps_u + scale * (eps_c - eps_u), eps_lora


def count_forwards(unet):
    """A list that gets the batch size of every forward of ``unet`` (a forward pre-hook)."""
    calls = []
    unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("batch,prediction_type", [(1, "epsilon"), (3, "epsilon"), (3, "v_prediction")])
def test_fused_call_equals_the_two_calls_and_is_one_forward(load_tiny_sd, batch, prediction_type):
    guidance, unet = make(load_tiny_sd, prediction_type)
    x_t, t, emb = draws(batch)
    eps_pre_ref, eps_lora_ref = by_hand(unet, guidance.alphas_cumprod, x_t, t, emb, 7.5, prediction_type)
    calls = count_forwards(unet)
    with torch.no_grad():
        eps_pre, eps_lora = guidance.pretrained_and_lora_eps(x_t, t, emb, 7.5)
    assert calls == [3 * batch]  # ONE UNet forward, on [3B]
    assert eps_pre.shape == eps_lora.shape == x_t.shape and eps_pre.dtype == torch.float32
    torch.testing.assert_close(eps_pre, eps_pre_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_lora, eps_lora_ref, rtol=1e-5, atol=1e-5)
    assert (eps_lora_ref - by_hand(unet, guidance.alphas_cumprod, x_t, t, emb, 1.0, prediction_type)[0]).abs().max() \
        > 1e-2  # the LoRA changes the conditional prediction: mixing up the adapters would fail
    assert all(active_names(m) is None and "forward" not in m.__dict__ for m in lora_layers(unet))


def test_fallback_without_mixed_batches_gives_the_same_with_two_calls(load_tiny_sd, monkeypatch):
    guidance, unet = make(load_tiny_sd)
    x_t, t, emb = draws(2)
    with torch.no_grad():
        fused = guidance.pretrained_and_lora_eps(x_t, t, emb, 7.5)
        monkeypatch.setattr(Guidance, "lora_adapter", lambda self: None)
        calls = count_forwards(unet)
        two = guidance.pretrained_and_lora_eps(x_t, t, emb, 7.5)
    assert calls == [4, 2]
    for a, b in zip(fused, two):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_vsd_step_is_one_fused_forward_plus_the_lora_fit(load_tiny_sd):
    guidance, unet = make(load_tiny_sd)
    x_t, t, emb = draws(3)
    calls = count_forwards(unet)
    latents = x_t.clone().requires_grad_(True)
    guidance.get_vsd_loss(latents, emb, 7.5, t=t, t_lora=t.flip(0)).backward()
    assert calls == [9, 3]  # [3B] no grad, then the LoRA fit's [B] forward (and its backward)
    assert latents.grad.abs().max() > 0 and all(p.grad is not None for p in guidance.lora_params)


def test_graph_key_tells_the_mixed_call_from_a_plain_call_of_the_same_shapes(load_tiny_sd):
    guidance, unet = make(load_tiny_sd)
    first = lora_layers(unet)[0]
    wrapped = CudaGraphUNet(unet, capture=EagerCapture(lambda: active_names(first)), device_types=("cpu",))
    x_t, t, emb = draws(2)
    u, c = emb.chunk(2)
    plain_in = (torch.cat([x_t, x_t, x_t]), torch.cat([t, t, t]), torch.cat([u, c, c]))
    with torch.no_grad():
        fused_ref = guidance.pretrained_and_lora_eps(x_t, t, emb, 7.5)
        unet.enable_adapters()
        plain_ref = unet(*plain_in).sample
        guidance.unet = wrapped
        for _ in range(2):  # capture, then replay: a key without the hooks' state would replay the wrong graph
            plain = wrapped(*plain_in).sample
            fused = guidance.pretrained_and_lora_eps(x_t, t, emb, 7.5)
            torch.testing.assert_close(plain, plain_ref, rtol=0, atol=0)
            for a, b in zip(fused, fused_ref):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert wrapped.stats == {"captures": 2, "replays": 4, "eager": 0}
