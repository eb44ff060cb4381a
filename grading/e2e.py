"""End-to-end toy runs scored by calibrated toy bands, and the checks of a submission's reported CLIP scores.

An end-to-end case (``Case.end_to_end``, e.g. ``grading/cases/e2e_distillation.py``) runs a short toy evaluation
of the student's method in the sandboxed worker and returns its images; this trusted process scores them itself
(toy-clip raw cosine against the captions of the case, mean per prompt then over prompts, as the handouts'
``eval.py``; plus the toy judge, shown only) and maps the score through the task's toy bands:

- bands are calibrated on the reference (:func:`calibrate_toy_bands`, run by the release): over a few seeds the
  reference scores mu +- sigma and the blank method (no update) b; full band >= mu - 2 sigma, a band worth a
  fraction f < 1 of the points >= b + f (mu - b) (the half band at b + (mu - b) / 2). They reach grading through
  ``release.json`` (``calibration.measured``) or :func:`configure`; uncalibrated placeholder bands award nothing;
- points (:data:`RULES`, the handouts' grading rules): KAIST A4 / A5 give a task's points from the band, gated by
  the implementation cases (band points x the fraction of them passed); NYCU Lab 3 is half implementation, half
  band ("correct implementation + results");
- reported scores: the submitted PNGs of the method's result folder (8-bit RGB, pixel-capped) are re-scored with
  the metric ``eval.json`` names (toy-clip for toy outputs; ``clip-vit-b-32`` only with ``--clip_model``) and
  compared with its ``score``: |delta| > 1e-3, or an unreadable ``eval.json``, is a failed test "Reported CLIP score
  reproduces" and the task's band points become 0 ("failing to reproduce the reported CLIP score will result in a
  score of zero", KAIST A5). With ``--reproduce toy`` the reported cosines of the case's captions must also lie
  within a calibrated tolerance above the end-to-end score of the student's own code.
Nothing here unpickles; ``eval.json`` is parsed as strict JSON (no NaN) with a size cap.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
import statistics
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from grading import workspace
from grading.case import Case
from grading.results import TestResult
from grading.sandbox import Limits
from grading.spec import Band, Bands, Homework, Task

TOY_CLIP, REAL_CLIP = "toy-clip", "clip-vit-b-32"
REPORT_TOL = 1e-3  # |re-scored - reported| above this fails "Reported CLIP score reproduces"
SIGMA_FLOOR = 0.005  # the reference's spread is at least this (cross-machine CPU noise)
MAX_PIXELS = 4096 * 4096  # per submitted PNG (PIL's own bomb check stays on as well)
MAX_IMAGES = 200  # PNGs re-scored per result folder
MAX_JSON_BYTES = 1 << 20
DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class BandRule:
    """How a banded task's points split: ``share`` from the band; ``gate``: band points x implementation passed."""

    share: float
    gate: bool


RULES = {"kaist-a4": BandRule(1.0, True), "kaist-a5": BandRule(1.0, True), "nycu-lab3": BandRule(0.5, False)}
DEFAULT_RULE = BandRule(0.5, False)


@dataclass
class Session:
    """End-to-end settings of one grading session, kept on its :class:`grading.grade.Reference`."""

    reproduce: str = "none"  # "toy": also compare the reported score with the end-to-end one
    clip_model: str | None = None  # REAL_CLIP: re-score real-model outputs with it (downloads OpenAI CLIP)
    calibration: dict | None = None  # task id -> calibration record; overrides release.json


def session(ref) -> Session:
    """The e2e session of ``ref`` (created on first use)."""
    if getattr(ref, "_e2e_session", None) is None:
        ref._e2e_session = Session()
    return ref._e2e_session


def configure(ref, reproduce: str = "none", clip_model: str | None = None, calibration: dict | None = None) -> Session:
    """Set the session's options (``grade --reproduce/--clip_model``, bands calibrated in this session)."""
    if reproduce not in ("none", "toy", "real"):
        raise ValueError(f"reproduce must be none, toy or real, got {reproduce!r}")
    if clip_model not in (None, "", TOY_CLIP, REAL_CLIP):
        raise ValueError(f"clip_model must be {TOY_CLIP} or {REAL_CLIP}, got {clip_model!r}")
    s = session(ref)
    s.reproduce, s.clip_model = reproduce, clip_model or None
    if calibration is not None:
        s.calibration = calibration
    return s


# ---------------------------------------------------------------------------------------------- scoring images


@dataclass(frozen=True)
class Scored:
    """A CLIP score: the mean over prompts of each prompt's mean cosine, the cosines, and the toy judge's share."""

    score: float
    cosines: tuple[float, ...]
    judge: float | None = None


@functools.lru_cache(maxsize=2)
def _clip(name: str):
    from common.registry import load_clip

    return load_clip(name, "cpu")


