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
- reported scores (:mod:`grading.e2e_scores`): the submitted PNGs of the method's result folder are re-scored
  with the metric ``eval.json`` names and compared with its ``score``; a failed "Reported CLIP score reproduces"
  (or, with ``--reproduce toy``, a reported score far above what the student's own code reaches end to end)
  makes the task's band points 0 ("failing to reproduce the reported CLIP score will result in a score of zero",
  KAIST A5).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from grading import workspace
from grading.case import Case
from grading.e2e_scores import (
    REAL_CLIP,
    TOY_CLIP,
    Scored,
    images_problem,
    reported_check,
    reproduce_check,
    score_images,
)
from grading.results import TestResult, md_code
from grading.sandbox import Limits
from grading.spec import Band, Bands, Homework, Task

SIGMA_FLOOR = 0.005  # the reference's spread is at least this (cross-machine CPU noise)
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
        edges.append(math.floor(edge * 1e4) / 1e4)  # rounded down: a score at the edge stays in the band
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


def toy_bands(task: Task, ref, case_id: str | None = None) -> tuple[Bands | None, dict | None]:
    """(bands, calibration record): calibrated bands when a record exists (for ``case_id`` when given), else the
    task's placeholders."""
    rec = calibration_record(task, ref)
    if rec is None or (case_id is not None and rec.get("case", case_id) != case_id):
        return task.toy_bands, None
    bands = tuple(Band(float(b["lower"]), float(b["fraction"])) for b in rec["bands"])
    return Bands(rec.get("metric", TOY_CLIP), bands, calibrated=True), rec


# ---------------------------------------------------------------------------------------------- calibration


def is_end_to_end(module) -> bool:
    """True for a case module whose cases are end-to-end runs (``END_TO_END = True``)."""
    return bool(getattr(module, "END_TO_END", False))


def task_cases(task: Task, module, role: str = "graded") -> list[Case]:
    """The module's end-to-end cases of ``role`` whose regions all belong to ``task``."""
    return [c for c in module.CASES if c.end_to_end is not None and c.end_to_end.role == role
            and set(c.end_to_end.regions) <= set(task.regions)]


def banded_cases(hw: Homework) -> dict[str, tuple[str, Case, Case]]:
    """task id -> (case module, graded case, blank baseline case) for every task with toy bands and an e2e case."""
    import importlib

    out = {}
    for task in hw.tasks:
        for name in task.cases if task.toy_bands is not None else ():
            module = importlib.import_module(name)
            if not is_end_to_end(module):
                continue
            graded, blank = task_cases(task, module), task_cases(task, module, "baseline")
            if len(graded) != 1 or len(blank) != 1:
                raise ValueError(f"{name}: task {task.id} needs one graded and one baseline end-to-end case")
            out[task.id] = (name, graded[0], blank[0])
    return out


def _run_score(run, case: Case, seed: int) -> Scored:
    got, status = run.outputs.get(case.id), run.status.get(case.id, run.info.get("error") or "no output")
    spec = case.end_to_end
    problem = status if status != "ok" else images_problem(got, len(spec.captions), spec.image_size)
    if problem:
        raise RuntimeError(f"the reference fails end-to-end case {case.id} at seed {seed}: {problem}")
    return score_images(got["images"], spec.captions, spec.metric)


def calibration_for(task: Task, case: Case, seeds: tuple[int, ...], reference: list[Scored],
                    blank: list[Scored]) -> dict:
    """The calibration record of a task (JSON-ready): the scores, mu, sigma, b, band edges, reproduce tolerance."""
    ref_scores, blank_scores = [s.score for s in reference], [s.score for s in blank]
    mu, b = statistics.fmean(ref_scores), statistics.fmean(blank_scores)
    sigma = statistics.stdev(ref_scores) if len(ref_scores) > 1 else 0.0
    fractions = tuple(band.fraction for band in task.toy_bands.bands)
    edges = band_edges(fractions, mu, sigma, b)
    full = mu - 2 * max(sigma, SIGMA_FLOOR)
    return {"metric": case.end_to_end.metric, "case": case.id, "seeds": list(seeds),
            "reference": [round(s, 6) for s in ref_scores], "baseline": [round(s, 6) for s in blank_scores],
            "judge": [s.judge for s in reference], "mu": round(mu, 6), "sigma": round(sigma, 6), "b": round(b, 6),
            "bands": [{"lower": e, "fraction": f} for e, f in zip(edges, fractions)],
            # an honest run's cosines are <= 1 and its end-to-end score >= the full edge
            "reproduce_tolerance": round(1.0 - full, 4)}


