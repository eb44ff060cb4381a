"""Hidden cases for the SDS task (region ``sds-loss``, ``distillation/sds.py`` ``sds_gradient``).

Serves KAIST CS492D A4 Task 1, NYCU Lab 3 Task 1 and UMich EECS 498 HW5 part B Sec. 7 (points are relative; the
grader scales them to each homework's task). Every case calls the public ``guidance.get_sds_loss`` with t and the
noise given, back-propagates the loss and returns dL/dx, which must be g = grad_scale w(t) (eps_hat_cfg - eps)
for every prompt (DreamFusion, Poole et al. 2023, Eq. 3; w(t) = 1 - alpha_bar_t; CFG eps_u + s (eps_c - eps_u);
sum reduction, so each prompt's gradient does not depend on its batch), on the seeded tiny stand-in UNet of
:mod:`grading.cases._tiny_sd`. Edge cases: B = 3 with t = t_min, 500, t_max; guidance scales 1, 7.5, 25
(KAIST/NYCU's fixed value) and 100 (UMich); grad_scale; no backward through the UNet (a hook on every UNet
parameter); a batch equals its prompts run one at a time.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, Mistake
from grading.cases import _tiny_sd as tiny


def _sds_grad(guidance, x, emb, scale, grad_scale, t, noise) -> torch.Tensor:
    """dL/dx of get_sds_loss with t and the noise given."""
    def loss(v: torch.Tensor) -> torch.Tensor:
        return guidance.get_sds_loss(v, emb, guidance_scale=scale, grad_scale=grad_scale, t=t, noise=noise)

    return tiny.grad_of(loss, x)


def _inputs(seed: int, salt: str, batch: int):
    g = tiny.generator(seed, salt)
    guidance, unet, _ = tiny.make_guidance(g)
    x = tiny.latents(g, batch)
    return guidance, unet, x, tiny.randn(g, *x.shape), tiny.embeddings(g, batch, tiny.randint(g, 3, 6))


def _gradient(seed: int, salt: str, t: tuple[int, ...], scale: float, grad_scale: float = 1.0):
    """dL/dx of get_sds_loss for B = len(t) prompts at timesteps t."""
    guidance, _, x, noise, emb = _inputs(seed, salt, len(t))
    return tiny.per_sample("grad", _sds_grad(guidance, x, emb, scale, grad_scale, torch.tensor(t), noise))


def _no_unet_backward(seed: int) -> dict[str, torch.Tensor]:
    """Raw outputs: dL/dx, what a hook on every UNet parameter saw during get_sds_loss and its backward, and which
    parameters hold a ``.grad`` afterwards (on the reference: nothing, none)."""
    guidance, unet, x, noise, emb = _inputs(seed, "sds/no-unet-backward", 2)
    tally = tiny.watch_parameters(unet)
    grad = _sds_grad(guidance, x, emb, 25.0, 1.0, torch.tensor([300, 700]), noise)
    seen = torch.tensor([p.grad is not None for p in unet.parameters()])
    return {**tiny.per_sample("grad", grad), "unet_grad_calls": tiny.output(tally["calls"]),
            "unet_grad_abs_sum": tiny.output(tally["abs_sum"]), "unet_params_with_grad": tiny.output(seen)}


def _no_unet_backward_verdict(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """In the trusted parent: dL/dx as is, and one flag, 1.0 when no hook call, no hook gradient and no parameter
    ``.grad`` reached the UNet.

    The hook tally and the ``.grad`` presence can only be observed in the worker, so a region that patches
    ``torch`` could still zero them; that is safe because the case also needs dL/dx to match the reference's
    g = grad_scale w(t) (eps_hat - eps) per prompt, which no patch produces without computing the SDS gradient
    itself: the evidence only decides between correct gradients with and without a wasted UNet backward.
    """
    grads = {k: v for k, v in outputs.items() if k.startswith("grad_")}
    calls, abs_sum, seen = (outputs[k] for k in ("unet_grad_calls", "unet_grad_abs_sum", "unet_params_with_grad"))
    if calls.numel() != 1 or abs_sum.numel() != 1 or seen.ndim != 1 or not seen.numel():
        raise ValueError("the UNet hook tally must be two scalars and one flag per parameter")
    untouched = float(calls) == 0.0 and float(abs_sum) == 0.0 and not bool((seen != 0).any())
    return {**grads, "unet_untouched": tiny.output(1.0 if untouched else 0.0)}


def _batch_vs_singles(seed: int) -> dict[str, torch.Tensor]:
    """The gradient of a batch of 3 prompts and the 3 prompts' gradients computed one at a time."""
    guidance, _, x, noise, emb = _inputs(seed, "sds/batch-vs-singles", 3)
    t, B = torch.tensor([20, 500, 980]), 3
    batch = _sds_grad(guidance, x, emb, 25.0, 1.0, t, noise)
    singles = [_sds_grad(guidance, x[b:b + 1], emb[b::B], 25.0, 1.0, t[b:b + 1], noise[b:b + 1]) for b in range(B)]
    return {**tiny.per_sample("batch", batch), **tiny.per_sample("singles", torch.cat(singles))}


_FORMULA = ("dL/dx must be g = grad_scale * w(t) * (eps_hat - eps) per prompt (DreamFusion Eq. 3): x_t = "
            "add_noise(x, noise, alpha_bar_t), eps_hat = guidance.predict_eps(x_t, t, text_embeddings, s) "
            "(eps_u + s (eps_c - eps_u)), w(t) = guidance.weight(t) = 1 - alpha_bar_t.")
_BATCH = ("Each prompt's gradient must not depend on its batch: one t and one noise per prompt, CFG halves "
          "cat(uncond, cond), and no averaging over the batch (the loss is a sum).")

