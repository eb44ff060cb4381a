"""Autograder cases for UMich EECS 498 HW5 part B, Task 4: ``dps.dps.dps_update`` (handout Formula 11).

x_{t-1} = x'_{t-1} - zeta grad_{x_t} sum_i ||y_i - A(x0_hat(x_t))_i||_2 with the UNSQUARED per-image norm (Chung et
al. 2023, Algorithm 1 as in the authors' code). Each case builds, from the grading seed, 8x8 images, a measurement
y = A(x) + 0.05 n for an inpainting, super-resolution, Gaussian- or motion-blur operator, and a tiny differentiable
stand-in for the UNet: eps_hat = a fixed random 3x3 convolution of x_t, so x0_hat(x_t) and x'_{t-1} (from the
reference ``common.ddim.ddim_step``, not the DDIM homework) are linear in x_t and the gradient is exact. zeta is the
handout's (0.5 for inpainting, 0.3 for the others, as in the DPS configs), passed explicitly. Each case returns the
updated x_{t-1} and the per-image norms. Batch cases (B = 2-3) catch a norm over the whole batch; zeta = 0 must give
plain DDIM; a batch must equal its images one at a time.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from grading.case import Case, Mistake, Outputs
from grading.cases.ddpm import MODEL, TASK_POINTS, as_output, case_generator, shares

SIZE = 8
SCALES = {"inpainting": 0.5, "super_resolution": 0.3, "gaussian_blur": 0.3, "motion_blur": 0.3}  # handout / DPS


def _operator(name: str, batch: int, g: torch.Generator):
    """A small operator of ``name`` for ``batch`` SIZE-px images (inpainting masks and motion kernels from ``g``)."""
    from dps import operators as ops

    if name == "inpainting":
        return ops.Inpainting(ops.random_mask(batch, SIZE, generator=g))
    if name == "super_resolution":
        return ops.SuperResolution(2, "bicubic")
    if name == "gaussian_blur":
        return ops.gaussian_blur(kernel_size=5, sigma=1.0)
    return ops.motion_blur(kernel_size=7, intensity=0.5, seed=int(torch.randint(0, 2**31, (), generator=g)))


def _problem(g: torch.Generator, name: str, batch: int):
    """(operator, y, x_t, alpha_bar_t, alpha_bar_prev, conv kernel): one DPS step's inputs for a linear eps model."""
    from common.schedules import inference_timesteps, make_alphas_cumprod

    alphas_cumprod = make_alphas_cumprod(MODEL["beta_schedule"], MODEL["num_train_timesteps"], MODEL["beta_start"],
                                         MODEL["beta_end"])
    grid = inference_timesteps(50, MODEL["num_train_timesteps"])  # 980, ..., 0
    k = int(torch.randint(25, 45, (), generator=g))  # t in 100..480: x0_hat of a moderate size
    alpha_bar_t, alpha_bar_prev = alphas_cumprod[grid[k]], alphas_cumprod[grid[k + 1]]
    op = _operator(name, batch, g)
    shape = (batch, 3, SIZE, SIZE)
    x = torch.rand(shape, generator=g) * 2 - 1  # the unknown image
    y = op.forward(x) + 0.05 * torch.randn(op.forward(x).shape, generator=g)  # y = A(x) + n, sigma_y = 0.05
    x_t = alpha_bar_t.sqrt() * x + (1 - alpha_bar_t).sqrt() * torch.randn(shape, generator=g)
    kernel = 0.15 * torch.randn(3, 3, 3, 3, generator=g)  # eps_hat = conv(x_t): the UNet's stand-in
    return op, y, x_t, alpha_bar_t, alpha_bar_prev, kernel


def _update(op, y, x_t, alpha_bar_t, alpha_bar_prev, kernel, scale: float, clip: float | None):
    """dps_update on a fresh leaf x_t: (x_{t-1}, norms [B]) and the plain DDIM x'_{t-1}."""
    import torch.nn.functional as F

    from common.ddim import ddim_step
    from dps.dps import dps_update

    sample = x_t.clone().requires_grad_(True)
    with torch.enable_grad():
        eps_hat = F.conv2d(sample, kernel, padding=1)  # [B, 3, H, W], linear in x_t
        prev_sample, x0_hat = ddim_step(sample, eps_hat, alpha_bar_t, alpha_bar_prev, clip_sample_range=clip)
        new_prev, norm = dps_update(prev_sample, sample, x0_hat, y, op, scale)
    return new_prev, norm.reshape(-1), prev_sample.detach()


def _dps_run(case_id: str, name: str, batch: int | None, scale: float | None, clip: float | None, singles: bool):
    def run(seed: int) -> Outputs:
        g = case_generator(seed, case_id)
        b = batch or int(torch.randint(2, 4, (), generator=g))
        op, y, x_t, a_t, a_prev, kernel = _problem(g, name, b)
        zeta = SCALES[name] if scale is None else scale
        new_prev, norm, _ = _update(op, y, x_t, a_t, a_prev, kernel, zeta, clip)
        out = {"prev_sample": as_output(new_prev), "norm": as_output(norm)}
        if singles:
            parts = [_update(op.subset(slice(i, i + 1)), y[i:i + 1], x_t[i:i + 1], a_t, a_prev, kernel, zeta, clip)
                     for i in range(b)]
            out["prev_sample_singles"] = as_output(torch.cat([p[0] for p in parts]))
            out["norm_singles"] = as_output(torch.cat([p[1] for p in parts]))
        return out

    return run


