"""kaist-a5 Task 0 cases (graded in Task 1, see ``sync_wide``): phi ``compute_tweedie``, psi ``compute_prev_state``.

Handout Task 0: x0 ~ phi(x_t, eps) = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (Tweedie; DDIM Eq. 12)
and psi(x_t, x0) = sqrt(alpha_bar_prev) x0 + sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) (x_t - sqrt(alpha_bar_t)
x0), deterministic (eta = 0). Cases: per-sample and scalar alpha_bar, t at both ends of the schedule, DeepFloyd
IF's 2C-channel eps, and fp16 inputs at the last step (alpha_bar_prev = 1, where fp16 arithmetic gives 0/0).
"""

from __future__ import annotations

import torch

from grading.case import Case, Mistake
from grading.cases.sync_inputs import (
    FP16_PARTIAL,
    IF_ALPHAS_CUMPROD,
    SD_ALPHAS_CUMPROD,
    Outputs,
    generator,
    output,
    randint,
    randn,
    timesteps,
)


def _shape(g: torch.Generator, n_low: int = 3) -> tuple[int, int, int, int]:
    return randint(g, n_low, 5), randint(g, 2, 4), randint(g, 3, 9), randint(g, 3, 9)  # N, C, H, W


def _tweedie_per_sample(seed: int) -> Outputs:
    from synchronization.core import compute_tweedie

    g = generator(seed, "tweedie/per-sample-t")
    n, c, h, w = _shape(g)
    a_t = SD_ALPHAS_CUMPROD[timesteps(g, n, include=(0, 999))]  # [N] float32, alpha_bar from 0.99915 to 0.0047
    x_t, eps = randn(g, n, c, h, w), randn(g, n, c, h, w)
    return {"x0_hat": output(compute_tweedie(x_t, eps, a_t))}


def _tweedie_scalar_fp32(seed: int) -> Outputs:
    from synchronization.core import compute_tweedie

    g = generator(seed, "tweedie/scalar-fp32")
    n, c, h, w = _shape(g, 1)
    a_t = SD_ALPHAS_CUMPROD[randint(g, 0, 999)].clone()  # 0-d float32
    x_t, eps = randn(g, n, c, h, w, dtype=torch.float32), randn(g, n, c, h, w, dtype=torch.float32)
    return {"x0_hat": output(compute_tweedie(x_t, eps, a_t))}


def _tweedie_if(seed: int) -> Outputs:
    from synchronization.core import compute_tweedie

    g = generator(seed, "tweedie/if-2c-eps")
    n, _, h, w = _shape(g)
    a_t = IF_ALPHAS_CUMPROD[timesteps(g, n, include=(957,))]  # IF's first step at 30 DDIM steps
    x_t, eps_and_variance = randn(g, n, 3, h, w), randn(g, n, 6, h, w)  # IF: 3 eps channels + 3 variance channels
    return {"x0_hat": output(compute_tweedie(x_t, eps_and_variance, a_t))}


def _tweedie_fp16(seed: int) -> Outputs:
    from synchronization.core import compute_tweedie

    g = generator(seed, "tweedie/fp16-last-steps")
    n, c, h, w = _shape(g, 1)
    out = {}
    for t in (0, 1):  # IF's and SD's last grid steps: alpha_bar_t rounds to 1 in fp16
        x_t, eps = randn(g, n, c, h, w, dtype=torch.float16), randn(g, n, c, h, w, dtype=torch.float16)
        out[f"x0_hat_t{t}"] = output(compute_tweedie(x_t, eps, SD_ALPHAS_CUMPROD[t].clone()))
    return out


def _prev_per_sample(seed: int) -> Outputs:
    from synchronization.core import compute_prev_state

    g = generator(seed, "prev-state/per-sample")
    n, c, h, w = _shape(g)
    t = timesteps(g, n, include=(20, 999)).clamp(min=20)  # steps t -> t - 20 (50-step grid)
    x_t, x0_hat = randn(g, n, c, h, w), randn(g, n, c, h, w)
    x_prev = compute_prev_state(x_t, x0_hat, SD_ALPHAS_CUMPROD[t], SD_ALPHAS_CUMPROD[t - 20])
    return {"x_prev": output(x_prev)}


