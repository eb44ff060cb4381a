"""Autograder cases for UMich EECS 498 HW5 part B, Task 2: one ``DDIMScheduler.step`` (handout Formulas 9-10).

Regions ``ddim-x0`` (beta-bar_t = 1 - alpha_bar_t and x0_hat, the "predicted x0" of Formula 9) and
``ddim-prev-sample`` (sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_hat; Song et al. 2021,
Eq. 12). sigma_t(eta) (Eq. 16), alpha_bar_prev and the noise term are computed outside the regions. Each case builds
a scheduler with the handout's model config, picks one step of a grid and feeds x_t, eps_hat and the noise z drawn
from the grading seed, with eta in {0, 0.5, 1} passed explicitly. ``x0`` cases score ``pred_original_sample`` (TODO
ddim-x0) apart from the ``prev`` cases. The ``offgrid`` cases pick a step whose grid gap is not T // N: there
diffusers' ``DDIMScheduler`` steps to t - T // N, off the grid (diffusers issue #12633), so delegating the step to
diffusers fails them. The last-step cases check alpha_bar_prev = 1 (``set_alpha_to_one``) or alpha_bar_0.
"""

from __future__ import annotations

import torch

from grading.case import Case, Mistake, Outputs
from grading.cases.ddpm import (
    FP16_PARTIAL,
    MODEL,
    TASK_POINTS,
    WINDOWS,
    as_output,
    case_generator,
    grid_index,
    shares,
    step_inputs,
    x0_and_prev_cases,
)


def offgrid_index(timesteps: torch.Tensor, num_train_timesteps: int, g: torch.Generator) -> int:
    """A seeded grid index in the middle window whose next grid entry is not t - T // N (diffusers' previous
    timestep); off by one timestep, a step at high t would hardly change."""
    grid = [int(t) for t in timesteps]
    gap = num_train_timesteps // len(grid)
    lo, hi = (num_train_timesteps * f for f in WINDOWS["mid"])
    hits = [i for i in range(len(grid) - 1) if grid[i] - grid[i + 1] != gap and lo <= grid[i] <= hi]
    return hits[int(torch.randint(0, len(hits), (), generator=g))]


def _ddim_run(case_id: str, spacing: str, steps: int, where: str, output: str, eta: float, clip: bool, half: bool,
              sched_kw: dict, use_clipped: bool):
    def run(seed: int) -> Outputs:
        from ddpm_ddim.schedulers import DDIMScheduler

        sched = DDIMScheduler(**MODEL, clip_sample=clip, timestep_spacing=spacing, **sched_kw)
        sched.set_timesteps(steps)
        g = case_generator(seed, case_id)
        index = offgrid_index(sched.timesteps, sched.num_train_timesteps, g) if where == "offgrid" else \
            grid_index(sched.timesteps, sched.num_train_timesteps, where, g)
        t = sched.timesteps[index]
        x_t, eps_hat, z = step_inputs(g, float(sched.alphas_cumprod[int(t)]))
        dtype = torch.float16 if half else torch.float32
        out = sched.step(eps_hat.to(dtype), t, x_t.to(dtype), eta=eta, noise=z, use_clipped_model_output=use_clipped)
        return {output: as_output(getattr(out, output))}

    return run


def _case(name: str, title: str, spacing: str, steps: int, where: str, eta: float = 0.0, output: str = "prev_sample",
          clip: bool = True, half: bool = False, visible: bool = False, points: float = 1.0,
          sched_kw: dict | None = None, use_clipped: bool = False) -> Case:
    case_id = f"ddim/{name}"
    sched_kw = sched_kw or {}
    what = "x0_hat (pred_original_sample)" if output == "pred_original_sample" else "x_{t-1} (prev_sample)"
    extras = [f"{k}={v}" for k, v in sched_kw.items()] + (["use_clipped_model_output"] if use_clipped else [])
    extras += ["fp16 model output"] if half else []
    feedback = (f"DDIMScheduler.step: {what} for one step of the {spacing} grid with {steps} steps ({where} step, "
                f"eta {eta:g}, clip {'on' if clip else 'off'}{''.join(', ' + e for e in extras)}) against the "
                "reference.")
    return Case(id=case_id, points=points, title=title,
                run=_ddim_run(case_id, spacing, steps, where, output, eta, clip, half, sched_kw, use_clipped),
                visibility="visible" if visible else "after_published", feedback=feedback,
                **({"partial": FP16_PARTIAL, "rtol": FP16_PARTIAL[0][0]} if half else {}))


