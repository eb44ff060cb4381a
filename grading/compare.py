"""Read a worker's outputs and score them against the reference, in the trusted parent.

Only plain tensors cross the process boundary: the worker writes ``outputs.safetensors`` (keys
``<case id>/<name>``) and ``status.json``; the parent checks that both are regular files under a size cap and reads
them with ``safetensors.torch.load_file`` and ``json`` (never pickle), so a tensor subclass, a lying ``__eq__`` or
a monkeypatched ``torch`` in the worker cannot reach the comparison.

Scoring of one case (:func:`score_case`): the worker's status must be "ok", the tensor names must match, every
dtype and shape must equal the reference's, a non-finite value where the reference is finite scores 0, and the
error err = max |got - expected| / (max |expected| + atol) (the worst over the case's tensors) is mapped to a
fraction by ``case.partial``. Every tensor within ``torch.isclose(rtol, atol)`` of the reference is full credit.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from grading.case import Case, Outputs

MAX_STATUS_BYTES = 1 << 20


@dataclass(frozen=True)
class CaseResult:
    """Fraction of the case's points earned and what the student reads about it."""

    fraction: float
    message: str
    max_rel_err: float | None = None


def _regular_file(path: Path, max_bytes: int) -> str:
    """"" if ``path`` is a regular file (not a link, FIFO, ...) of at most ``max_bytes``, else the problem."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{path.name} was not written"
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        return f"{path.name} is not a regular file"  # a link, FIFO, device, or a hard link to another file
    if st.st_size > max_bytes:
        return f"{path.name} is {st.st_size / 2**20:.1f} MB, over the {max_bytes / 2**20:g} MB limit"
    return ""


@dataclass
class WorkerFiles:
    """What a worker's out dir held: outputs of the ok cases, status per reported case, the worker-level error,
    stray file names, and the worker's own report (python/torch versions, import time, peak RSS: untrusted)."""

    outputs: dict[str, Outputs] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    error: str = ""
    stray: list[str] = field(default_factory=list)
    worker: dict = field(default_factory=dict)


def _status(out: Path, cases: list[str], files: WorkerFiles) -> None:
    if _regular_file(out / "status.json", MAX_STATUS_BYTES):
        return  # the caller explains a worker that never finished
    try:
        data = json.loads((out / "status.json").read_text())
        worker, reported = data.get("worker", {}), data.get("cases", {})
        files.status = {c: "ok" if reported[c].get("ok") is True else str(reported[c].get("error", "failed"))[:4000]
                        for c in cases if isinstance(reported.get(c), dict)}
        files.worker = {k: v for k, v in worker.items() if k != "error" and isinstance(v, (int, float, str))}
        if worker.get("ok", False) is not True:
            files.error = str(worker.get("error", "worker failed"))[:4000]
    except (ValueError, AttributeError, TypeError) as err:
        files.status, files.error = {}, f"status.json is malformed ({type(err).__name__})"


def read_outputs(out: Path, cases: list[str], max_mb: float) -> WorkerFiles:
    """Read a worker's ``status.json`` and ``outputs.safetensors`` defensively (see :class:`WorkerFiles`)."""
    files = WorkerFiles(stray=sorted(n for n in os.listdir(out) if n not in ("outputs.safetensors", "status.json")))
    _status(out, cases, files)
    ok = [c for c in cases if files.status.get(c) == "ok"]
    if not ok:
        return files
    problem = _regular_file(out / "outputs.safetensors", int(max_mb * 2**20))
    tensors: dict[str, torch.Tensor] = {}
    if not problem:
        try:
            tensors = load_file(out / "outputs.safetensors")
        except Exception as err:  # safetensors raises its own error types for a malformed file
            problem = f"outputs.safetensors is malformed ({type(err).__name__})"
    for key, value in tensors.items():
        case, _, name = key.rpartition("/")
        if case in ok and name:
            files.outputs.setdefault(case, {})[name] = value
    for c in ok:
        if problem:
            files.status[c] = problem
            files.outputs.pop(c, None)
        else:
            files.outputs.setdefault(c, {})
    return files


