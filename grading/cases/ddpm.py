"""Autograder cases for UMich EECS 498 HW5 part B, Task 1: one ``DDPMScheduler.step`` (handout Formulas 1-8).

Regions ``ddpm-coefficients`` (alpha_bar_t, alpha_bar_prev, 1 - alpha_bar, per-step alpha_t and beta_t), ``ddpm-x0``
(x0_hat, Formula 1) and ``ddpm-mean`` (posterior mean mu_tilde, Formula 2; Ho et al. 2020, Eq. 7). Each case builds a
fresh scheduler with the handout's model config (google/ddpm-celebahq-256: linear betas 1e-4..0.02, T = 1000,
clip to [-1, 1]), picks one step of an inference grid (the first, the last, where alpha_bar_prev = 1, or a seeded one
with t in 350-600 or 700-850) and feeds it x_t, eps_hat and the noise z drawn from the grading seed; shapes
[B, 3, H, W] vary with the seed too. ``x0`` cases score
``pred_original_sample`` (TODO ddpm-x0) apart from the ``prev`` cases that score ``prev_sample`` (all three TODOs),
so a wrong posterior mean does not cost the x0 credit. (A stub anywhere in ``step`` raises, so it fails both.)

The helpers at the top (seeded generators, step inputs, grid positions, point shares) are shared with
``grading.cases.ddim`` and ``grading.cases.dps``.
"""

from __future__ import annotations

import zlib

import torch

from grading.case import Case, Mistake, Outputs

TASK_POINTS = 60 / 7  # grading.homeworks.umich_hw5_diffusion: "all 7 compulsory tasks are worth points equally"
MODEL = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample_range=1.0)
FP16_PARTIAL = ((2e-3, 1.0), (2e-2, 0.5))  # fp16 outputs: one rounding flip of a half-precision value is ~1e-3
# At t = 0, beta_0 = 1 - alpha_bar_0 = 1e-4 sits at float32's resolution near 1 (6e-8, so 6e-4 relative): correct
# formulas that get beta_t another way (betas[0], (alpha_bar_prev - alpha_bar_t) / alpha_bar_prev) differ by ~2e-4.
T0_PARTIAL = ((1e-3, 1.0), (1e-2, 0.5))


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers


def case_generator(seed: int, case_id: str) -> torch.Generator:
    """CPU generator seeded from the grading seed and the case id: each case draws its own inputs."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(case_id.encode())) % 2**62)


def draw_shape(g: torch.Generator, batch: int | None = None) -> tuple[int, int, int, int]:
    """[B, 3, H, W] with B in 1..3 (or ``batch``) and H, W in {4, 6, 8}, from ``g``."""
    sizes = (4, 6, 8)
    b = int(torch.randint(1, 4, (), generator=g)) if batch is None else batch
    h, w = (sizes[int(i)] for i in torch.randint(0, 3, (2,), generator=g))
    return b, 3, h, w


def step_inputs(g: torch.Generator, alpha_bar_t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, eps_hat, z), float32 [B, 3, H, W]: x_t = sqrt(a) x0 + sqrt(1 - a) eps with x0 ~ U(-1.2, 1.2) (so
    clipping bites), eps_hat = eps + 0.1 n (an imperfect model) and z ~ N(0, I) for the step's own noise."""
    shape = draw_shape(g)
    x0 = torch.rand(shape, generator=g) * 2.4 - 1.2
    eps = torch.randn(shape, generator=g)
    x_t = alpha_bar_t**0.5 * x0 + (1 - alpha_bar_t) ** 0.5 * eps
    eps_hat = eps + 0.1 * torch.randn(shape, generator=g)
    return x_t, eps_hat, torch.randn(shape, generator=g)


WINDOWS = {"mid": (0.35, 0.6), "high": (0.7, 0.85)}  # fractions of T: alpha_bar_t about 0.29-0.03 / 0.006-4e-4


def grid_index(timesteps: torch.Tensor, num_train_timesteps: int, where: str, g: torch.Generator) -> int:
    """Index into a descending grid: ``first``, ``last``, or a seeded one whose t lies in ``WINDOWS[where]``.

    The middle window keeps alpha_bar_t away from 1/2, where sqrt(alpha_bar_t) = sqrt(1 - alpha_bar_t) and a swap of
    the two would go unnoticed, and keeps both terms of the posterior mean weighing in.
    """
    if where == "first":
        return 0
    if where == "last":
        return len(timesteps) - 1
    lo, hi = (num_train_timesteps * f for f in WINDOWS[where])
    hits = [i for i, t in enumerate(timesteps.tolist()) if lo <= t <= hi]
    return hits[int(torch.randint(0, len(hits), (), generator=g))]


