"""Divergence guards for optimisation and sampling loops: stop with one line instead of saving garbage.

A run that diverges but stays finite (a GAN loss of 1e20, latents of 1e6 after ``--lr 1e6``) would otherwise
exit 0 with a saturated image. Loops call :func:`check_bounded` on their state and feed scalar losses to a
:class:`BlowUpGuard`; both raise :class:`Diverged`, a one-line user error (exit code 2 in a CLI) that names
the step and the likely cause.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import torch

from common.cli import UserError
from common.gpu import HostCopy


class Diverged(UserError, ValueError):
    """A loop produced NaN/inf or values far outside their sane range."""


def _describe(what: str, step: int | None) -> str:
    return what if step is None else f"{what} at step {step}"


def check_bounded(x: torch.Tensor, bound: float, what: str, step: int | None = None,
                  hint: str = "lower the learning rate or the guidance scale") -> None:
    """Raise :class:`Diverged` when ``x`` holds NaN/inf or any ``|x| > bound``.

    ``bound`` is generous on purpose (for example 1e3 for SD latents, which live in about [-5, 5]): it catches
    a blow-up, never a merely unusual run. ``bound = inf`` checks finiteness only.
    """
    _check_now(x.detach(), bound, what, step, hint, None)


def _nonfinite(what: str, step: int | None, hint: str, message: Callable[[], str] | None,
               error: type[Exception] = Diverged) -> Exception:
    return error(message() if message is not None else f"{_describe(what, step)} became NaN or infinite; {hint}")


def _check_now(x: torch.Tensor, bound: float, what: str, step: int | None, hint: str,
               message: Callable[[], str] | None, error: type[Exception] = Diverged) -> None:
    if x.numel() == 1 and not x.is_complex():  # a scalar (a loss): one read instead of two tensor ops
        peak = abs(x.item())
        if not math.isfinite(peak):
            raise _nonfinite(what, step, hint, message, error)
        _raise_if_beyond(peak, bound, what, step, hint)
        return
    if not bool(torch.isfinite(x).all()):
        raise _nonfinite(what, step, hint, message, error)
    if bound < math.inf:  # a finite x never exceeds inf: no second reduction
        peak = float(x.abs().max()) if x.numel() else 0.0
        _raise_if_beyond(peak, bound, what, step, hint)


def _raise_if_beyond(peak: float, bound: float, what: str, step: int | None, hint: str) -> None:
    if peak > bound:
        raise Diverged(f"{_describe(what, step)} diverged (max |value| {peak:.3g} > {bound:g}); {hint}")


class _Pending(NamedTuple):
    peak: HostCopy  # max |x| as float32 (NaN/inf when x holds one), on its way to the host
    bound: float
    what: str
    step: int | None
    hint: str
    message: Callable[[], str] | None  # the NaN/inf message instead of the default (built only on failure)
    error: type[Exception]  # raised for NaN/inf (Diverged unless the caller has its own one-line error)


class LazyChecks:
    """:func:`check_bounded` whose verdict is read ``lag`` steps late, so a GPU loop never waits mid-step.

    Reading a CUDA value (``bool(t)``, ``float(t)``, ``.item()``) makes the CPU wait until the GPU has run
    everything queued so far: at one prompt under CUDA graphs that wait exposes the whole Python side of every
    step. :meth:`add` queues max |x| on the device (``amax`` propagates NaN, and inf stays inf, so one number
    gives both verdicts) and copies it to pinned host memory behind the queued work (``common.gpu.HostCopy``);
    :meth:`poll` (call it once per step, after queueing the step's work) reads the checks of all but the newest
    ``lag`` steps, waiting only for their copies, which the GPU has long finished; :meth:`flush` reads all of
    them (call it before writing any output and at the end). A failure raises the same :class:`Diverged` as
    :func:`check_bounded`, naming the step it happened at; the first queued failure wins and the queue is
    dropped. A tensor on a device outside ``lazy_devices`` (the CPU: nothing to overlap) is checked at once.
    """

    def __init__(self, lag: int = 1, lazy_devices: tuple[str, ...] = ("cuda",)):
        self.lag, self.lazy_devices = lag, lazy_devices  # tests pass ("cpu",) to exercise the queue
        self.pending: deque[_Pending] = deque()
        self.calls = 0

    def add(self, x: torch.Tensor, what: str, step: int | None = None, bound: float = math.inf,
            hint: str = "lower the learning rate or the guidance scale",
            message: Callable[[], str] | None = None, error: type[Exception] = Diverged) -> None:
        """Queue ``check_bounded(x, bound, what, step, hint)``; ``bound = inf`` checks finiteness only.

        ``message()`` (called only if x is NaN/inf) replaces the default "<what> at step N became NaN or infinite;
        <hint>", for callers whose message needs values that would cost a read now; ``error`` is the exception
        class of that NaN/inf verdict (a divergence past ``bound`` is always :class:`Diverged`).
        """
        x = x.detach()
        if x.device.type not in self.lazy_devices:
            _check_now(x, bound, what, step, hint, message, error)
            return
        peak = x.abs().amax().float() if x.numel() else x.new_zeros((), dtype=torch.float32)  # [] on x's device
        self.pending.append(_Pending(HostCopy(peak), bound, what, step, hint, message, error))
        self.calls += 1

    def poll(self) -> None:
        """Read (and raise on) the queued checks of all but the newest ``lag`` steps."""
        if not self.pending:
            return
        steps = sorted({p.step for p in self.pending}, key=lambda s: -1 if s is None else s)
        keep = set(steps[-self.lag:]) if self.lag > 0 else set()
        self._read_while(lambda p: p.step not in keep)

    def flush(self) -> None:
        """Read (and raise on) every queued check."""
        self._read_while(lambda p: True)

    def _read_while(self, due: Callable[[_Pending], bool]) -> None:
        while self.pending and due(self.pending[0]):
            p = self.pending.popleft()
            try:
                _judge(float(p.peak.get()), p)  # waits for this copy only
            except (Diverged, p.error):
                self.pending.clear()  # the first failure is the one reported
                raise


def _judge(peak: float, p: _Pending) -> None:
    if not math.isfinite(peak):
        raise _nonfinite(p.what, p.step, p.hint, p.message, p.error)
    _raise_if_beyond(peak, p.bound, p.what, p.step, p.hint)


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