CASES = (
    Case("sds/basic", 1.0, partial(_gradient, salt="sds/basic", t=(500,), scale=7.5), visibility="visible",
         title="dL/dx vs reference (B=1, t=500, s=7.5)", feedback=_FORMULA),
    Case("sds/scale-1", 1.0, partial(_gradient, salt="sds/scale-1", t=(250, 750), scale=1.0), visibility="visible",
         title="dL/dx with guidance scale 1 (B=2)", feedback=_FORMULA + " With s = 1, eps_hat = eps_c."),
    Case("sds/t-grid", 2.0, partial(_gradient, salt="sds/t-grid", t=(20, 500, 980), scale=25.0),
         title="dL/dx for B=3 at t = 20 / 500 / 980 (s=25)", feedback=_FORMULA),
    Case("sds/scale-100", 1.0, partial(_gradient, salt="sds/scale-100", t=(100, 900), scale=100.0),
         title="dL/dx with guidance scale 100 (B=2)",
         feedback=_FORMULA + " CFG is diffusers' eps_u + s (eps_c - eps_u), not threestudio's "
                             "eps_c + s (eps_c - eps_u)."),
    Case("sds/grad-scale", 1.0, partial(_gradient, salt="sds/grad-scale", t=(150, 650), scale=7.5, grad_scale=2.5),
         title="grad_scale multiplies the gradient (grad_scale=2.5, B=2)",
         feedback="g must be multiplied by the grad_scale argument. " + _FORMULA),
    Case("sds/no-unet-backward", 2.0, _no_unet_backward, derive=_no_unet_backward_verdict,
         title="no backward through the UNet (hooks on its parameters see no gradient)",
         feedback="SDS drops the UNet Jacobian: eps_hat is a constant (no_grad); dL/dx = g exactly and nothing may "
                  "back-propagate through the UNet. " + _FORMULA),
    Case("sds/batch-vs-singles", 2.0, _batch_vs_singles,
         title="a batch of 3 prompts equals the prompts run one at a time", feedback=_BATCH),
)

_ALL = tuple(c.id for c in CASES)
_BATCHED = tuple(c for c in _ALL if c != "sds/basic")  # every case with B > 1

_X_T = "    x_t = add_noise(x, noise, guidance.alpha_bar(t))\n"
_EPS = "    eps_hat = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)\n"
_W = "guidance.weight(t).view(-1, 1, 1, 1)"
_CHUNK = ("    eps_uncond, eps_cond = guidance.unet_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), "
          "text_embeddings).chunk(2)\n")

MISTAKES = (
    Mistake("sds-no-weight", "sds-loss", _X_T + _EPS + "    g = grad_scale * (eps_hat - noise)\n",
            "SDS without the weight w(t) = guidance.weight(t) = 1 - alpha_bar_t (DreamFusion Eq. 3).", _ALL),
    Mistake("sds-reversed", "sds-loss", _X_T + _EPS + f"    g = grad_scale * {_W} * (noise - eps_hat)\n",
            "SDS with the difference reversed (eps - eps_hat): the update must be w(t) (eps_hat - eps).", _ALL),
    Mistake("sds-threestudio-cfg", "sds-loss",
            _X_T + _CHUNK + "    eps_hat = eps_cond + guidance_scale * (eps_cond - eps_uncond)\n"
            f"    g = grad_scale * {_W} * (eps_hat - noise)\n",
            "CFG in threestudio's convention eps_c + s (eps_c - eps_u) (its scale s is our s + 1): use "
            "eps_u + s (eps_c - eps_u), guidance.predict_eps.", _ALL),
    Mistake("sds-unet-backward", "sds-loss",
            "    with torch.enable_grad():\n"
            "        x = x.detach().requires_grad_(True)\n"
            "        x_t = add_noise(x, noise, guidance.alpha_bar(t))\n"
            "        eps_hat = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)\n"
            f"        (0.5 * grad_scale * ({_W} * (eps_hat - noise) ** 2).sum()).backward()\n"
            "    g, x_t, eps_hat = x.grad, x_t.detach(), eps_hat.detach()\n",
            "SDS back-propagates the diffusion loss through the UNet (the UNet Jacobian is kept): SDS treats "
            "eps_hat as a constant, g = w(t) (eps_hat - eps) with no backward through the UNet.", _ALL),
    Mistake("sds-batch-mean", "sds-loss",
            _X_T + _EPS + f"    g = grad_scale * {_W} * (eps_hat - noise) / x.shape[0]\n",
            "The gradient is averaged over the batch (divided by B): each prompt's dL/dx must be its own g "
            "(sum reduction), whatever the batch size.", _BATCHED),
    Mistake("sds-no-grad-scale", "sds-loss", _X_T + _EPS + f"    g = {_W} * (eps_hat - noise)\n",
            "grad_scale is ignored: g = grad_scale w(t) (eps_hat - eps).", ("sds/grad-scale",)),
    Mistake("sds-cfg-interleaved", "sds-loss",
            _X_T + "    eps_both = guidance.unet_eps(x_t.repeat_interleave(2, dim=0), t.repeat_interleave(2), "
            "text_embeddings)\n"
            "    eps_uncond, eps_cond = eps_both[0::2], eps_both[1::2]\n"
            "    eps_hat = eps_uncond + guidance_scale * (eps_cond - eps_uncond)\n"
            f"    g = grad_scale * {_W} * (eps_hat - noise)\n",
            "The CFG batch pairs latents and prompts wrongly for B > 1 (interleaved latents against embeddings "
            "ordered cat(uncond, cond)): use cat([x_t, x_t]) and chunk(2), as guidance.predict_eps does.", _BATCHED),
)