def x0_and_prev_cases(make, x0_cases: list, prev_cases: list, points: list[float]) -> tuple[Case, ...]:
    """The cases of a step task: ``make`` applied to each (name, title, spacing, steps, where, kwargs) row, the x0
    rows scoring ``pred_original_sample`` and the prev rows ``prev_sample``; ``points`` in the same order."""
    x0 = [make(n, title, s, k, w, output=X0, points=p, **kw) for (n, title, s, k, w, kw), p in zip(x0_cases, points)]
    prev = [make(n, title, s, k, w, points=p, **kw)
            for (n, title, s, k, w, kw), p in zip(prev_cases, points[len(x0_cases):])]
    return tuple(x0 + prev)


def shares(total: float, weights: list[float]) -> list[float]:
    """``total`` split in proportion to ``weights``."""
    return [total * w / sum(weights) for w in weights]


def as_output(x: torch.Tensor) -> torch.Tensor:
    """A returned tensor: detached, CPU, contiguous float64 that owns its memory (safetensors refuses views)."""
    return x.detach().to("cpu", torch.float64).contiguous().clone()


# ---------------------------------------------------------------------------------------------------------------
# Cases


def _ddpm_run(case_id: str, spacing: str, steps: int, where: str, output: str, variance_type: str, clip: bool,
              half: bool):
    def run(seed: int) -> Outputs:
        from ddpm_ddim.schedulers import DDPMScheduler

        sched = DDPMScheduler(**MODEL, clip_sample=clip, timestep_spacing=spacing, variance_type=variance_type)
        sched.set_timesteps(steps)
        g = case_generator(seed, case_id)
        t = sched.timesteps[grid_index(sched.timesteps, sched.num_train_timesteps, where, g)]
        x_t, eps_hat, z = step_inputs(g, float(sched.alphas_cumprod[int(t)]))
        dtype = torch.float16 if half else torch.float32
        out = sched.step(eps_hat.to(dtype), t, x_t.to(dtype), noise=z)
        return {output: as_output(getattr(out, output))}

    return run


def _case(name: str, title: str, spacing: str, steps: int, where: str, output: str = "prev_sample",
          variance_type: str = "fixed_small", clip: bool = True, half: bool = False, visible: bool = False,
          points: float = 1.0, feedback: str = "", partial: tuple | None = None) -> Case:
    case_id = f"ddpm/{name}"
    what = "x0_hat (pred_original_sample)" if output == "pred_original_sample" else "x_{t-1} (prev_sample)"
    feedback = feedback or (f"DDPMScheduler.step: {what} for one step of the {spacing} grid with {steps} steps "
                            f"({where} step, {variance_type}, clip {'on' if clip else 'off'}"
                            f"{', fp16 model output' if half else ''}) against the reference.")
    return Case(id=case_id, points=points, title=title,
                run=_ddpm_run(case_id, spacing, steps, where, output, variance_type, clip, half),
                visibility="visible" if visible else "after_published", feedback=feedback,
                **bands(FP16_PARTIAL if half else partial))


def bands(partial: tuple | None) -> dict:
    """Case keyword arguments for a non-default tolerance band (``rtol`` is its full-credit edge)."""
    return {} if partial is None else {"partial": partial, "rtol": partial[0][0]}


X0 = "pred_original_sample"
MID, HIGH = "t = 350-600", "t = 700-850"  # WINDOWS
_X0_CASES = [  # (name, title, spacing, steps, where, options)
    ("x0-leading-1000-mid", f"x0_hat (Formula 1), 1000 steps, {MID}", "leading", 1000, "mid", {"visible": True}),
    ("x0-leading-1000-first-no-clip", "x0_hat at t = 999, no clipping", "leading", 1000, "first", {"clip": False}),
    ("x0-trailing-37-last", "x0_hat at t = 26, the last of 37 trailing steps", "trailing", 37, "last", {}),
    ("x0-leading-50-high-fp16", f"x0_hat, 50 steps, {HIGH}, fp16 model output", "leading", 50, "high",
     {"half": True}),
]
_PREV_CASES = [
    ("prev-leading-1000-mid", f"x_{{t-1}} (Formula 2), 1000 steps, {MID}", "leading", 1000, "mid", {"visible": True}),
    ("prev-leading-1000-first-no-clip", "x_{t-1} at t = 999, the first of 1000 steps, no clipping", "leading", 1000,
     "first", {"clip": False}),
    ("prev-leading-1000-last", "x_{t-1} at t = 0, the last of 1000 steps (alpha_bar_prev = 1)", "leading", 1000,
     "last", {"partial": T0_PARTIAL}),
    ("prev-leading-50-mid", f"x_{{t-1}}, 50 leading steps, {MID}", "leading", 50, "mid", {}),
    ("prev-leading-50-last", "x_{t-1} at t = 0, the last of 50 leading steps", "leading", 50, "last",
     {"partial": T0_PARTIAL}),
    ("prev-trailing-37-mid-fixed-large", f"x_{{t-1}}, 37 trailing steps, {MID}, fixed_large variance", "trailing",
     37, "mid", {"variance_type": "fixed_large"}),
    ("prev-trailing-37-last", "x_{t-1} at t = 26, the last of 37 trailing steps", "trailing", 37, "last", {}),
    ("prev-linspace-37-high", f"x_{{t-1}}, 37 linspace steps, {HIGH}", "linspace", 37, "high", {}),
    ("prev-linspace-50-mid", f"x_{{t-1}}, 50 linspace steps, {MID}", "linspace", 50, "mid", {}),
    ("prev-leading-50-mid-no-clip", f"x_{{t-1}}, 50 steps, {MID}, no clipping", "leading", 50, "mid",
     {"clip": False}),
    ("prev-leading-50-last-fp16", "x_{t-1} at t = 0 of 50 steps, fp16 model output", "leading", 50, "last",
     {"half": True}),
]
# TODO #2 (x0) is one of the task's three TODOs: the x0 cases carry a third of the points, the prev cases the rest.
_POINTS = shares(TASK_POINTS, [1 / len(_X0_CASES)] * len(_X0_CASES) + [2 / len(_PREV_CASES)] * len(_PREV_CASES))

