"""Hidden cases for the VSD task (region ``vsd-loss``, ``distillation/vsd.py`` ``vsd_terms``).

Serves NYCU Lab 3 Task 2, KAIST CS492D A4 optional Task 3 and UMich EECS 498 HW5 part B Sec. 8 (relative points).
Every case calls the public ``guidance.get_vsd_loss`` with t, eps, t' and eps' given on the seeded tiny stand-in
UNet of :mod:`grading.cases._tiny_sd` with a non-zero LoRA, back-propagates the loss and returns dL/dx, which
must be g = w(t) (eps_pre_cfg(x_t, y, t) - eps_lora(x_t, y, t)) (ProlificDreamer, Wang et al. 2023, Eq. 9:
eps_pre with the adapters disabled and CFG, eps_lora with them enabled and the conditional prompt only; the
reference takes both from ``guidance.pretrained_and_lora_eps``, one [3B] UNet call on a peft UNet), and/or
the LoRA loss mean (eps_lora(x_t', y, t') - eps')^2 (Eq. 10) and its gradients to the LoRA parameters. Edge
cases: B = 3 with t = t_min, 500, t_max; guidance scales 1, 7.5 (the fixed value) and 100; a batch equals its
prompts run one at a time.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, Mistake
from grading.cases import _tiny_sd as tiny


def _inputs(seed: int, salt: str, batch: int):
    g = tiny.generator(seed, salt)
    guidance, unet, params = tiny.make_guidance(g, lora=True)
    x = tiny.latents(g, batch)
    emb = tiny.embeddings(g, batch, tiny.randint(g, 3, 6))
    return guidance, params, x, emb, tiny.randn(g, *x.shape), tiny.randn(g, *x.shape)


def _backward(guidance, params, x, emb, scale, t, noise, t_lora, noise_lora):
    """(dL/dx, the LoRA loss, dL/dphi flattened) of one get_vsd_loss call (lora_loss_weight 1, NYCU's value)."""
    for p in params:
        p.grad = None
    v = x.clone().requires_grad_(True)
    loss = guidance.get_vsd_loss(v, emb, guidance_scale=scale, t=t, noise=noise, lora_loss_weight=1.0, t_lora=t_lora,
                                 noise_lora=noise_lora)
    loss.backward()
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    return v.grad, guidance.aux["lora_loss"], grads


def _gradient(seed: int, salt: str, t: tuple[int, ...], t_lora: tuple[int, ...], scale: float = 7.5):
    """dL/dx of get_vsd_loss for B = len(t) prompts."""
    guidance, params, x, emb, noise, noise_lora = _inputs(seed, salt, len(t))
    grad, _, _ = _backward(guidance, params, x, emb, scale, torch.tensor(t), noise, torch.tensor(t_lora), noise_lora)
    return tiny.per_sample("grad", grad)


def _lora(seed: int, salt: str, t: tuple[int, ...], t_lora: tuple[int, ...]):
    """The LoRA loss of get_vsd_loss and its gradients to the LoRA parameters."""
    guidance, params, x, emb, noise, noise_lora = _inputs(seed, salt, len(t))
    _, loss, grads = _backward(guidance, params, x, emb, 7.5, torch.tensor(t), noise, torch.tensor(t_lora),
                               noise_lora)
    return {"lora_loss": tiny.output(loss), "lora_grads": tiny.output(grads)}


def _batch_vs_singles(seed: int) -> dict[str, torch.Tensor]:
    guidance, params, x, emb, noise, noise_lora = _inputs(seed, "vsd/batch-vs-singles", 3)
    t, t_lora, B = torch.tensor([20, 500, 980]), torch.tensor([700, 40, 300]), 3
    batch = _backward(guidance, params, x, emb, 7.5, t, noise, t_lora, noise_lora)[0]
    singles = [_backward(guidance, params, x[b:b + 1], emb[b::B], 7.5, t[b:b + 1], noise[b:b + 1], t_lora[b:b + 1],
                         noise_lora[b:b + 1])[0] for b in range(B)]
    return {**tiny.per_sample("batch", batch), **tiny.per_sample("singles", torch.cat(singles))}


_FORMULA = ("dL/dx must be g = w(t) (eps_pre - eps_lora) (ProlificDreamer Eq. 9): x_t = add_noise(x, noise, t); "
            "eps_pre, eps_lora = guidance.pretrained_and_lora_eps(x_t, t, text_embeddings, s) (one [3B] UNet call: "
            "eps_pre the pretrained model's CFG, adapters off; eps_lora the LoRA model's conditional prediction, "
            "no CFG); w(t) = guidance.weight(t). The target is eps_lora, not the drawn noise: VSD is not SDS plus a "
            "LoRA loss.")
_LORA = ("The LoRA loss must be guidance.lora_loss(x_t', t', eps', cond) on a fresh noisy sample x_t' = "
         "add_noise(x, noise_lora, t_lora) (Eq. 10), so the LoRA learns the score of the current latents.")

CASES = (
    Case("vsd/basic", 1.0, partial(_gradient, salt="vsd/basic", t=(500,), t_lora=(300,)), visibility="visible",
         title="dL/dx vs reference (B=1, t=500, s=7.5)", feedback=_FORMULA),
    Case("vsd/t-grid", 2.0, partial(_gradient, salt="vsd/t-grid", t=(20, 500, 980), t_lora=(980, 20, 500)),
         title="dL/dx for B=3 at t = 20 / 500 / 980 (s=7.5)", feedback=_FORMULA),
    Case("vsd/scale-1", 1.0, partial(_gradient, salt="vsd/scale-1", t=(250, 750), t_lora=(600, 100), scale=1.0),
         title="dL/dx with guidance scale 1 (B=2)",
         feedback=_FORMULA + " With s = 1 the CFG is the conditional prediction: this checks that eps_pre is the "
         "pretrained model's and eps_lora the LoRA model's."),
    Case("vsd/scale-100", 1.0, partial(_gradient, salt="vsd/scale-100", t=(100, 900), t_lora=(450, 550),
                                       scale=100.0),
         title="dL/dx with guidance scale 100 (B=2)", feedback=_FORMULA),
    Case("vsd/lora-loss", 2.0, partial(_lora, salt="vsd/lora-loss", t=(400,), t_lora=(800,)), visibility="visible",
         title="LoRA loss and its gradients to the LoRA parameters (B=1)", feedback=_LORA),
    Case("vsd/lora-loss-b3", 2.0, partial(_lora, salt="vsd/lora-loss-b3", t=(20, 500, 980), t_lora=(300, 900, 60)),
         title="LoRA loss and its LoRA gradients for B=3", feedback=_LORA),
    Case("vsd/batch-vs-singles", 1.0, _batch_vs_singles,
         title="a batch of 3 prompts equals the prompts run one at a time",
         feedback="Each prompt's gradient must not depend on its batch. " + _FORMULA),
)

_GRAD = tuple(c.id for c in CASES if "lora-loss" not in c.id)
_LORA_CASES = ("vsd/lora-loss", "vsd/lora-loss-b3")

_COND = "    cond = split_cfg_batch(text_embeddings)[1]\n"
_X_T = "    x_t = add_noise(x, noise, guidance.alpha_bar(t))\n"
_FUSED = "    eps_pre, eps_lora = guidance.pretrained_and_lora_eps(x_t, t, text_embeddings, guidance_scale)\n"
_W = "guidance.weight(t).view(-1, 1, 1, 1)"
_G = f"    g = {_W} * (eps_pre - eps_lora)\n"
_FIT = """\
    x_t_lora = add_noise(x, noise_lora, guidance.alpha_bar(t_lora))
    loss_lora = guidance.lora_loss(x_t_lora, t_lora, noise_lora, cond)
"""

MISTAKES = (
    Mistake("vsd-lora-cfg", "vsd-loss",
            _COND + _X_T + _FUSED.replace("eps_lora =", "_ =")
            + "    eps_lora = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)\n" + _G + _FIT,
            "The LoRA prediction is also under CFG: eps_lora is the LoRA model's conditional prediction alone "
            "(the second output of guidance.pretrained_and_lora_eps); only eps_pre uses the guidance scale.",
            tuple(c for c in _GRAD if c != "vsd/scale-1")),
    Mistake("vsd-adapters-on", "vsd-loss",
            _COND + _X_T + "    eps_pre = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)\n"
            + "    eps_lora = guidance.unet_eps(x_t, t, cond)\n" + _G + _FIT,
            "eps_pre comes from the LoRA model (the adapters are on): the pretrained prediction needs the adapters "
            "off; guidance.pretrained_and_lora_eps returns both predictions from one call.", _GRAD),
    Mistake("vsd-lora-same-sample", "vsd-loss",
            _COND + _X_T + _FUSED + _G + "    loss_lora = guidance.lora_loss(x_t, t, noise, cond)\n",
            "The LoRA is fitted on the VSD sample (x_t, t, eps) instead of its own fresh sample (t_lora, noise_lora): "
            "x_t' = add_noise(x, noise_lora, t_lora).", _LORA_CASES),
    Mistake("vsd-no-weight", "vsd-loss", _COND + _X_T + _FUSED + "    g = eps_pre - eps_lora\n" + _FIT,
            "VSD without the weight w(t) = guidance.weight(t) (ProlificDreamer Eq. 9; the docstring's w(t)).", _GRAD),
    Mistake("vsd-sds-plus-lora", "vsd-loss", _COND + _X_T + _FUSED + f"    g = {_W} * (eps_pre - noise)\n" + _FIT,
            "This is SDS plus a LoRA loss: VSD's update subtracts the LoRA model's prediction, "
            "g = w(t) (eps_pre - eps_lora) (Eq. 9), not the drawn noise; the LoRA only learns to predict it.", _GRAD),
)