def calibrate_toy_bands(hw: Homework, seeds: tuple[int, ...] = DEFAULT_SEEDS, root: Path = workspace.ROOT,
                        work: Path | None = None, limits: Limits | None = None) -> dict[str, dict]:
    """Calibrate the toy bands of every banded task of ``hw`` on the reference solution: task id -> record.

    For each seed, one sandboxed worker per case module runs the reference's graded end-to-end cases and their
    blank baselines (include the grading seed: with at most 5 seeds the reference at a calibration seed always
    lands at or above mu - 2 sigma). Raises RuntimeError when the reference fails a case and ValueError when it is
    not separated from the baseline.
    """
    from grading.grade import run_cases  # grading.grade imports this module

    plan = banded_cases(hw)
    if not plan:
        return {}
    with tempfile.TemporaryDirectory(prefix=f"calibrate-{hw.id}-") as tmp:
        base = Path(work) if work is not None else Path(tmp)
        tree = workspace.build_tree(hw, base / "reference", workspace.reference_bodies(hw, root), root)
        scores: dict[str, tuple[list[Scored], list[Scored]]] = {t: ([], []) for t in plan}
        for seed in seeds:
            for module in sorted({m for m, _, _ in plan.values()}):
                tasks = [t for t, (m, _, _) in plan.items() if m == module]
                cases = [c for t in tasks for c in plan[t][1:]]
                run = run_cases(tree, module, cases, seed, base / "runs", limits or Limits())
                for t in tasks:
                    scores[t][0].append(_run_score(run, plan[t][1], seed))
                    scores[t][1].append(_run_score(run, plan[t][2], seed))
    return {t: calibration_for(hw.task(t), plan[t][1], tuple(seeds), *scores[t]) for t in plan}


# ---------------------------------------------------------------------------------------------- grading hook


def _band_text(bands: Bands, rec: dict | None) -> str:
    edges = ", ".join(f"{band_label(bands, b.lower)} {b.fraction:g}" for b in bands.bands)
    if rec is None:
        return f"The toy bands are not calibrated (no release.json calibration): no band points ({edges})."
    return (f"Toy bands {edges}, below nothing; calibrated on the reference over seeds {rec.get('seeds')}: "
            f"mu {rec.get('mu', math.nan):.3f}, sigma {rec.get('sigma', math.nan):.3f}, blank baseline "
            f"{rec.get('b', math.nan):.3f}.")


def _run_case(module, case: Case, tree: Path, ref, work: Path, seed: int) -> tuple[Scored | None, str]:
    from grading.grade import run_cases  # grading.grade imports this module

    run = run_cases(tree, module.__name__, [case], seed, work, ref.limits)
    got, status = run.outputs.get(case.id), run.status.get(case.id, run.info.get("error") or "no output")
    spec = case.end_to_end
    problem = status if status != "ok" else images_problem(got, len(spec.captions), spec.image_size)
    if problem:  # the worker's text is the student's: fenced, never rendered as Markdown
        return None, "Error:\n\n" + md_code(problem)
    return score_images(got["images"], spec.captions, spec.metric), ""


def _side_test(task: Task, number: str, title: str, ok: bool | None, text: str, visibility: str) -> TestResult:
    name = f"{task.title} · {title}" if ok is not None else f"{task.title} · {title}: not checked"
    return TestResult(name=name, number=number, score=0.0, max_score=0.0, output=text, tags=(task.id,),
                      status="failed" if ok is False else "passed", visibility=visibility)