def score_pils(pils: list, prompts: list[str], metric: str = TOY_CLIP, judge: bool = False) -> Scored:
    """Raw cosine of each image with its prompt under ``metric`` (eval.py's aggregation); optional toy judge."""
    from common.eval import clip_cosine

    with torch.inference_mode():
        cos = clip_cosine(pils, prompts, _clip(metric)).tolist()
    if not all(math.isfinite(c) for c in cos):
        raise ValueError(f"{metric} gives non-finite cosines")
    per_prompt: dict[str, list[float]] = {}
    for prompt, c in zip(prompts, cos):
        per_prompt.setdefault(prompt, []).append(c)
    score = statistics.fmean(statistics.fmean(v) for v in per_prompt.values())
    share = None
    if judge:
        from common.toy.judge import fully_correct

        share = float(fully_correct(pils, prompts).float().mean())
    return Scored(score, tuple(cos), share)


def images_problem(out: dict | None, k: int, size: int) -> str:
    """"" when ``out`` is ``{"images": float32 [k, 3, size, size]}``, finite and in [-1, 1]; else the problem."""
    if out is None or set(out) != {"images"}:
        return f"the case must return only 'images', got {sorted(out or {})}"
    x = out["images"]
    if x.dtype != torch.float32 or tuple(x.shape) != (k, 3, size, size):
        return f"images: {x.dtype} {tuple(x.shape)}, expected torch.float32 {(k, 3, size, size)}"
    if not bool(torch.isfinite(x).all()):
        return "images hold NaN/inf values"
    if float(x.abs().max()) > 1.0 + 1e-4:
        return f"images leave [-1, 1] (max |x| = {float(x.abs().max()):.3g})"
    return ""


def score_images(images: torch.Tensor, captions: tuple[str, ...], metric: str = TOY_CLIP) -> Scored:
    """Score end-to-end images [K, 3, S, S] as their PNGs would be (8-bit quantised), with the toy judge."""
    from common.images import tensor_to_pil

    return score_pils([tensor_to_pil(x) for x in images], list(captions), metric, judge=metric == TOY_CLIP)


# ---------------------------------------------------------------------------------------------- bands


def band_edges(fractions: tuple[float, ...], mu: float, sigma: float, baseline: float) -> tuple[float, ...]:
    """Lower edges: full (f = 1) mu - 2 sigma; f < 1 at b + f (mu - b); kept strictly decreasing."""
    full = mu - 2 * max(sigma, SIGMA_FLOOR)
    if not full > baseline:
        raise ValueError(f"the reference (mu {mu:.3f}, sigma {sigma:.3f}) is not separated from the blank "
                         f"baseline {baseline:.3f}: more steps or captions are needed")
    edges: list[float] = []
    for f in fractions:
        edge = full if f >= 1.0 else baseline + f * (mu - baseline)
        if edges and edge >= edges[-1]:
            edge = edges[-1] - 1e-3
        edges.append(round(edge, 4))
    return tuple(edges)


def band_label(bands: Bands, score: float) -> str:
    """'[0.28, inf)', '[0.26, 0.28)' or '(-inf, 0.26)': the band ``score`` falls in."""
    upper = math.inf
    for band in bands.bands:
        if score >= band.lower:
            return f"[{band.lower:g}, {upper:g})"
        upper = band.lower
    return f"(-inf, {upper:g})"


def _valid_record(rec: object) -> bool:
    try:
        edges = [(float(b["lower"]), float(b["fraction"])) for b in rec["bands"]]
    except (TypeError, KeyError, ValueError):
        return False
    return bool(edges) and all(math.isfinite(v) for e in edges for v in e)


def calibration_record(task: Task, ref) -> dict | None:
    """The task's calibration: the session's, else ``release.json`` under the reference root; None if neither."""
    found = (session(ref).calibration or {}).get(task.id)
    if found is None:
        path = Path(ref.root) / "release.json"
        try:
            cal = json.loads(path.read_text()).get("calibration") if path.is_file() else None
        except (OSError, ValueError, AttributeError):
            cal = None
        if isinstance(cal, dict):
            found = (cal.get("measured") or {}).get(task.id) if isinstance(cal.get("measured"), dict) \
                else cal.get(task.id)
    return found if _valid_record(found) else None


def toy_bands(task: Task, ref) -> tuple[Bands | None, dict | None]:
    """(bands, calibration record): calibrated bands when a record exists, else the task's placeholders."""
    rec = calibration_record(task, ref)
    if rec is None:
        return task.toy_bands, None
    bands = tuple(Band(float(b["lower"]), float(b["fraction"])) for b in rec["bands"])
    return Bands(rec.get("metric", TOY_CLIP), bands, calibrated=True), rec
