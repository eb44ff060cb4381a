"""Runs on a tiny random Stable Diffusion: VSD's LoRA step, batched prompts = single runs, schedules, LR."""

import math

import pytest
import torch

from common.tweedie import add_noise
from distillation.guidance import Guidance, encode_prompts
from distillation.runner import Item, Run, RunConfig, cosine_warmup
from distillation.schedules import T_SCHEDULES, W_SCHEDULES, make_t_schedule, weight


def test_vsd_step_lowers_the_lora_loss(load_tiny_sd):
    pipe = load_tiny_sd()
    guidance = Guidance.from_pipeline(pipe)
    lora = guidance.init_vsd(lora_rank=4)
    assert lora and all(p.requires_grad for p in lora)
    assert not any(p.requires_grad for n, p in pipe.unet.named_parameters() if "lora" not in n)
    cond = encode_prompts(pipe.tokenizer, pipe.text_encoder, ["a red circle"], "cpu")
    emb = torch.cat([encode_prompts(pipe.tokenizer, pipe.text_encoder, [""], "cpu"), cond])
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=g).requires_grad_(True)
    t_lora, noise_lora = torch.tensor([400]), torch.randn(1, 4, 8, 8, generator=g)
    x_t = add_noise(latents.detach(), noise_lora, guidance.alpha_bar(t_lora))
    with torch.no_grad():
        before = guidance.lora_loss(x_t, t_lora, noise_lora, cond).item()
        guidance.unet.disable_adapters()
        pre = guidance.unet_eps(x_t, t_lora, cond)
        guidance.unet.enable_adapters()
        torch.testing.assert_close(guidance.unet_eps(x_t, t_lora, cond), pre)  # B = 0: LoRA starts at the model
    optimizer = torch.optim.AdamW(lora, lr=1e-2, weight_decay=0.0)
    for _ in range(3):
        optimizer.zero_grad()
        loss = guidance.get_vsd_loss(latents, emb, 7.5, t=torch.tensor([600]), t_lora=t_lora,
                                     noise_lora=noise_lora, generators=[g])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = guidance.lora_loss(x_t, t_lora, noise_lora, cond).item()
    assert after < before - 1e-4, (before, after)


def run_latents(pipe, loss_type, items, steps=3, **kwargs):
    cfg = RunConfig(loss_type=loss_type, items=items, steps=steps, log_step=0, warmup_steps=0, lr=0.05,
                    guidance_scale=7.5, sdi_update_interval=2, inversion_n_steps=2, **kwargs)
    job = Run(cfg, pipe, torch.device("cpu"))
    job.optimise(progress=False)
    return job.rep.param.detach()


@pytest.mark.parametrize("loss_type,kwargs", [("sds", {}), ("sdi", {"t_schedule": "linear"}),
                                              ("ism", {"ism_inv_steps": 2}), ("pds", {})])
def test_batched_prompts_equal_single_prompt_runs(loss_type, kwargs, load_tiny_sd):
    src = torch.rand(3, 16, 16) * 2 - 1
    if loss_type == "pds":
        items = [Item("a red circle", "a green circle", src_image=src), Item("a blue square", "a red square",
                                                                            src_image=src.flip(0))]
    else:
        items = [Item("a red circle"), Item("a blue square")]
    batched = run_latents(load_tiny_sd(), loss_type, items, **kwargs)
    for b, it in enumerate(items):
        single = run_latents(load_tiny_sd(), loss_type, [it], **kwargs)
        torch.testing.assert_close(batched[b:b + 1], single, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(batched[0], batched[1])


@pytest.mark.parametrize("name", list(T_SCHEDULES))
def test_t_schedules_stay_in_range(name, load_tiny_sd):
    a = load_tiny_sd().scheduler.alphas_cumprod if name == "dreamtime" else None
    t = make_t_schedule(name, 200, 20, 980, torch.Generator().manual_seed(0), a)
    assert t.shape == (200,) and t.dtype == torch.long and t.min() >= 20 and t.max() <= 980
    if name in ("linear", "hifa", "dreamtime"):
        assert (t[1:] <= t[:-1]).all()
    if name == "linear":
        assert t[0] == 980 and t[-1] == 20
    if name == "hifa":
        assert t[0] == 980 and t[100] == math.floor(980 - 960 * math.sqrt(0.5))


def test_w_schedules_closed_forms():
    a = torch.tensor([0.9, 0.5, 0.01])
    expected = {"dreamfusion": 1 - a, "lucid": ((1 - a) / a).sqrt(), "fantasia3d": a.sqrt() * (1 - a),
                "constant": torch.ones(3)}
    assert set(expected) == set(W_SCHEDULES)
    for name, w in expected.items():
        torch.testing.assert_close(weight(name, a), w)


def test_cosine_warmup_matches_kaist_schedule():
    f = cosine_warmup(100, 750)
    assert f(0) == 0 and f(50) == 0.5 and f(100) == 1.0
    assert abs(f(499) - 0.5 * (1 + math.cos(math.pi * 399 / 650))) < 1e-12  # ~0.32 at the last of 500 steps