def case_tests(task: Task, number: int, first: int, module, case: Case, points: float, gate: float, ctx: dict
               ) -> list[TestResult]:
    """The band test of one end-to-end case, then its reported-score tests (0 points each)."""
    spec, sess = case.end_to_end, session(ctx["ref"])
    bands, rec = toy_bands(task, ctx["ref"], case.id)
    if ctx["blocked"]:
        scored, error = None, "Not run: " + "; ".join(ctx["blocked"])
    else:
        scored, error = _run_case(module, case, ctx["tree"], ctx["ref"], ctx["work"], ctx["seed"])
    side: list[tuple[str, bool | None, str]] = []
    if ctx["items"] is not None and spec.results:
        reported = reported_check(spec.results, ctx["items"], sess.clip_model, spec.app)
        side.append(("Reported CLIP score reproduces", reported.ok, reported.message))
        if sess.reproduce == "toy" and scored is not None:
            side.append(("Reported CLIP score reproduces (toy re-run)",
                         *reproduce_check(spec.captions, scored, reported, (rec or {}).get("reproduce_tolerance"))))
    zeroed = any(ok is False for _, ok, _ in side)
    fraction = bands.fraction(scored.score) if scored is not None else 0.0
    earned = round(points * fraction * gate * (not zeroed), 6)
    lines = [case.feedback, error] if error else [case.feedback]
    if scored is not None:
        per = ", ".join(f"{c!r} {v:.3f}" for c, v in zip(spec.captions, scored.cosines))
        lines += [f"{spec.metric} cosine per caption: {per}.",
                  f"Toy judge: {scored.judge:.0%} of the images fully correct." if scored.judge is not None else ""]
    lines.append(_band_text(bands, rec))
    if gate < 1.0:
        lines.append(f"Band points x {gate:.3f}, the fraction of this task's implementation cases passed.")
    if zeroed:
        lines.append("Band points are 0: the reported CLIP score does not reproduce (see the tests below).")
    shown = f"{scored.score:.3f} -> band {band_label(bands, scored.score)}" if scored is not None else "not available"
    band = TestResult(name=f"{task.title} · {case.title or case.id} {shown}: {earned:.4g}/{points:.4g}",
                      number=f"{number}.{first}", score=earned, max_score=round(points, 6),
                      status="passed" if earned >= points - 1e-9 else "failed",
                      output="\n".join(s for s in lines if s), tags=(task.id,), visibility=case.visibility)
    return [band] + [_side_test(task, f"{number}.{first + k + 1}", title, ok, text, case.visibility)
                     for k, (title, ok, text) in enumerate(side)]


def band_tests(task: Task, number: int, tests: list[TestResult], modules: list, ctx: dict) -> list[TestResult]:
    """``tests`` (the task's implementation tests) rescaled to their share, then the end-to-end band tests.

    ``ctx``: ``ref``, ``tree``, ``work``, ``seed``, ``blocked`` (reasons the task's regions do not run) and
    ``items`` (the submission's items folder, or None: no reported-score checks).
    """
    cases = [(m, c) for m in modules for c in task_cases(task, m)]
    if not cases or task.toy_bands is None:
        return tests
    rule = RULES.get(ctx["ref"].hw.id, DEFAULT_RULE)
    earned, most = sum(t.score for t in tests), sum(t.max_score for t in tests)
    keep = 1.0 - rule.share if tests else 0.0
    out = [replace(t, score=round(t.score * keep, 6), max_score=round(t.max_score * keep, 6)) for t in tests]
    points = (task.points - sum(t.max_score for t in out)) / len(cases)
    gate = earned / most if rule.gate and most > 0 else 1.0
    for module, case in cases:
        out += case_tests(task, number, len(out) + 1, module, case, points, gate, ctx)
    return out