def _prev_scalar_fp32(seed: int) -> Outputs:
    from synchronization.core import compute_prev_state

    g = generator(seed, "prev-state/scalar-fp32")
    n, c, h, w = _shape(g, 1)
    gap = 1000 // randint(g, 10, 50)  # the grid's step T // num_inference_steps
    t = randint(g, gap, 999)
    x_t, x0_hat = randn(g, n, c, h, w, dtype=torch.float32), randn(g, n, c, h, w, dtype=torch.float32)
    x_prev = compute_prev_state(x_t, x0_hat, IF_ALPHAS_CUMPROD[t].clone(), IF_ALPHAS_CUMPROD[t - gap].clone())
    return {"x_prev": output(x_prev)}


def _prev_fp16_last(seed: int) -> Outputs:
    from synchronization.core import compute_prev_state

    g = generator(seed, "prev-state/fp16-last-step")
    n, c, h, w = _shape(g, 1)
    x_t, x0_hat = randn(g, n, c, h, w, dtype=torch.float16), randn(g, n, c, h, w, dtype=torch.float16)
    x_prev = compute_prev_state(x_t, x0_hat, SD_ALPHAS_CUMPROD[1].clone(), torch.tensor(1.0))  # final alpha_bar = 1
    return {"x_prev": output(x_prev)}


def _prev_renoise(seed: int) -> Outputs:
    from synchronization.core import compute_prev_state

    g = generator(seed, "prev-state/implied-noise")
    n, c, h, w = _shape(g)
    t = timesteps(g, n).clamp(min=50)
    a_t, a_prev = SD_ALPHAS_CUMPROD[t], SD_ALPHAS_CUMPROD[t - 50]
    x0, eps = randn(g, n, c, h, w), randn(g, n, c, h, w)
    x_t = a_t.double().sqrt().view(-1, 1, 1, 1) * x0 + (1 - a_t.double()).sqrt().view(-1, 1, 1, 1) * eps
    return {"x_prev": output(compute_prev_state(x_t, x0, a_t, a_prev))}  # = sqrt(a_prev) x0 + sqrt(1-a_prev) eps


_TWEEDIE = "compute_tweedie: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)"
_PREV = ("compute_prev_state: x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev) eps with the noise "
         "implied by x_t and x0_hat, eps = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t)")

CASES: tuple[Case, ...] = (
    Case("tweedie/per-sample-t", 0.6, _tweedie_per_sample, visibility="visible",
         title="Tweedie phi: x0_hat vs reference (float64, per-sample alpha_bar, t = 0 and 999 included)",
         feedback=_TWEEDIE + ", with one alpha_bar_t per sample [N]."),
    Case("tweedie/scalar-fp32", 0.4, _tweedie_scalar_fp32,
         title="Tweedie phi: x0_hat vs reference (float32, scalar alpha_bar)",
         feedback=_TWEEDIE + ", with a 0-d alpha_bar_t tensor and float32 inputs."),
    Case("tweedie/if-2c-eps", 0.5, _tweedie_if,
         title="Tweedie phi: DeepFloyd IF's 6-channel output (eps + learned variance) on 3-channel x_t",
         feedback=_TWEEDIE + "; only the first C = x_t.shape[1] channels of IF's output are the noise."),
    Case("tweedie/fp16-last-steps", 0.5, _tweedie_fp16, partial=FP16_PARTIAL,
         title="Tweedie phi: float16 inputs at t = 0 and t = 1 (alpha_bar_t close to 1)",
         feedback=_TWEEDIE + "; float16 inputs give a finite float16 x0_hat."),
    Case("prev-state/per-sample", 0.6, _prev_per_sample,
         title="DDIM psi: x_prev vs reference (float64, per-sample t -> t - 20)",
         feedback=_PREV + "."),
    Case("prev-state/scalar-fp32", 0.4, _prev_scalar_fp32,
         title="DDIM psi: x_prev vs reference (float32, scalar alpha_bars, IF schedule, random grid step)",
         feedback=_PREV + ", with 0-d alpha_bar tensors."),
    Case("prev-state/fp16-last-step", 0.5, _prev_fp16_last, partial=FP16_PARTIAL,
         title="DDIM psi: float16 inputs at the last step (alpha_bar_prev = 1 gives x_prev = x0_hat)",
         feedback=_PREV + "; at the last step alpha_bar_prev = 1, so x_prev = x0_hat, finite and float16."),
    Case("prev-state/implied-noise", 0.5, _prev_renoise,
         title="DDIM psi: x_t built from a known x0 and noise is moved along that same noise",
         feedback=_PREV + ". With x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, psi(x_t, x0) = sqrt(a_prev) x0 + "
                          "sqrt(1 - a_prev) eps: DDIM re-noises with the implied noise, not fresh or zero noise."),
)

