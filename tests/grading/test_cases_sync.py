"""kaist-a5 case modules: deterministic reference outputs, every catalogued mistake caught by exactly its cases, and a
stubbed task failing all of its own cases and none of the others.

Mistake and stub trees are temp copies of ``synchronization`` with bodies grafted by ``grading.markers.graft``; one
subprocess runs every case of every task module on every tree, the tree first on ``sys.path`` (checked through
``module.__file__``), and saves the outputs with safetensors. (The lead will move this onto the real worker.)
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
from pathlib import Path

import multitree
import pytest
import torch

from grading import markers
from grading.homeworks import kaist_a5

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "synchronization"
TASK_MODULES = {"task1-wide": "grading.cases.sync_wide", "task2-ambiguous": "grading.cases.sync_views",
                "task3-inner-rotate": "grading.cases.sync_inner"}
SEED = 20241115
CHECK = ("synchronization.core", "synchronization.views", "synchronization.windows")  # imported from the tree

def _modules():
    return {task: importlib.import_module(name) for task, name in TASK_MODULES.items()}


def _all_cases():
    return [case for module in _modules().values() for case in module.CASES]


def _all_mistakes():
    return [(task, m) for task, module in _modules().items() for m in module.MISTAKES]


def _region_files() -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if markers.find_regions(path.read_text(), rel):
            out[rel] = path.read_text()
    return out


def _reference_bodies() -> dict[str, str]:
    return {k: v for rel, text in _region_files().items() for k, v in markers.reference_bodies(text, rel).items()}


def _tree(dest: Path, bodies: dict[str, str]) -> Path:
    """A copy of the package with ``bodies`` grafted in (a region not given gets its stub)."""
    shutil.copytree(ROOT / PACKAGE, dest / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for rel, text in _region_files().items():
        grafted = markers.graft(text, rel, bodies)
        compile(grafted, rel, "exec")  # a mistake body must at least parse
        (dest / rel).write_text(grafted)
    return dest


def _rel_error(got: dict, expected: dict, atol: float) -> float:
    """max |got - expected| / (max |expected| + atol) over every tensor; inf on a missing key, shape or a NaN."""
    if set(got) != set(expected):
        return math.inf
    worst = 0.0
    for key, exp in expected.items():
        if got[key].shape != exp.shape or not bool(torch.isfinite(got[key]).all()):
            return math.inf
        if exp.numel():
            worst = max(worst, float((got[key] - exp).abs().max()) / (float(exp.abs().max()) + atol))
    return worst


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, dict[str, dict | str]]:
    """tree name -> case id -> outputs (or an error line), for the reference, every mistake and every stubbed task."""
    base, reference = tmp_path_factory.mktemp("sync_trees"), _reference_bodies()
    trees = {"reference": _tree(base / "reference", reference)}
    for _, mistake in _all_mistakes():
        name = f"mistake-{mistake.id}"
        trees[name] = _tree(base / name, {**reference, mistake.region: mistake.body})
    for task in TASK_MODULES:
        stubbed = set(kaist_a5.HOMEWORK.task(task).regions)
        trees[f"stub-{task}"] = _tree(base / f"stub-{task}", {k: v for k, v in reference.items() if k not in stubbed})
    jobs = [{"name": name, "tree": str(tree), "seeds": [SEED], "modules": list(TASK_MODULES.values()),
             "check": list(CHECK)} for name, tree in trees.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc, runs = multitree.run(jobs, tmp_path_factory.mktemp("sync_outputs"), drop=(PACKAGE,), checked="imported",
                               env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict[str, dict] = {name: {} for name in trees}
    for (name, _), run in runs.items():
        assert run.files_ok, f"{name}: imported from outside the tree: {run.files}"
        for case_id, status in run.status.items():
            results[name][case_id] = run.outputs.get(case_id, {}) if status == "ok" else f"error: {status}"
    return results


def _fails(result: dict | str, expected: dict, case) -> bool:
    return isinstance(result, str) or _rel_error(result, expected, case.atol) > case.partial[0][0]


def test_modules_match_the_spec():
    ids = [c.id for c in _all_cases()]
    assert len(ids) == len(set(ids)), "case ids are unique across the homework's modules"
    for task, module in _modules().items():
        spec = kaist_a5.HOMEWORK.task(task)
        assert sum(c.points for c in module.CASES) == pytest.approx(spec.points), task
        assert 1 <= sum(c.visibility == "visible" for c in module.CASES) <= 2, task
        assert all(c.title and c.feedback and c.visibility in ("visible", "after_published") for c in module.CASES)
        own = {c.id for c in module.CASES}
        for mistake in module.MISTAKES:
            assert mistake.region in spec.regions, (task, mistake.id)
            assert mistake.caught_by and set(mistake.caught_by) <= own, (task, mistake.id)


@pytest.mark.parametrize("case", _all_cases(), ids=lambda c: c.id)
def test_reference_outputs_are_finite_deterministic_and_seeded(case):
    first, again, other = case.run(SEED), case.run(SEED), case.run(SEED + 1)
    assert first and set(first) == set(again)
    for key, value in first.items():
        assert value.dtype == torch.float64 and value.is_contiguous() and torch.isfinite(value).all(), key
        assert torch.equal(value, again[key]), f"{key}: the same seed must give bitwise the same output"
    assert set(first) == set(other), "output names do not depend on the seed"
    assert any(first[k].shape != other[k].shape or not torch.equal(first[k], other[k]) for k in first), \
        "a different seed must give different inputs"


def test_grafted_reference_tree_matches_the_repo(graded):
    for case in _all_cases():
        got = graded["reference"][case.id]
        assert not isinstance(got, str), f"{case.id}: {got}"
        assert _rel_error(got, case.run(SEED), case.atol) == 0.0, case.id


@pytest.mark.parametrize("task,mistake", _all_mistakes(), ids=lambda v: v if isinstance(v, str) else v.id)
def test_mistake_fails_exactly_its_cases(graded, task, mistake):
    reference, got = graded["reference"], graded[f"mistake-{mistake.id}"]
    failing = {c.id for c in _all_cases() if _fails(got[c.id], reference[c.id], c)}
    assert failing == set(mistake.caught_by), (
        f"{mistake.id}: fails {sorted(failing)}, declared {sorted(mistake.caught_by)}")


@pytest.mark.parametrize("task", list(TASK_MODULES))
def test_stubbed_task_fails_all_its_cases_and_no_other(graded, task):
    own = {c.id for c in _modules()[task].CASES}
    reference, got = graded["reference"], graded[f"stub-{task}"]
    for case in _all_cases():
        if case.id in own:
            assert isinstance(got[case.id], str) and "NotImplementedError" in got[case.id], case.id
        else:
            assert not _fails(got[case.id], reference[case.id], case), f"stubbing {task} breaks {case.id}"