def _finite_problem(expected: torch.Tensor, got: torch.Tensor) -> str:
    fin = torch.isfinite(expected)
    bad = int((fin & ~torch.isfinite(got)).sum())
    if bad:
        return f"{bad} NaN/inf value(s) where the reference is finite"
    if not bool(fin.all()):
        same_nan = torch.equal(torch.isnan(expected), torch.isnan(got))
        inf = torch.isinf(expected)
        if not same_nan or not torch.equal(got[inf], expected[inf]):
            return "its NaN/inf entries differ from the reference's"
    return ""


def tensor_error(expected: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> tuple[float, bool, str]:
    """(max |got - expected| / (max |expected| + atol), all isclose, problem) for same-dtype same-shape tensors."""
    if not (expected.is_floating_point() or expected.is_complex()):
        wrong = int((got != expected).sum())
        return (0.0, True, "") if not wrong else (math.inf, False, f"{wrong} of {expected.numel()} entries differ")
    wide = torch.complex128 if expected.is_complex() else torch.float64
    e, g = expected.to(wide), got.to(wide)
    problem = _finite_problem(e, g)
    if problem:
        return math.inf, False, problem
    fin = torch.isfinite(e)
    e, g = e[fin], g[fin]
    if e.numel() == 0:
        return 0.0, True, ""
    diff = (g - e).abs()
    err = float(diff.max() / (e.abs().max() + atol))
    return err, bool((diff <= atol + rtol * e.abs()).all()), ""


def _fraction(err: float, partial: tuple[tuple[float, float], ...]) -> float:
    return max((frac for limit, frac in partial if err <= limit), default=0.0)


def score_case(case: Case, expected: Outputs, got: Outputs | None, status: str) -> CaseResult:
    """Score one case: 0 with a message for an error, a missing/extra/mis-typed tensor or a stray NaN/inf."""
    if status != "ok":
        return CaseResult(0.0, f"Error: {status}")
    if got is None:
        return CaseResult(0.0, "Error: no outputs came back for this case")
    if case.derive is not None:  # verdicts computed here, in the trusted process, from both sides' raw outputs
        expected = case.derive(expected)
        try:
            got = case.derive(got)
        except Exception as err:  # malformed student outputs (shapes, dtypes): no credit, never a grader crash
            return CaseResult(0.0, f"Outputs cannot be checked: {type(err).__name__}: {str(err)[:200]}")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        return CaseResult(0.0, f"Outputs do not match: missing {missing}, unexpected {extra}")
    worst, worst_name, all_close = 0.0, "", True
    for name in sorted(expected):
        e, g = expected[name], got[name]
        if g.dtype != e.dtype:
            return CaseResult(0.0, f"{name}: dtype {g.dtype}, expected {e.dtype}")
        if g.shape != e.shape:
            return CaseResult(0.0, f"{name}: shape {tuple(g.shape)}, expected {tuple(e.shape)}")
        err, close, problem = tensor_error(e, g, case.rtol, case.atol)
        if problem:
            return CaseResult(0.0, f"{name}: {problem}. {case.feedback}".strip(), math.inf)
        all_close &= close
        if err >= worst:
            worst, worst_name = err, name
    fraction = _fraction(worst, case.partial)
    if all_close or fraction >= 1.0:
        return CaseResult(1.0, f"Matches the reference (max relative error {worst:.1e}).", worst)
    tight = min(limit for limit, _ in case.partial) if case.partial else 0.0
    message = (f"{worst_name}: max relative error {worst:.2e} (full credit needs <= {tight:.0e}); "
               f"{fraction:g} of the points. {case.feedback}")
    return CaseResult(fraction, message.strip(), worst)
