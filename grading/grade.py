"""Grade one submission: take its region bodies, graft them into a fresh tree, run every task's cases in a sandboxed
worker, compare with the reference in this (trusted) process, and write a Gradescope ``results.json``.

Student code never runs here: the worker process imports the grafted tree and returns only tensors (safetensors).
The reference outputs, and the outputs of every catalogued mistake, come from the same worker on trees built from
the reference, once per grading session (:class:`Reference`).
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from grading import e2e, markers, scan, workspace
from grading.case import Case, Mistake, Outputs
from grading.compare import CaseResult, score_case
from grading.results import TestResult, md_code
from grading.sandbox import Limits, run_worker
from grading.spec import Homework, Task


@dataclass
class RunOutputs:
    """What one worker run left: outputs per case id, a status line per case id, and the sandbox's report."""

    outputs: dict[str, Outputs]
    status: dict[str, str]
    info: dict = field(default_factory=dict)


def case_modules(task: Task) -> list:
    """The trusted case modules of a task (imported from this process's own ``grading`` package)."""
    return [importlib.import_module(name) for name in task.cases]


def run_cases(tree: Path, module: str, cases: list[Case], seed: int, work: Path, limits: Limits) -> RunOutputs:
    """Run ``cases`` of ``module`` in a sandboxed worker over ``tree``; never raises for what the worker does."""
    out = work / f"out-{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    request = {"module": module, "cases": [c.id for c in cases], "seed": seed, "threads": 1}
    result = run_worker(tree, request, out, limits)
    outputs, status = result.outputs, result.status
    return RunOutputs(outputs, status, result.summary())


class Reference:
    """Reference and mistake outputs for one homework and seed, computed on first use and kept for the session."""

    def __init__(self, hw: Homework, seed: int, work: Path, root: Path = workspace.ROOT, limits: Limits | None = None):
        self.hw, self.seed, self.work, self.root = hw, seed, work, root
        self.limits = limits or Limits()
        self._runs: dict[tuple[str, str], RunOutputs] = {}
        self._bodies = workspace.reference_bodies(hw, root)

    def _tree(self, key: str, bodies: dict[str, str]) -> Path:
        dest = self.work / "trees" / key
        if not dest.exists():
            workspace.build_tree(self.hw, dest, bodies, self.root)
        return dest

    def outputs(self, module: str) -> RunOutputs:
        key = (module, "reference")
        if key not in self._runs and e2e.is_end_to_end(importlib.import_module(module)):  # e2e hook: scored by
            self._runs[key] = RunOutputs({}, {})  # calibrated toy bands (grading/e2e.py), no reference outputs
        if key not in self._runs:
            cases = list(importlib.import_module(module).CASES)
            tree = self._tree("reference", self._bodies)
            self._runs[key] = run_cases(tree, module, cases, self.seed, self.work / "runs", self.limits)
            missing = [c.id for c in cases if c.id not in self._runs[key].outputs]
            if missing:
                raise RuntimeError(f"the reference fails its own cases {missing[:3]} in {module}: "
                                   f"{[self._runs[key].status.get(m) for m in missing[:3]]}")
        return self._runs[key]

    def mistake(self, module: str, mistake: Mistake) -> RunOutputs:
        key = (module, mistake.id)
        if key not in self._runs:
            cases = [c for c in importlib.import_module(module).CASES if c.id in mistake.caught_by]
            tree = self._tree(f"mistake-{mistake.id}", {**self._bodies, mistake.region: mistake.body})
            self._runs[key] = run_cases(tree, module, cases, self.seed, self.work / "runs", self.limits)
        return self._runs[key]


# Modules a submission may import at the top of a region file for its regions; any other added import is ignored
# (and reported), so a region cannot reach os/sys/subprocess through an import the scan does not see.
ALLOWED_IMPORT_ROOTS = frozenset({"math", "cmath", "numbers", "functools", "itertools", "operator", "typing",
                                  "collections", "dataclasses", "torch", "numpy", "einops",
                                  "common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization"})


def added_imports(submitted: str, starter: str) -> tuple[list[str], list[str]]:
    """(allowed, refused) top-level import statements of ``submitted`` that ``starter`` lacks, as source lines."""
    def imports(text: str) -> dict[str, ast.stmt]:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return {}
        return {ast.unparse(n): n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}

    have = imports(starter)
    allowed, refused = [], []
    for line, node in imports(submitted).items():
        if line in have:
            continue
        roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else [
            (node.module or "").split(".")[0] if node.level == 0 else ""]
        (allowed if all(r in ALLOWED_IMPORT_ROOTS for r in roots) else refused).append(line)
    return allowed, refused


