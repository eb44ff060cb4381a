"""kaist-a5 cases of ``one_step_process`` (region ``sync-one-step``, graded with Task 1): the synchronized variable.

SyncTweedies (Kim et al. 2024, Tab. 1) and handout Task 3: one DDIM step of N instances that averages eps_hat
(case 1), the Tweedie estimate x0_hat (case 2, SyncTweedies; the handout's default) or x_prev (case 3) through the
canonical space (x <- f(g(x))), or nothing (``none``). The cases run the student's ``one_step_process`` with oracle
phi/psi and oracle maps (see ``sync_inputs``), so they score the choice of the synchronized variable alone (a wrong
Tweedie or window map is scored by its own cases). The instances start independent, where the four cases differ.
Maps: one row of windows, a circular canvas, and ambiguous views (identity, rotate_cw, negate); a stub eps_fn;
DeepFloyd IF's 2C-channel output; fp16 at the last step.
"""

from __future__ import annotations

import torch

from grading.case import Case, Mistake
from grading.cases.sync_inputs import (
    FP16_PARTIAL,
    IF_ALPHAS_CUMPROD,
    SD_ALPHAS_CUMPROD,
    DenseWindows,
    Outputs,
    eps_stub,
    generator,
    oracle_reverse_step,
    oracle_views,
    output,
    randint,
    randn,
    step_alpha_bars,
)


def _mappings(g: torch.Generator) -> dict:
    """name -> (mapping, N, instance size (h, w)): windows in a row, on a 360-degree canvas, three views."""
    from synchronization.windows import WindowMapping

    wide = DenseWindows(WindowMapping(8, 8 + 4 * randint(g, 2, 4), 8, 4))
    circular = DenseWindows(WindowMapping(8, 4 * randint(g, 3, 5), 8, 4, circular=True))
    size = randint(g, 6, 10)
    return {"wide": (wide, wide.n, (8, 8)), "circular": (circular, circular.n, (8, 8)),
            "views": (oracle_views(), 3, (size, size))}


def _step(case_id: str, sync: str, dtype: torch.dtype = torch.float64, if_model: bool = False, last: bool = False):
    def run(seed: int) -> Outputs:
        import synchronization.core as core

        g = generator(seed, case_id)
        c = 3 if if_model else randint(g, 2, 4)
        eps_fn = eps_stub(seed, c, 2 * c if if_model else c)  # IF: eps + learned variance, 2C channels
        t, a_t, a_prev = step_alpha_bars(g, IF_ALPHAS_CUMPROD if if_model else SD_ALPHAS_CUMPROD)
        if last:  # the last step: alpha_bar_prev = 1 (set_alpha_to_one)
            t, a_t, a_prev = 1, SD_ALPHAS_CUMPROD[1].clone(), torch.tensor(1.0)
        out = {}
        for name, (mapping, n, (h, w)) in _mappings(g).items():
            x_t = randn(g, n, c, h, w, dtype=dtype)  # independent instances [N, C, h, w]
            with oracle_reverse_step(core):
                x_prev, x0_hat = core.one_step_process(mapping, eps_fn, x_t, t, a_t, a_prev, sync)
            out[f"{name}_x_prev"], out[f"{name}_x0_hat"] = output(x_prev), output(x0_hat)
        return out

    return run


_SYNC = {"none": "no averaging: every instance takes its own DDIM step",
         "eps": "case 1 averages eps_hat through the canonical space before Tweedie: eps_hat <- f(g(eps_hat))",
         "x0": "case 2 (SyncTweedies) averages the Tweedie estimate: x0_hat <- f(g(x0_hat)), then the DDIM step",
         "xt": "case 3 averages the result of the DDIM step: x_prev <- f(g(x_prev))"}
_ON = " (independent instances on a row of windows, a circular canvas and three views)"

