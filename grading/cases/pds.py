"""Hidden cases for the PDS task (region ``pds-loss``, ``distillation/pds.py`` ``pds_gradient``; KAIST CS492D A4
Task 2).

Every case calls the public ``guidance.get_pds_loss`` with t and both noises given, back-propagates the loss and
returns dL/dx_tgt, which must be g = grad_scale (z_tgt - z_src) (Posterior Distillation Sampling, Koo et al. 2024,
Eq. 11, with the official code's sign; the KAIST README writes the opposite one): both branches share eps_t and
eps_prev, t_prev = t - t_delta (t_delta = 2 on the official 500-step grid), mu = c0 x0_hat + c1 x_t of the CFG
Tweedie estimate with the official code's coefficients (``compute_posterior_mean``: the given one-step beta_t,
alpha_t = 1 - beta_t, alpha_bar_{t_prev}; Ho et al. 2020, Eq. 7), sigma_t = sqrt((1 - alpha_bar_prev) /
(1 - alpha_bar_t) beta_t), z = (x_prev - mu) / sigma_t; on the seeded tiny stand-in UNet of
:mod:`grading.cases._tiny_sd`. Edge cases: B = 3 with t = t_min, 500, t_max; guidance scales 7.5 (the fixed value)
and 100; grad_scale; another t_delta; the exact posterior (``posterior="exact"``: another beta_t handed in); a
batch equals its pairs run one at a time.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from grading.case import Case, Mistake
from grading.cases import _tiny_sd as tiny


def _pds_grad(guidance, x_src, x_tgt, e_src, e_tgt, scale, grad_scale, t, noise_t, noise_prev, t_delta,
              posterior="official"):
    """dL/dx_tgt of get_pds_loss with t and both noises given."""
    def loss(v: torch.Tensor) -> torch.Tensor:
        return guidance.get_pds_loss(x_src, v, e_src, e_tgt, guidance_scale=scale, grad_scale=grad_scale, t=t,
                                     noise_t=noise_t, noise_prev=noise_prev, t_delta=t_delta, posterior=posterior)

    return tiny.grad_of(loss, x_tgt)


def _inputs(seed: int, salt: str, batch: int):
    """Guidance, source and target latents [B, 4, h, w], shared noises, source and edit embeddings [2B, L, D]."""
    g = tiny.generator(seed, salt)
    guidance, _, _ = tiny.make_guidance(g)
    x_src = tiny.latents(g, batch)
    x_tgt = x_src + 0.5 * tiny.randn(g, *x_src.shape)  # an edit in progress: near the source
    length = tiny.randint(g, 3, 6)
    e_src = tiny.embeddings(g, batch, length)
    e_tgt = torch.cat([e_src[:batch], tiny.randn(g, batch, length, tiny.TEXT_DIM)])  # same uncond, edited cond
    return guidance, x_src, x_tgt, e_src, e_tgt, tiny.randn(g, *x_src.shape), tiny.randn(g, *x_src.shape)


def _gradient(seed: int, salt: str, t: tuple[int, ...], scale: float = 7.5, grad_scale: float = 1.0,
              t_delta: int = 2, posterior: str = "official"):
    guidance, x_src, x_tgt, e_src, e_tgt, noise_t, noise_prev = _inputs(seed, salt, len(t))
    grad = _pds_grad(guidance, x_src, x_tgt, e_src, e_tgt, scale, grad_scale, torch.tensor(t), noise_t, noise_prev,
                     t_delta, posterior)
    return tiny.per_sample("grad", grad)


def _batch_vs_singles(seed: int) -> dict[str, torch.Tensor]:
    guidance, x_src, x_tgt, e_src, e_tgt, noise_t, noise_prev = _inputs(seed, "pds/batch-vs-singles", 3)
    t, B = torch.tensor([20, 500, 980]), 3
    batch = _pds_grad(guidance, x_src, x_tgt, e_src, e_tgt, 7.5, 1.0, t, noise_t, noise_prev, 2)
    singles = [_pds_grad(guidance, x_src[b:b + 1], x_tgt[b:b + 1], e_src[b::B], e_tgt[b::B], 7.5, 1.0, t[b:b + 1],
                         noise_t[b:b + 1], noise_prev[b:b + 1], 2) for b in range(B)]
    return {**tiny.per_sample("batch", batch), **tiny.per_sample("singles", torch.cat(singles))}


_FORMULA = ("dL/dx_tgt must be g = grad_scale (z_tgt - z_src) (PDS Eq. 11, the official sign): both branches use "
            "the same eps_t and eps_prev, x_t = add_noise(x, eps_t, t), x_prev = add_noise(x, eps_prev, t - t_delta), "
            "mu = c0 x0_hat + c1 x_t of the CFG Tweedie estimate with the official code's coefficients "
            "c0 = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t), c1 = sqrt(1 - beta_t) (1 - alpha_bar_prev) / "
            "(1 - alpha_bar_t), sigma_t = sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t), with the beta_t "
            "argument (the schedule's one-step betas[t]), z = (x_prev - mu) / sigma_t.")

# z = (x_prev - mu) / sigma_t cancels in float32 (sigma_t ~ 0.03-0.1): right answers written in another form differ
# from the reference by up to 4e-5, the catalogued mistakes by 0.01 or more.
_TOL = {"rtol": 1e-3, "partial": ((1e-3, 1.0), (1e-2, 0.5))}

CASES = (
    Case("pds/basic", 1.0, partial(_gradient, salt="pds/basic", t=(500,)), visibility="visible",
         title="dL/dx_tgt vs reference (B=1, t=500, s=7.5, t_delta=2)", feedback=_FORMULA),
    Case("pds/t-grid", 2.0, partial(_gradient, salt="pds/t-grid", t=(20, 500, 980)),
         title="dL/dx_tgt for B=3 at t = 20 / 500 / 980", feedback=_FORMULA),
    Case("pds/scale-100", 1.0, partial(_gradient, salt="pds/scale-100", t=(200, 800), scale=100.0),
         title="dL/dx_tgt with guidance scale 100 (B=2)", feedback=_FORMULA),
    Case("pds/grad-scale", 1.0, partial(_gradient, salt="pds/grad-scale", t=(350, 650), grad_scale=0.5),
         title="grad_scale multiplies the gradient (grad_scale=0.5, B=2)",
         feedback="g must be multiplied by the grad_scale argument. " + _FORMULA),
    Case("pds/t-delta", 1.0, partial(_gradient, salt="pds/t-delta", t=(100, 600), t_delta=10),
         title="the previous level is t - t_delta (t_delta=10, B=2)",
         feedback="t_prev = t - t_delta, with the t_delta argument (2 on the official 500-step grid). " + _FORMULA),
    Case("pds/exact-posterior", 1.0, partial(_gradient, salt="pds/exact-posterior", t=(300, 700), posterior="exact"),
         title="posterior='exact': the beta_t argument sets the posterior (B=2)",
         feedback="Use the beta_t argument (do not recompute it): get_pds_loss hands in the schedule's betas[t] "
                  "(official) or 1 - alpha_bar_t / alpha_bar_prev (posterior='exact'). " + _FORMULA),
    Case("pds/batch-vs-singles", 2.0, _batch_vs_singles,
         title="a batch of 3 pairs equals the pairs run one at a time",
         feedback="Each pair's gradient must not depend on its batch: pair_embeddings(src, tgt) orders the "
                  "embeddings for x = cat(src, tgt). " + _FORMULA),
)

CASES = tuple(replace(c, **_TOL) for c in CASES)
_ALL = tuple(c.id for c in CASES)

_T = """\
    t_prev = (t - t_delta).clamp(min=0)
    a_t, a_prev = guidance.alpha_bar(t), guidance.alpha_bar(t_prev)  # [B]
