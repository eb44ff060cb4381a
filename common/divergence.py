"""Divergence guards for optimisation and sampling loops: stop with one line instead of saving garbage.

A run that diverges but stays finite (a GAN loss of 1e20, latents of 1e6 after ``--lr 1e6``) would otherwise
exit 0 with a saturated image. Loops call :func:`check_bounded` on their state and feed scalar losses to a
:class:`BlowUpGuard`; both raise :class:`Diverged`, a one-line user error (exit code 2 in a CLI) that names
the step and the likely cause.
"""

from __future__ import annotations

import math

import torch

from common.cli import UserError


class Diverged(UserError, ValueError):
    """A loop produced NaN/inf or values far outside their sane range."""


def _describe(what: str, step: int | None) -> str:
    return what if step is None else f"{what} at step {step}"


def check_bounded(x: torch.Tensor, bound: float, what: str, step: int | None = None,
                  hint: str = "lower the learning rate or the guidance scale") -> None:
    """Raise :class:`Diverged` when ``x`` holds NaN/inf or any ``|x| > bound``.

    ``bound`` is generous on purpose (for example 1e3 for SD latents, which live in about [-5, 5]): it catches
    a blow-up, never a merely unusual run.
    """
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        raise Diverged(f"{_describe(what, step)} became NaN or infinite; {hint}")
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak > bound:
        raise Diverged(f"{_describe(what, step)} diverged (max |value| {peak:.3g} > {bound:g}); {hint}")


class BlowUpGuard:
    """Track a scalar (a loss) and stop when it is non-finite or ``factor`` times beyond its early scale.

    The reference scale is the largest ``|value|`` seen in the first ``warmup`` updates (at least ``floor``), so
    a loss that starts near zero does not trip the guard by rising to an ordinary size.
    """

    def __init__(self, what: str, factor: float = 1e4, warmup: int = 5, floor: float = 1.0,
                 hint: str = "lower the learning rate"):
        self.what, self.factor, self.warmup, self.floor, self.hint = what, factor, warmup, floor, hint
        self.scale = 0.0
        self.seen = 0

    def update(self, value: float | torch.Tensor, step: int | None = None) -> None:
        value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(value):
            raise Diverged(f"{_describe(self.what, step)} became NaN or infinite; {self.hint}")
        if self.seen < self.warmup:
            self.scale = max(self.scale, abs(value), self.floor)
        self.seen += 1
        if abs(value) > self.factor * max(self.scale, self.floor):
            raise Diverged(f"{_describe(self.what, step)} diverged ({value:.3g}, more than {self.factor:g} x its "
                           f"early scale {self.scale:.3g}); {self.hint}")