@dataclass
class Extracted:
    """A submission's region bodies and what is wrong with them, before anything runs."""

    bodies: dict[str, str]
    blocked: dict[str, str]  # region id -> why its task scores 0 without running (missing, banned construct)
    flags: list[str]  # integrity notes for the instructor (outside edits, forbidden calls)
    diffs: dict[str, str]  # relative path -> diff of the outside-region edits
    imports: dict[str, list[str]] = field(default_factory=dict)  # relative path -> allowed added import lines


def extract_submission(hw: Homework, files: dict[str, str], root: Path = workspace.ROOT) -> Extracted:
    """Read every region file of the homework from ``files`` (relpath -> submitted text) against its starter."""
    bodies, blocked, flags, diffs, imports = {}, {}, [], {}, {}
    for rel, reference in workspace.region_files(hw, root).items():
        regions = {r.id: r for r in markers.find_regions(reference, rel) if r.id in hw.region_ids}
        if not regions:
            continue
        starter = workspace.starter_text(hw, rel, reference, root)
        if rel not in files:
            blocked.update({i: f"{rel} is missing from the submission" for i in regions})
            continue
        got = markers.extract(files[rel], starter)
        allowed, refused = added_imports(files[rel], starter)
        if allowed:
            imports[rel] = allowed
        flags += [f"{rel}: import not carried into grading (only {', '.join(sorted(ALLOWED_IMPORT_ROOTS))}"
                  f" are): {line}" for line in refused]
        for rid in got.missing:
            if rid in regions:
                blocked[rid] = f"the markers '# BEGIN TODO {rid}' / '# END TODO {rid}' in {rel} are missing or moved"
        if got.outside_edited:
            diffs[rel] = markers.outside_diff(files[rel], starter, rel)
            flags.append(f"{rel}: edits outside the TODO regions (ignored for grading)")
        for rid, body in got.bodies.items():
            if rid not in regions:
                continue
            bodies[rid] = body
            for flag in scan.scan_region(body, files[rel], hw.forbidden_calls):
                flags.append(f"{rel} region {rid}: {flag.message}")
                blocked.setdefault(rid, flag.message)
    return Extracted(bodies, blocked, flags, diffs, imports)


def _case_test(task: Task, number: str, case: Case, share: float, result: CaseResult) -> TestResult:
    status = "passed" if result.fraction >= 1.0 else "failed"
    return TestResult(name=f"{task.title} · {case.title or case.id}", number=number,
                      score=round(share * result.fraction, 6), max_score=round(share, 6), status=status,
                      output=result.message, tags=(task.id,), visibility=case.visibility)


def _name_mistake(module, case: Case, got: Outputs | None, ref: Reference) -> str:
    """' This matches a known mistake: ...' when the student's outputs equal a catalogued mistake's."""
    if got is None:
        return ""
    for mistake in getattr(module, "MISTAKES", ()):
        if case.id not in mistake.caught_by:
            continue
        wrong = ref.mistake(module.__name__, mistake).outputs.get(case.id)
        if wrong is not None and score_case(case, wrong, got, "ok").fraction >= 1.0:
            return f" This matches a known mistake: {mistake.feedback}"
    return ""


def _score_module(module, tree: Path, ref: Reference, work: Path, seed: int) -> list[tuple[Case, CaseResult]]:
    """Run one case module on the student's tree and score each case against the reference."""
    cases = list(module.CASES)
    run = run_cases(tree, module.__name__, cases, seed, work, ref.limits)
    expected = ref.outputs(module.__name__).outputs
    scored = []
    for case in cases:
        got = run.outputs.get(case.id)
        status = run.status.get(case.id, run.info.get("error") or "no output")  # the worker's text: untrusted
        res = score_case(case, expected[case.id], got, status if status == "ok" else "\n\n" + md_code(status))
        if res.fraction < 1.0:
            named = _name_mistake(module, case, got, ref)
            # a known mistake is wrong, not imprecise: no tolerance-band partial credit for it
            message = re.sub(r"; [0-9.]+ of the points\.", "; 0 of the points.", res.message) if named else res.message
            res = CaseResult(0.0 if named else res.fraction, message + named, res.max_rel_err)
        scored.append((case, res))
    return scored