"""
_COEF = """\
    c0 = a_prev.sqrt() * beta_t / (1 - a_t)  # posterior mean coefficients, alpha_t = 1 - beta_t
    c1 = (1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)
    sigma_t = ((1 - a_prev) / (1 - a_t) * beta_t).sqrt()
"""
_HEAD = _T + _COEF + """\
    c0, c1, sigma_t = (torch.cat([v, v]).view(-1, 1, 1, 1) for v in (c0, c1, sigma_t))  # [2B, 1, 1, 1]
    x0 = torch.cat([x_src, x_tgt])  # [2B]: src then tgt
"""
_NOISY = """\
    x_t = add_noise(x0, torch.cat([noise_t, noise_t]), torch.cat([a_t, a_t]))
    x_prev = add_noise(x0, torch.cat([noise_prev, noise_prev]), torch.cat([a_prev, a_prev]))
"""
_EMB = "    embeddings = pair_embeddings(src_text_embedding, tgt_text_embedding)\n"
_TAIL = """\
    eps_hat = guidance.predict_eps(x_t, torch.cat([t, t]), embeddings, guidance_scale)
    x0_hat = x0_from_eps(x_t, eps_hat, torch.cat([a_t, a_t]))
    mu = c0 * x0_hat + c1 * x_t
    z_src, z_tgt = ((x_prev - mu) / sigma_t).chunk(2)