X0 = "pred_original_sample"
MID, HIGH = "t = 350-600", "t = 700-850"  # grading.cases.ddpm.WINDOWS
NO_ONE = {"set_alpha_to_one": False}
_X0_CASES = [  # (name, title, spacing, steps, where, options)
    ("x0-leading-50-mid", f"x0_hat (Formula 9), 50 steps, {MID}", "leading", 50, "mid", {"visible": True}),
    ("x0-leading-50-first-no-clip", "x0_hat at t = 980, no clipping", "leading", 50, "first", {"clip": False}),
    ("x0-trailing-37-last", "x0_hat at t = 26, the last of 37 trailing steps", "trailing", 37, "last", {}),
    ("x0-leading-50-high-fp16", f"x0_hat, 50 steps, {HIGH}, fp16 model output", "leading", 50, "high",
     {"half": True}),
]
_PREV_CASES = [
    ("prev-leading-50-mid-eta0", f"x_{{t-1}} (Formula 9), 50 steps, eta 0, {MID}", "leading", 50, "mid",
     {"visible": True}),
    ("prev-leading-50-first-eta0", "x_{t-1} at t = 980, 50 steps, eta 0", "leading", 50, "first", {}),
    ("prev-leading-50-last-eta0", "x_{t-1} at t = 0, the last of 50 steps, eta 0 (alpha_bar_prev = 1)", "leading",
     50, "last", {}),
    ("prev-leading-50-mid-eta05", f"x_{{t-1}}, 50 steps, eta 0.5, {MID}", "leading", 50, "mid", {"eta": 0.5}),
    ("prev-leading-50-first-eta1", "x_{t-1} at t = 980, 50 steps, eta 1", "leading", 50, "first", {"eta": 1.0}),
    ("prev-leading-1000-mid-eta1", f"x_{{t-1}}, 1000 steps, eta 1 (the DDPM step), {MID}", "leading", 1000, "mid",
     {"eta": 1.0}),
    ("prev-linspace-50-offgrid-eta0", "x_{t-1}, 50 linspace steps, eta 0, a step whose gap is not T // N",
     "linspace", 50, "offgrid", {}),
    ("prev-linspace-37-offgrid-eta05", "x_{t-1}, 37 linspace steps, eta 0.5, a step whose gap is not T // N",
     "linspace", 37, "offgrid", {"eta": 0.5}),
    ("prev-trailing-37-offgrid-eta0", "x_{t-1}, 37 trailing steps, eta 0, the step whose gap is not T // N",
     "trailing", 37, "offgrid", {}),
    ("prev-trailing-37-last-eta05-alpha0", "x_{t-1} at t = 26, the last of 37 trailing steps, eta 0.5, "
     "set_alpha_to_one off", "trailing", 37, "last", {"eta": 0.5, "sched_kw": NO_ONE}),
    ("prev-leading-10-last-offset1-alpha0", "x_{t-1} at t = 1, the last of 10 steps with steps_offset 1, "
     "set_alpha_to_one off", "leading", 10, "last", {"sched_kw": {"steps_offset": 1, "set_alpha_to_one": False}}),
    ("prev-trailing-37-last-eta1", "x_{t-1} at t = 26, the last of 37 trailing steps, eta 1 (alpha_bar_prev = 1)",
     "trailing", 37, "last", {"eta": 1.0}),
    ("prev-leading-50-mid-eta05-no-clip", f"x_{{t-1}}, 50 steps, eta 0.5, {MID}, no clipping", "leading", 50, "mid",
     {"eta": 0.5, "clip": False}),
    ("prev-leading-50-mid-eta05-clipped-eps", f"x_{{t-1}}, 50 steps, eta 0.5, {MID}, use_clipped_model_output",
     "leading", 50, "mid", {"eta": 0.5, "use_clipped": True}),
    ("prev-leading-50-mid-eta05-fp16", f"x_{{t-1}}, 50 steps, eta 0.5, {MID}, fp16 model output", "leading", 50,
     "mid", {"eta": 0.5, "half": True}),
]
# TODO #1 (beta-bar and x0) and TODO #2 (the rest of Formula 9) are half of the task each.
_POINTS = shares(TASK_POINTS, [1 / len(_X0_CASES)] * len(_X0_CASES) + [1 / len(_PREV_CASES)] * len(_PREV_CASES))

CASES = x0_and_prev_cases(_case, _X0_CASES, _PREV_CASES, _POINTS)

# ---------------------------------------------------------------------------------------------------------------
# Mistakes (bodies indented as in ddpm_ddim/schedulers.py)