CASES = x0_and_prev_cases(_case, _X0_CASES, _PREV_CASES, _POINTS)

# ---------------------------------------------------------------------------------------------------------------
# Mistakes (bodies indented as in ddpm_ddim/schedulers.py)

_ALL = tuple(c.id for c in CASES)
_PREV = tuple(c.id for c in CASES if "/prev-" in c.id)
_T0 = ("ddpm/prev-leading-1000-last", "ddpm/prev-leading-50-last", "ddpm/prev-leading-50-last-fp16")  # t = 0
_LAST = (*_T0, "ddpm/prev-trailing-37-last")  # alpha_bar_prev = 1
_RESPACED = tuple(c for c in _PREV if "-1000-" not in c and c not in _T0)  # a grid gap > 1, t > 0
_COEFFS = """\
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
"""
_MEAN = """\
        pred_original_sample_coeff = alpha_prod_t_prev ** 0.5 * current_beta_t / beta_prod_t
        current_sample_coeff = current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t
        pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * x_t
"""

MISTAKES: tuple[Mistake, ...] = (
    Mistake("ddpm-x0-swapped-roots", "ddpm-x0",
            "        pred_original_sample = (x_t - alpha_prod_t ** 0.5 * eps_hat) / beta_prod_t ** 0.5\n",
            "x0_hat with sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped (Formula 1 is "
            "(x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t))", _ALL),
    Mistake("ddpm-x0-no-roots", "ddpm-x0",
            "        pred_original_sample = (x_t - beta_prod_t * eps_hat) / alpha_prod_t\n",
            "x0_hat without the square roots of beta-bar_t and alpha-bar_t (Formula 1)", _ALL),
    Mistake("ddpm-x0-half-precision", "ddpm-x0",
            "        pred_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5\n",
            "x0_hat computed from sample and model_output in the model's precision (fp16 here); use x_t and eps_hat, "
            "their float32 copies", ("ddpm/x0-leading-50-high-fp16",)),
    Mistake("ddpm-mean-alpha-bar-t", "ddpm-mean",
            _MEAN.replace("coeff = alpha_prod_t_prev ** 0.5", "coeff = alpha_prod_t ** 0.5"),
            "posterior mean with sqrt(alpha_bar_t) where sqrt(alpha_bar_{t-1}) belongs in the x0 coefficient "
            "(Formula 2)", _RESPACED),
    Mistake("ddpm-mean-coefficients-swapped", "ddpm-mean",
            _MEAN.replace("pred_original_sample_coeff * pred_original_sample + current_sample_coeff * x_t",
                          "current_sample_coeff * pred_original_sample + pred_original_sample_coeff * x_t"),
            "posterior mean with the x0 and x_t coefficients swapped (Formula 2)", _PREV),
    Mistake("ddpm-alpha-t-is-alpha-bar", "ddpm-coefficients",
            _COEFFS.replace("current_alpha_t = alpha_prod_t / alpha_prod_t_prev", "current_alpha_t = alpha_prod_t"),
            "per-step alpha_t taken as alphas_cumprod[t] (that is alpha_bar_t; alpha_t = alpha_bar_t / "
            "alpha_bar_{t-1}, Formula 7)", tuple(c for c in _PREV if c not in _LAST)),
    Mistake("ddpm-last-step-wraps", "ddpm-coefficients",
            _COEFFS.replace("self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one", "self.alphas_cumprod[prev_t]"),
            "alpha_bar_{t-1} = alphas_cumprod[prev_t] at the last step, where prev_t = -1 wraps to alpha_bar_999; "
            "it must be 1 there (Formula 4: the empty product)", _LAST),
    Mistake("ddpm-beta-t-from-training-betas", "ddpm-coefficients",
            _COEFFS.replace("current_beta_t = 1 - current_alpha_t", "current_beta_t = self.betas[t]"),
            "per-step beta_t taken from the training betas[t]: right only when the grid has every timestep; on a "
            "respaced grid beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} (Formulas 7-8)", _RESPACED),
)
