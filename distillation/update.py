"""What every distillation loss shares outside its solution region: the update direction g becomes a loss.

Each method computes its update direction g [B, C, h, w] in one small solution function; its public
``get_*_loss`` then calls :func:`record_update`, which turns a NaN or infinite g into :class:`NonFiniteUpdate`
(one clear line, never a silent zero) and leaves the diagnostics (x0_hat, g, t) in ``guidance.aux`` for the
runner's previews, and returns :func:`stop_gradient_loss`, whose gradient with respect to the latents is g.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from common.cfg import split_cfg_batch


class NonFiniteUpdate(ValueError):
    """A method's update (gradient g or LoRA loss) became NaN or infinite; the runner adds the step."""

    hint = "try a lower learning rate or --precision fp32"  # what the runner appends to describe(step)

    def __init__(self, method: str, what: str, t: list[int]):
        self.method, self.what, self.t = method, what, t
        super().__init__(self.describe())

    def describe(self, step: int | None = None) -> str:
        at = f" at step {step}" if step is not None else ""
        return f"the {self.method} {self.what} became NaN or infinite{at} (t = {self.t})"


def stop_gradient_loss(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """1/2 sum (x - sg(x - g))^2, whose gradient with respect to x is g (sum reduction)."""
    target = (x - g).detach()
    return 0.5 * ((x - target) ** 2).sum()


def pair_embeddings(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """[uncond_s, cond_s] and [uncond_t, cond_t] -> [uncond_s, uncond_t, cond_s, cond_t] for x = cat(src, tgt)."""
    (u_s, c_s), (u_t, c_t) = split_cfg_batch(src), split_cfg_batch(tgt)
    return torch.cat([u_s, u_t, c_s, c_t])


def record_update(guidance: Any, method: str, t: torch.Tensor, g: torch.Tensor, x0_hat: torch.Tensor,
                  **extra: torch.Tensor) -> None:
    """Raise :class:`NonFiniteUpdate` if g (or an ``extra`` loss term) is not finite, else fill ``guidance.aux``.

    Called by every ``get_*_loss`` after its solution function, so a student's region never touches ``aux``.
    With ``guidance.checks`` (a ``common.divergence.LazyChecks``, set by the runner) the checks are queued
    instead of read now; a failure is raised later as ``Diverged`` with the runner's message
    ``NonFiniteUpdate.describe(guidance.check_step)`` + hint (t is read only then).
    """
    checks = getattr(guidance, "checks", None)
    for what, value in (("gradient g", g), *extra.items()):
        if checks is None:
            if not bool(torch.isfinite(value).all()):
                raise NonFiniteUpdate(method, what, t.tolist())
        else:
            step = getattr(guidance, "check_step", None)
            checks.add(value, f"the {method} {what}", step, message=partial(_lazy_message, method, what, t, step))
    guidance.aux = {"x0_hat": x0_hat, "g": g, "t": t, **extra}


def _lazy_message(method: str, what: str, t: torch.Tensor, step: int | None) -> str:
    """The runner's one line for a non-finite update (called only on failure: reading t costs a wait)."""
    return f"{NonFiniteUpdate(method, what, t.tolist()).describe(step)}; {NonFiniteUpdate.hint}"