_ALL = tuple(c.id for c in CASES)
_PREV = tuple(c.id for c in CASES if "/prev-" in c.id)
_X0 = """\
        beta_prod_t = 1 - alpha_prod_t
        pred_original_sample = (x_t - beta_prod_t ** 0.5 * eps_hat) / alpha_prod_t ** 0.5
"""
_PREV_BODY = """\
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** 0.5 * eps_hat
        prev_sample = alpha_prod_t_prev ** 0.5 * pred_original_sample + pred_sample_direction
"""
_DELEGATE = """\
        import diffusers

        reference = diffusers.DDIMScheduler.from_config(self.config)
        reference.set_timesteps(self.num_inference_steps)
        prev_sample = reference.step(eps_hat, t, x_t, eta=eta, use_clipped_model_output=use_clipped_model_output,
                                     variance_noise=torch.zeros_like(x_t)).prev_sample
"""


def _ids(*names: str) -> tuple[str, ...]:
    return tuple(f"ddim/{n}" for n in names)


_ETA_POSITIVE = tuple(c for c in _PREV if "-eta05" in c or "-eta1" in c)
_LAST_ALPHA_ONE = _ids("prev-leading-50-last-eta0", "prev-trailing-37-last-eta1")
_LAST = _LAST_ALPHA_ONE + _ids("prev-trailing-37-last-eta05-alpha0", "prev-leading-10-last-offset1-alpha0")
_T0 = _ids("prev-leading-50-last-eta0", "prev-leading-10-last-offset1-alpha0")  # t = 0, 1: alpha_bar_t ~ 1

MISTAKES: tuple[Mistake, ...] = (
    Mistake("ddim-x0-swapped-roots", "ddim-x0",
            _X0.replace("(x_t - beta_prod_t ** 0.5 * eps_hat) / alpha_prod_t ** 0.5",
                        "(x_t - alpha_prod_t ** 0.5 * eps_hat) / beta_prod_t ** 0.5"),
            "x0_hat with sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped (Formula 9, predicted x0)", _ALL),
    Mistake("ddim-x0-no-roots", "ddim-x0",
            _X0.replace("(x_t - beta_prod_t ** 0.5 * eps_hat) / alpha_prod_t ** 0.5",
                        "(x_t - beta_prod_t * eps_hat) / alpha_prod_t"),
            "x0_hat without the square roots of beta-bar_t and alpha_bar_t (Formula 9, predicted x0)", _ALL),
    Mistake("ddim-x0-half-precision", "ddim-x0",
            _X0.replace("(x_t - beta_prod_t ** 0.5 * eps_hat)", "(sample - beta_prod_t ** 0.5 * model_output)"),
            "x0_hat computed from sample and model_output in the model's precision (fp16 here); use x_t and eps_hat, "
            "their float32 copies", _ids("x0-leading-50-high-fp16")),
    Mistake("ddim-x0-coefficient-alpha-bar-t", "ddim-prev-sample",
            _PREV_BODY.replace("prev_sample = alpha_prod_t_prev ** 0.5", "prev_sample = alpha_prod_t ** 0.5"),
            "x_{t-1} with sqrt(alpha_bar_t) where sqrt(alpha_bar_{t-1}) multiplies the predicted x0 (Formula 9)",
            tuple(c for c in _PREV if c not in _T0)),
    Mistake("ddim-direction-without-sigma", "ddim-prev-sample",
            _PREV_BODY.replace("(1 - alpha_prod_t_prev - std_dev_t ** 2) ** 0.5", "(1 - alpha_prod_t_prev) ** 0.5"),
            "direction pointing to x_t without sigma_t^2: sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps (Formula 9); "
            "it only shows for eta > 0",
            tuple(c for c in _ETA_POSITIVE if c not in _LAST_ALPHA_ONE)),
    Mistake("ddim-last-step-wraps", "ddim-prev-sample",
            "        alpha_prod_t_prev = self.alphas_cumprod[prev_t]\n" + _PREV_BODY,
            "alpha_bar_{t-1} re-read as alphas_cumprod[prev_t]: at the last step prev_t = -1 wraps to alpha_bar_999; "
            "it is 1 there (set_alpha_to_one) or alpha_bar_0", _LAST),
    Mistake("ddim-last-step-alpha-bar-0", "ddim-prev-sample",
            "        alpha_prod_t_prev = self.alphas_cumprod[max(prev_t, 0)]\n" + _PREV_BODY,
            "the last step uses alpha_bar_0 although set_alpha_to_one asks for alpha_bar_prev = 1 (a clean sample)",
            _LAST_ALPHA_ONE),
    Mistake("ddim-delegates-to-diffusers", "ddim-prev-sample", _DELEGATE,
            "the step is delegated to diffusers' DDIMScheduler, which steps to t - T // N instead of the next grid "
            "entry (wrong for linspace and trailing grids; diffusers issue #12633); write Formula 9 yourself",
            _ids("prev-linspace-50-offgrid-eta0", "prev-linspace-37-offgrid-eta05", "prev-trailing-37-offgrid-eta0")),
)