CASES: tuple[Case, ...] = (
    Case("one-step/x0", 0.25, _step("one-step/x0", "x0"),
         title="one_step_process sync='x0' (SyncTweedies) on windows, a circular canvas and views",
         feedback=_SYNC["x0"] + _ON + "; returns (x_prev, x0_hat) with the averaged x0_hat."),
    Case("one-step/none", 0.25, _step("one-step/none", "none"),
         title="one_step_process sync='none': independent DDIM steps",
         feedback=_SYNC["none"] + _ON + "."),
    Case("one-step/eps", 0.3, _step("one-step/eps", "eps"),
         title="one_step_process sync='eps' (case 1) on windows, a circular canvas and views",
         feedback=_SYNC["eps"] + _ON + "; x0_hat comes from the averaged noise."),
    Case("one-step/xt", 0.3, _step("one-step/xt", "xt"),
         title="one_step_process sync='xt' (case 3) on windows, a circular canvas and views",
         feedback=_SYNC["xt"] + _ON + "; x0_hat is the instance's own Tweedie estimate."),
    Case("one-step/if-2c-eps", 0.2, _step("one-step/if-2c-eps", "eps", if_model=True),
         title="one_step_process sync='eps' with DeepFloyd IF's 6-channel output (eps + variance), IF schedule",
         feedback=_SYNC["eps"] + _ON + "; only the first C channels of IF's output are the noise."),
    Case("one-step/fp16-last-step", 0.2, _step("one-step/fp16-last-step", "x0", torch.float16, last=True),
         partial=FP16_PARTIAL,
         title="one_step_process sync='x0' on float16 instances at the last step (alpha_bar_prev = 1)",
         feedback=_SYNC["x0"] + _ON + "; at the last step x_prev = the averaged x0_hat, finite, float16."),
)

_STEP_REF = (
    "    if sync == \"eps\":\n"
    "        eps_hat = synchronize(mapping, eps_hat)\n"
    "    x0_hat = compute_tweedie(x_t, eps_hat, alpha_bar_t)\n"
    "    if sync == \"x0\":\n"
    "        x0_hat = synchronize(mapping, x0_hat)\n"
    "    x_prev = compute_prev_state(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)\n"
    "    if sync == \"xt\":\n"
    "        x_prev = synchronize(mapping, x_prev)\n"
)
MISTAKES: tuple[Mistake, ...] = (
    Mistake("step-x0-averages-eps", "sync-one-step",
            _STEP_REF.replace("if sync == \"eps\":", "if sync in (\"eps\", \"x0\"):").replace(
                "    if sync == \"x0\":\n        x0_hat = synchronize(mapping, x0_hat)\n", ""),
            "sync='x0' averages eps_hat instead of the Tweedie estimate x0_hat",
            ("one-step/x0", "one-step/fp16-last-step")),
    Mistake("step-always-x0", "sync-one-step",
            "    x0_hat = compute_tweedie(x_t, eps_hat, alpha_bar_t)\n"
            "    x0_hat = synchronize(mapping, x0_hat)\n"
            "    x_prev = compute_prev_state(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)\n",
            "one_step_process always averages x0_hat (the skeleton's case 2) and ignores sync",
            ("one-step/none", "one-step/eps", "one-step/xt", "one-step/if-2c-eps")),
    Mistake("step-xt-averages-input", "sync-one-step",
            "    if sync == \"xt\":\n        x_t = synchronize(mapping, x_t)\n"
            + _STEP_REF.replace("    if sync == \"xt\":\n        x_prev = synchronize(mapping, x_prev)\n", ""),
            "sync='xt' averages the input x_t before the step instead of the result x_prev", ("one-step/xt",)),
    Mistake("step-eps-too-late", "sync-one-step",
            "    x0_hat = compute_tweedie(x_t, eps_hat, alpha_bar_t)\n"
            "    if sync == \"eps\":\n        eps_hat = synchronize(mapping, eps_hat)\n"
            + _STEP_REF.split("    x0_hat = compute_tweedie(x_t, eps_hat, alpha_bar_t)\n")[1],
            "sync='eps' averages eps_hat after x0_hat was computed from it, so the averaging has no effect",
            ("one-step/eps", "one-step/if-2c-eps")),
)