_T = ("tweedie/per-sample-t", "tweedie/scalar-fp32", "tweedie/if-2c-eps", "tweedie/fp16-last-steps")
_P = ("prev-state/per-sample", "prev-state/scalar-fp32", "prev-state/fp16-last-step", "prev-state/implied-noise")
_P_NOT_LAST = tuple(c for c in _P if c != "prev-state/fp16-last-step")  # alpha_bar_prev = 1 hides the noise term

MISTAKES: tuple[Mistake, ...] = (
    Mistake("tweedie-swapped", "sync-tweedie",
            "    x0_hat = (x_t - torch.sqrt(alpha_bar_t) * eps_hat) / torch.sqrt(1 - alpha_bar_t)\n",
            "Tweedie with sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) swapped", _T),
    Mistake("tweedie-no-sqrt", "sync-tweedie",
            "    x0_hat = (x_t - (1 - alpha_bar_t) * eps_hat) / alpha_bar_t\n",
            "Tweedie without the square roots: alpha_bar_t is the cumulative product, the coefficients are "
            "sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t)", _T),
    Mistake("tweedie-plus", "sync-tweedie",
            "    x0_hat = (x_t + torch.sqrt(1 - alpha_bar_t) * eps_hat) / torch.sqrt(alpha_bar_t)\n",
            "Tweedie adds the noise instead of removing it: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / ...", _T),
    Mistake("prev-alpha-t", "sync-prev-state",
            "    eps_hat = (x_t - torch.sqrt(alpha_bar_t) * x0_hat) / torch.sqrt(1 - alpha_bar_t)\n"
            "    x_prev = torch.sqrt(alpha_bar_t) * x0_hat + torch.sqrt(1 - alpha_bar_t) * eps_hat\n",
            "DDIM step with alpha_bar_t where alpha_bar_prev belongs (it gives back x_t)", _P),
    Mistake("prev-eps-alpha-prev", "sync-prev-state",
            "    eps_hat = (x_t - torch.sqrt(alpha_bar_prev) * x0_hat) / torch.sqrt(1 - alpha_bar_prev)\n"
            "    x_prev = torch.sqrt(alpha_bar_prev) * x0_hat + torch.sqrt(1 - alpha_bar_prev) * eps_hat\n",
            "the implied noise computed with alpha_bar_prev: eps = (x_t - sqrt(alpha_bar_t) x0_hat) / "
            "sqrt(1 - alpha_bar_t) uses alpha_bar_t (at the last step alpha_bar_prev = 1 divides by zero)", _P),
    Mistake("prev-zero-noise", "sync-prev-state",
            "    x_prev = torch.sqrt(alpha_bar_prev) * x0_hat\n",
            "DDIM step without the noise term: x_prev must re-noise x0_hat with the implied noise "
            "sqrt(1 - alpha_bar_prev) eps", _P_NOT_LAST),
    Mistake("prev-fresh-noise", "sync-prev-state",
            "    noise = torch.randn_like(x0_hat)\n"
            "    x_prev = torch.sqrt(alpha_bar_prev) * x0_hat + torch.sqrt(1 - alpha_bar_prev) * noise\n",
            "DDIM step with fresh Gaussian noise (DDPM-like): deterministic DDIM (eta = 0) re-noises with the noise "
            "implied by x_t and x0_hat", _P_NOT_LAST),
)