def _case(name: str, title: str, operator: str, batch: int | None = None, scale: float | None = None,
          clip: float | None = None, singles: bool = False, visible: bool = False, feedback: str = "") -> Case:
    case_id = f"dps/{name}"
    return Case(id=case_id, points=1.0, title=title,
                run=_dps_run(case_id, operator, batch, scale, clip, singles),
                visibility="visible" if visible else "after_published",
                feedback=feedback or f"dps_update for {operator.replace('_', ' ')} ({title}): x_{{t-1}} and the "
                                     "per-image norms ||y - A(x0_hat)||_2 against the reference.")


_CASES = [
    _case("inpainting", "inpainting, B = 2-3, zeta 0.5", "inpainting", visible=True),
    _case("super-resolution", "super-resolution x2, B = 2-3, zeta 0.3", "super_resolution"),
    _case("gaussian-blur", "Gaussian blur, B = 2-3, zeta 0.3", "gaussian_blur"),
    _case("motion-blur-single", "motion blur, one image, zeta 0.3", "motion_blur", batch=1),
    _case("inpainting-clipped-x0", "inpainting with x0_hat clipped to [-1, 1]", "inpainting", batch=2, clip=1.0),
    _case("scale-zero", "zeta = 0 leaves the plain DDIM x'_{t-1}", "super_resolution", batch=2, scale=0.0,
          feedback="dps_update with zeta = 0 must return the plain DDIM x'_{t-1} unchanged (and the per-image "
                   "norms)."),
    _case("batch-equals-singles", "a batch of 3 equals its images one at a time", "inpainting", batch=3, singles=True,
          feedback="dps_update on a batch of 3 (own mask each) must give each image the update it gets alone: the "
                   "norm is per image, and the gradient is that of their sum."),
]
CASES: tuple[Case, ...] = tuple(replace(c, points=p) for c, p in zip(_CASES, shares(TASK_POINTS, [1.0] * len(_CASES))))

# ---------------------------------------------------------------------------------------------------------------
# Mistakes (bodies indented as in dps/dps.py)

_BODY = """\
    residual = measurement - operator.forward(pred_original_sample)
    norm = torch.linalg.vector_norm(residual.flatten(1), dim=1)  # [B]
    norm_grad = torch.autograd.grad(outputs=norm.sum(), inputs=sample)[0]
    prev_sample = prev_sample - scale * norm_grad
"""
_ALL = tuple(c.id for c in CASES)
_MOVING = tuple(c for c in _ALL if c != "dps/scale-zero")  # zeta > 0: the update moves x'_{t-1}
_BATCHED = tuple(c for c in _ALL if c != "dps/motion-blur-single")


def _edit(old: str, new: str) -> str:
    if old not in _BODY:
        raise ValueError(f"mistake edit {old!r} is not in the reference body")
    return _BODY.replace(old, new)


MISTAKES: tuple[Mistake, ...] = (
    Mistake("dps-squared-norm", "dps-update",
            _edit("torch.linalg.vector_norm(residual.flatten(1), dim=1)", "residual.flatten(1).pow(2).sum(dim=1)"),
            "the squared norm ||y - A(x0_hat)||^2: Formula 11 (and the DPS code) uses the norm itself", _ALL),
    Mistake("dps-norm-over-batch", "dps-update",
            _edit("torch.linalg.vector_norm(residual.flatten(1), dim=1)", "torch.linalg.vector_norm(residual)"),
            "one norm over the whole batch: each image needs its own ||y_i - A(x0_hat_i)|| (else an image's update "
            "depends on the rest of its batch)", _BATCHED),
    Mistake("dps-gradient-wrt-x0", "dps-update",
            _edit("inputs=sample", "inputs=pred_original_sample"),
            "the gradient is taken w.r.t. x0_hat; Formula 11 differentiates w.r.t. x_t (through x0_hat(x_t))",
            _MOVING),
    Mistake("dps-sign-flipped", "dps-update",
            _edit("prev_sample - scale * norm_grad", "prev_sample + scale * norm_grad"),
            "the gradient is added: x_{t-1} = x'_{t-1} - zeta grad moves toward the measurement", _MOVING),
    Mistake("dps-scale-ignored", "dps-update",
            _edit("prev_sample - scale * norm_grad", "prev_sample - norm_grad"),
            "the step size zeta (scale) is not applied", _ALL),
    Mistake("dps-residual-of-x-t", "dps-update",
            _edit("operator.forward(pred_original_sample)", "operator.forward(sample)"),
            "the residual y - A(x_t) uses the noisy x_t; Formula 11 measures the estimate y - A(x0_hat)", _ALL),
)