"""
_G = "    g = grad_scale * (z_tgt - z_src)\n"

MISTAKES = (
    Mistake("pds-readme-sign", "pds-loss", _HEAD + _NOISY + _EMB + _TAIL + "    g = grad_scale * (z_src - z_tgt)\n",
            "PDS with the opposite sign (z_src - z_tgt, as the KAIST README writes it): the official code, which "
            "edits toward the target prompt, uses g = z_tgt - z_src.", _ALL),
    Mistake("pds-independent-noises", "pds-loss",
            _HEAD + "    noise_t_tgt, noise_prev_tgt = torch.randn_like(noise_t), torch.randn_like(noise_prev)\n"
            "    x_t = add_noise(x0, torch.cat([noise_t, noise_t_tgt]), torch.cat([a_t, a_t]))\n"
            "    x_prev = add_noise(x0, torch.cat([noise_prev, noise_prev_tgt]), torch.cat([a_prev, a_prev]))\n"
            + _EMB + _TAIL + _G,
            "PDS with independent noises for the source and the target: both branches must share eps_t and "
            "eps_prev (the noise_t and noise_prev given), so their z's differ only through the edit.", _ALL),
    Mistake("pds-t-minus-one", "pds-loss", _HEAD.replace("t - t_delta", "t - 1") + _NOISY + _EMB + _TAIL + _G,
            "t_prev = t - 1 (a 1000-step grid) instead of t - t_delta: use the t_delta argument (2, the official "
            "500-step grid).", _ALL),
    Mistake("pds-no-grad-scale", "pds-loss", _HEAD + _NOISY + _EMB + _TAIL + "    g = z_tgt - z_src\n",
            "grad_scale is ignored: g = grad_scale (z_tgt - z_src).", ("pds/grad-scale",)),
    Mistake("pds-cat-embeddings", "pds-loss",
            _HEAD + _NOISY + "    embeddings = torch.cat([src_text_embedding, tgt_text_embedding])\n" + _TAIL + _G,
            "The two [uncond, cond] embedding pairs are concatenated as is, so the CFG halves pair latents with the "
            "wrong prompts: for x = cat(src, tgt) use pair_embeddings(src, tgt) = [u_src, u_tgt, c_src, c_tgt].",
            _ALL),
    Mistake("pds-exact-posterior", "pds-loss",
            _HEAD.replace(_COEF, _COEF.replace("beta_t", "beta")).replace(
                _T, _T + "    beta = 1 - a_t / a_prev  # the jump t -> t_prev\n") + _NOISY + _EMB + _TAIL + _G,
            "mu and sigma_t use the exact posterior of the t -> t_prev jump (beta = 1 - alpha_bar_t / alpha_bar_prev, "
            "as in the slides' DDIM form of mu): the official code, graded here, uses the beta_t argument (the "
            "schedule's one-step betas[t]); with the exact posterior PDS reduces to a weighted DDS "
            "(docs/distillation.md).", tuple(c for c in _ALL if c != "pds/exact-posterior")),
    Mistake("pds-schedule-beta", "pds-loss",
            _HEAD.replace(_T, _T + "    beta_t = guidance.beta(t)  # recomputed, not the argument\n") + _NOISY + _EMB
            + _TAIL + _G,
            "beta_t is recomputed from the schedule instead of taken from the beta_t argument, so "
            "posterior='exact' has no effect: use the beta_t handed in.", ("pds/exact-posterior",)),
)
