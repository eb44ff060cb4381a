"""Hidden cases for the SDI task (NYCU Lab 3 Task 3; ``distillation/sdi.py``): regions ``sdi-invert-noise``
(``ddim_invert``), ``sdi-refresh`` (``sdi_target``) and ``sdi-loss`` (``sdi_loss``).

Score Distillation via Reparametrized DDIM (Lukoianov et al. 2024, Alg. 1), on the seeded tiny stand-in UNet of
:mod:`grading.cases._tiny_sd`:

- inversion cases: ``ddim_invert`` of x0 to exactly t on the grid tau_k = round(k t / n) with CFG at each tau_k and
  the given inversion ``step`` (default the SDI authors' ``distillation.sdi.authors_inversion_step``, stochasticity
  eta with the given noises), for n = 10 (the fixed value) and off-grid n = 3 and 7 where round != floor;
- target cases: ``sdi_target`` = Tweedie estimate of the CFG prediction at (x_t, t), scored apart from the
  inversion (a trusted inversion stands in for ``ddim_invert`` during these cases);
- loss cases: ``sdi_loss`` over many steps with a counting ``refresh``: refresh at the first step (no cached target)
  and every ``update_interval`` steps, loss 1/2 ||x - target||^2 (sum) and its gradient;
- one end-to-end case through the public ``guidance.get_sdi_loss`` (all three regions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch

from grading.case import Case, Mistake
from grading.cases import _tiny_sd as tiny

INV_SCALE, INV_ETA, INV_STEPS, SCALE = -7.5, 0.3, 10, 7.5  # NYCU's fixed SDI hyperparameters


def _noises(g: torch.Generator, like: torch.Tensor, n: int, eta: float) -> list[torch.Tensor | None]:
    return [tiny.randn(g, *like.shape) if eta > 0 else None for _ in range(n)]


def _invert(seed: int, salt: str, t: tuple[int, ...], runs: tuple[tuple[int, float, float], ...],
            ddim_step: bool = False):
    """x_t = ddim_invert(x0 -> t) for each (n_steps, guidance_scale, eta) of ``runs`` (with ``ddim_step``: the
    step argument is ``common.ddim.ddim_inversion_step``, the ``inversion_form="ddim"`` option)."""
    from common.ddim import ddim_inversion_step
    from distillation import sdi

    step = {"step": ddim_inversion_step} if ddim_step else {}

    g = tiny.generator(seed, salt)
    guidance, _, _ = tiny.make_guidance(g)
    x0 = tiny.latents(g, len(t))
    emb = tiny.embeddings(g, len(t), tiny.randint(g, 3, 6))
    out = {}
    for n, scale, eta in runs:
        with torch.no_grad():
            x_t = sdi.ddim_invert(guidance, x0, torch.tensor(t), emb, scale, eta, _noises(g, x0, n, eta), **step)
        out.update(tiny.per_sample(f"x_t_n{n}", x_t))
    return out


def trusted_invert(guidance, x0, t, text_embeddings, guidance_scale, eta, noises, step=None):
    """The reference inversion (grid tau_k = round(k t / n), CFG, the given step, else the authors' one)."""
    from distillation.sdi import authors_inversion_step

    step = step or authors_inversion_step
    n = len(noises)
    taus = (torch.arange(n + 1)[:, None] * t[None, :] / n).round().long()  # [n+1, B]
    x = x0
    for k in range(n):
        eps_hat = guidance.predict_eps(x, taus[k], text_embeddings, guidance_scale)
        x = step(x, eps_hat, guidance.alpha_bar(taus[k]), guidance.alpha_bar(taus[k + 1]), eta, noises[k])
    return x


@contextmanager
def _trusted_inversion(module) -> Iterator[None]:
    """Run ``module.ddim_invert`` as the reference for the duration (scores ``sdi-refresh`` apart)."""
    student = module.ddim_invert
    module.ddim_invert = trusted_invert
    try:
        yield
    finally:
        module.ddim_invert = student


def _target(seed: int, salt: str, t: tuple[int, ...]):
    """x0_target = sdi_target(x0, t) with the fixed SDI hyperparameters (s 7.5, inversion -7.5 / 0.3 / 10)."""
    from distillation import sdi

    g = tiny.generator(seed, salt)
    guidance, _, _ = tiny.make_guidance(g)
    x0 = tiny.latents(g, len(t))
    emb = tiny.embeddings(g, len(t), tiny.randint(g, 3, 6))
    noises = _noises(g, x0, INV_STEPS, INV_ETA)
    with torch.no_grad(), _trusted_inversion(sdi):
        target = sdi.sdi_target(guidance, x0, torch.tensor(t), emb, SCALE, INV_SCALE, INV_ETA, noises)
    return tiny.per_sample("target", target)


def _schedule(seed: int, salt: str, start: int, steps: int, interval: int):
    """sdi_loss over steps start..start+steps-1 from no cached target; refresh() hands out a new target per call.

    Returns the loss and dL/dx of every step, which steps refreshed (1.0) and the final cached target.
    """
    from distillation import sdi

    g = tiny.generator(seed, salt)
    x = tiny.randn(g, steps, 2, 4, tiny.randint(g, 3, 6), tiny.randint(g, 3, 6))  # [steps] latents of B = 2
    fresh = tiny.randn(g, steps + 1, *x.shape[1:])  # the targets refresh() hands out, in call order
    calls: list[int] = []
    target, losses, grads, refreshed = None, [], [], torch.zeros(steps)
    for k in range(steps):
        def refresh(k: int = k) -> torch.Tensor:
            calls.append(k)
            return fresh[len(calls) - 1].clone()

        v = x[k].clone().requires_grad_(True)
        loss, target = sdi.sdi_loss(v, target, start + k, interval, refresh)
        loss.backward()
        losses.append(loss.detach())
        grads.append(v.grad)
        refreshed[sorted(set(calls))] = 1.0
    return {"losses": tiny.output(torch.stack(losses)), "grads": tiny.output(torch.stack(grads)),
            "refreshed": tiny.output(refreshed), "target": tiny.output(target)}


def _end_to_end(seed: int) -> dict[str, torch.Tensor]:
    """4 steps of get_sdi_loss (update interval 2, t annealed 800 -> 770) on moving latents: dL/dx of each step."""
    g = tiny.generator(seed, "sdi/end-to-end")
    guidance, _, _ = tiny.make_guidance(g)
    x = tiny.latents(g, 2)
    emb = tiny.embeddings(g, 2, tiny.randint(g, 3, 6))
    drift = tiny.randn(g, 4, *x.shape)
    gens = [tiny.generator(seed, f"sdi/end-to-end/{b}") for b in range(2)]
    grads = []
    for step, t in enumerate((800, 790, 780, 770)):
        latents = x + 0.1 * drift[step]
        t_now = torch.tensor([t, t - 300])
        grads.append(tiny.grad_of(partial(guidance.get_sdi_loss, text_embeddings=emb, guidance_scale=SCALE, t=t_now,
                                          step=step, update_interval=2, inversion_n_steps=INV_STEPS,
                                          inversion_guidance_scale=INV_SCALE, inversion_eta=INV_ETA,
                                          generators=gens), latents))
    return tiny.per_sample("grads_step", torch.stack(grads))


_INVERT = ("ddim_invert must take n = len(noises) DDIM inversion steps on the grid tau_k = round(k t / n) (tau_0 = 0, "
           "tau_n = t exactly): eps_hat = guidance.predict_eps(x, tau_k, text_embeddings, guidance_scale), then "
           "the step argument step(x, eps_hat, alpha_bar(tau_k), alpha_bar(tau_k+1), eta, noises[k]) (by default "
           "the SDI authors' x_next = sqrt(a_next) x0_hat + sqrt(1 - a_next) eps_hat + sigma z).")
_TARGET = ("sdi_target must return the Tweedie estimate (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) "
           "with eps_hat = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale) at the inverted x_t = "
           "ddim_invert(x0 -> t, inversion_guidance_scale, inversion_eta, noises, step).")
_LOSS = ("sdi_loss must refresh the target when none is cached and every update_interval steps "
         "(step % update_interval == 0), reuse the cached one otherwise, and return 1/2 ||x - target||^2 (sum).")

CASES = (
    Case("sdi/invert-basic", 1.0, partial(_invert, salt="sdi/invert-basic", t=(700,), runs=((10, INV_SCALE, 0.0),)),
         visibility="visible", title="DDIM inversion x0 -> x_t (B=1, t=700, 10 steps, s=-7.5, eta=0)",
         feedback=_INVERT),
    Case("sdi/invert-grid", 2.0, partial(_invert, salt="sdi/invert-grid", t=(333, 700, 980),
                                         runs=((3, INV_SCALE, 0.0), (7, 2.5, 0.0))),
         title="DDIM inversion: the grid tau_k = round(k t / n) for n = 3 and 7 (B=3)", feedback=_INVERT),
    Case("sdi/invert-eta", 1.0, partial(_invert, salt="sdi/invert-eta", t=(500, 980),
                                        runs=((INV_STEPS, INV_SCALE, INV_ETA),)),
         title="DDIM inversion: stochastic steps (eta=0.3, 10 steps, B=2)",
         feedback=_INVERT + " With eta > 0 each step adds sigma * noises[k]."),
    Case("sdi/invert-step", 1.0, partial(_invert, salt="sdi/invert-step", t=(400, 900),
                                         runs=((INV_STEPS, INV_SCALE, INV_ETA),), ddim_step=True),
         title="DDIM inversion with the step argument set to the DDIM form (inversion_form='ddim', eta=0.3, B=2)",
         feedback=_INVERT + " Take each step with the step argument (inversion_form chooses it), not a fixed form."),
    Case("sdi/target-basic", 1.0, partial(_target, salt="sdi/target-basic", t=(600,)),
         title="target: Tweedie estimate at the inverted latent (B=1, t=600)", feedback=_TARGET),
    Case("sdi/target-t-grid", 2.0, partial(_target, salt="sdi/target-t-grid", t=(20, 500, 980)),
         title="target for B=3 at t = 20 / 500 / 980", feedback=_TARGET),
    Case("sdi/loss-schedule", 2.0, partial(_schedule, salt="sdi/loss-schedule", start=0, steps=60, interval=25),
         visibility="visible", title="loss: refreshes at steps 0, 25, 50 over 60 steps, loss and gradient",
         feedback=_LOSS),
    Case("sdi/loss-interval", 1.0, partial(_schedule, salt="sdi/loss-interval", start=5, steps=20, interval=7),
         title="loss: no cached target at step 5, then refreshes every 7 steps", feedback=_LOSS),
    Case("sdi/end-to-end", 2.0, _end_to_end,
         title="get_sdi_loss over 4 steps (update interval 2), all three parts together",
         feedback="get_sdi_loss uses all three parts: " + _LOSS),
)

_INV_OUT = """\
    return x
"""
_GRID = """\
    taus = (torch.arange(n_steps + 1, device=t.device)[:, None] * t[None, :] / n_steps).round().long()  # [n+1, B]
"""
_LOOP = """\
    x = x0
    for k in range(n_steps):
        eps_hat = guidance.predict_eps(x, taus[k], text_embeddings, guidance_scale)
        x = step(x, eps_hat, guidance.alpha_bar(taus[k]), guidance.alpha_bar(taus[k + 1]), eta, noises[k])
"""
_N = "    n_steps = len(noises)\n"

MISTAKES = (
    Mistake("sdi-invert-t-plus-delta", "sdi-invert-noise",
            _N + """\
    t_end = (t + 1000 // n_steps).clamp(max=999)  # one grid step past t, as in threestudio
    taus = (torch.arange(n_steps + 1, device=t.device)[:, None] * t_end[None, :] / n_steps).round().long()
""" + _LOOP + _INV_OUT,
            "The inversion ends at t + delta (threestudio's grid) instead of exactly t: the target is then denoised "
            "as if at t from a latent at another level. Invert on tau_k = round(k t / n).",
            ("sdi/invert-basic", "sdi/invert-grid", "sdi/invert-eta", "sdi/invert-step", "sdi/end-to-end")),
    Mistake("sdi-invert-floor", "sdi-invert-noise",
            _N + "    taus = torch.arange(n_steps + 1, device=t.device)[:, None] * t[None, :] // n_steps  # [n+1, B]\n"
            + _LOOP + _INV_OUT,
            "The inversion grid truncates k t / n (floor) instead of rounding: tau_k = round(k t / n).",
            ("sdi/invert-grid",)),
    Mistake("sdi-invert-no-eta", "sdi-invert-noise",
            _N + _GRID + _LOOP.replace(", eta, noises[k])", ")") + _INV_OUT,
            "The inversion ignores eta and its noises (always deterministic DDIM): with eta > 0 each step adds "
            "sigma * noises[k] (step(..., eta, noises[k])).",
            ("sdi/invert-eta", "sdi/invert-step", "sdi/end-to-end")),
    Mistake("sdi-invert-ddim-form", "sdi-invert-noise",
            _N + _GRID + _LOOP.replace("x = step(", "x = ddim_inversion_step(") + _INV_OUT,
            "The inversion always uses common.ddim.ddim_inversion_step (sqrt(1 - a_next - sigma^2) eps_hat + sigma z) "
            "instead of the step argument: by default the SDI authors' step, sqrt(1 - a_next) eps_hat + sigma z.",
            ("sdi/invert-eta", "sdi/end-to-end")),
    Mistake("sdi-invert-fixed-authors-step", "sdi-invert-noise",
            _N + _GRID + _LOOP.replace("x = step(", "x = authors_inversion_step(") + _INV_OUT,
            "The inversion always takes the authors' step instead of the step argument, so inversion_form='ddim' "
            "has no effect: call step(x, eps_hat, alpha_bar(tau_k), alpha_bar(tau_k+1), eta, noises[k]).",
            ("sdi/invert-step",)),
    Mistake("sdi-target-inversion-scale", "sdi-refresh",
            """\
    x_t = ddim_invert(guidance, x0, t, text_embeddings, inversion_guidance_scale, inversion_eta, noises, step)
    eps_hat = guidance.predict_eps(x_t, t, text_embeddings, inversion_guidance_scale)
    return x0_from_eps(x_t, eps_hat, guidance.alpha_bar(t))
""",
            "The target's prediction uses the inversion guidance scale: the Tweedie estimate at (x_t, t) uses "
            "guidance_scale (7.5); inversion_guidance_scale (-7.5) is for ddim_invert only.",
            ("sdi/target-basic", "sdi/target-t-grid", "sdi/end-to-end")),
    Mistake("sdi-refresh-every-step", "sdi-loss",
            "    target = refresh()\n    loss = 0.5 * ((latents - target) ** 2).sum()\n",
            "The target is refreshed at every step: refresh only when none is cached or step % update_interval == 0 "
            "(reuse the cache in between).", ("sdi/loss-schedule", "sdi/loss-interval", "sdi/end-to-end")),
    Mistake("sdi-refresh-never", "sdi-loss",
            "    if target is None:\n        target = refresh()\n    loss = 0.5 * ((latents - target) ** 2).sum()\n",
            "The target is computed once and never refreshed: refresh it every update_interval steps.",
            ("sdi/loss-schedule", "sdi/loss-interval", "sdi/end-to-end")),
    Mistake("sdi-loss-mean", "sdi-loss",
            "    if target is None or step % update_interval == 0:\n        target = refresh()\n"
            "    loss = 0.5 * ((latents - target) ** 2).mean()\n",
            "The loss is a mean: SDI's loss is 1/2 ||x - target||^2, summed (dL/dx = x - target for every prompt).",
            ("sdi/loss-schedule", "sdi/loss-interval", "sdi/end-to-end")),
)