def case_shares(points: float, weights: list[float]) -> list[float]:
    """Each case's points: ``points`` split by ``weights``, rounded to 1e-6 so that the shares add up to ``points``
    exactly (rounding every share up could award more than the task has; the last share takes the remainder)."""
    total = sum(weights) or 1.0
    shares = [round(points * w / total, 6) for w in weights]
    if shares:
        shares[-1] = round(points - sum(shares[:-1]), 6)
    return shares


def grade_task(task: Task, number: int, tree: Path, ref: Reference, extracted: Extracted, work: Path,
               seed: int, items: Path | None = None) -> list[TestResult]:
    """The tests of one task: every case scored against the reference (0 for all when a region is blocked)."""
    all_modules = case_modules(task)
    modules = [m for m in all_modules if not e2e.is_end_to_end(m)]
    blocked = [f"{r}: {extracted.blocked[r]}" for r in task.regions if r in extracted.blocked]
    scored = []
    for module in modules:
        if blocked:
            scored += [(c, CaseResult(0.0, "Not run: " + "; ".join(blocked))) for c in module.CASES]
        else:
            scored += _score_module(module, tree, ref, work, seed)
    shares = case_shares(task.points, [c.points for c, _ in scored])
    tests = [_case_test(task, f"{number}.{k + 1}", c, share, r)
             for k, ((c, r), share) in enumerate(zip(scored, shares))]
    # e2e hook (grading/e2e.py): the band tests of the end-to-end modules (toy run scored in this process, reported
    # CLIP score re-scored from ``items``); the implementation tests above are rescaled to the handout's share
    ctx = {"ref": ref, "tree": tree, "work": work, "seed": seed, "blocked": blocked, "items": items}
    return e2e.band_tests(task, number, tests, [m for m in all_modules if e2e.is_end_to_end(m)], ctx)


def grade_files(hw: Homework, files: dict[str, str], ref: Reference, work: Path,
                items: Path | None = None) -> tuple[list[TestResult], Extracted]:
    """Every task's tests for a submission given as relpath -> text (the trusted part of grading); ``items``: the
    submission's folder of deliverables (result images and eval.json), for the reported-score checks."""
    extracted = extract_submission(hw, files, ref.root)
    tree = workspace.build_tree(hw, work / "tree", extracted.bodies, ref.root, extracted.imports)
    try:
        tests = []
        for k, task in enumerate(hw.tasks, 1):
            if task.cases:
                tests += grade_task(task, k, tree, ref, extracted, work / "runs", ref.seed, items)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return tests, extracted


def graded_points(hw: Homework) -> float:
    """Points the autograder awards (tasks with cases, optional ones included); the rest is graded by hand."""
    return round(sum(t.points for t in hw.tasks if t.cases), 4)


def grade_reference_and_starter(hw: Homework, source: Path, seed: int = 0) -> dict:
    """The release gate's last step: the reference submission must get every autograded point, the raw starter 0.

    ``source`` is a reference tree (this repo, or an unzipped autograder.zip). Returns points per side and the
    total, rounded to 1e-4.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"gate-{hw.id}-") as tmp:
        work = Path(tmp)
        ref = Reference(hw, seed, work / "ref", Path(source))
        # e2e hook (grading/e2e.py): toy bands calibrated on the reference (the grading seed among the seeds, so
        # the reference lands in the full band); the release keeps them in release.json (calibration.measured)
        calibration = e2e.calibrate_toy_bands(hw, tuple(dict.fromkeys((seed, *e2e.DEFAULT_SEEDS))), Path(source),
                                              work / "calibrate", ref.limits)
        e2e.configure(ref, calibration=calibration)
        bodies = workspace.reference_bodies(hw, Path(source))
        starters = {rel: workspace.starter_text(hw, rel, text, Path(source))
                    for rel, text in workspace.region_files(hw, Path(source)).items()}
        points = {}
        for side, chosen in (("reference", bodies), ("starter", {})):
            files = {rel: markers.fill(st, chosen) for rel, st in starters.items()}
            tests, _ = grade_files(hw, files, ref, work / side)
            points[side] = round(sum(t.score for t in tests), 4)
    return {**points, "total": graded_points(hw), "calibration": calibration}
