"""umich-hw5-gan autograder cases (grading/cases/gan_*.py): reference determinism, the mistake catalogue, stubs.

Every case runs in ONE subprocess over graded trees built like the grader's (``grading.workspace.build_tree``: the
reference, one tree per catalogued mistake, one per stubbed region), with the tree first on ``sys.path``; the
outputs come back as safetensors and are scored here with ``grading.compare.score_case``.
"""

from __future__ import annotations

import importlib
import math

import multitree
import pytest
import torch

from grading import markers, workspace
from grading.compare import score_case
from grading.homeworks.umich_hw5_gan import HOMEWORK

MODULES = {"grading.cases.gan_losses": "task1-loss", "grading.cases.gan_r1": "task3-r1",
           "grading.cases.gan_cutout": "task4-cutout"}
CASE_PREFIX = {"gan-g-loss": "g-loss/", "gan-d-loss": "d-loss/", "gan-d-real": "d-main/", "gan-r1": "r1/",
               "diffaugment-cutout": "cutout/"}  # region -> the id prefix of the cases that test it
SEEDS = (0, 1)

CASES = {c.id: c for m in MODULES for c in importlib.import_module(m).CASES}
MISTAKES = {k.id: k for m in MODULES for k in importlib.import_module(m).MISTAKES}
# the modules whose files must come from the tree under test (all imported by the cases)
CHECK = ("gan.loss", "gan.augment", "common.diffaugment", *MODULES)

def _load(run: str, result: multitree.Run) -> tuple[dict, dict]:
    return result.checked(run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """'<tree>-<seed>' -> (outputs, status) for the reference (twice), every mistake and every stubbed region."""
    work = tmp_path_factory.mktemp("gan-cases")
    reference = workspace.reference_bodies(HOMEWORK)
    trees = {"reference": (reference, SEEDS), "reference-again": (reference, SEEDS[:1])}
    trees.update({f"mistake-{m.id}": ({**reference, m.region: m.body}, SEEDS) for m in MISTAKES.values()})
    trees.update({f"stub-{r}": ({k: v for k, v in reference.items() if k != r}, SEEDS[:1]) for r in CASE_PREFIX})
    jobs = []
    for name, (bodies, seeds) in trees.items():
        tree = workspace.build_tree(HOMEWORK, work / "trees" / name, bodies) if name != "reference-again" else \
            work / "trees" / "reference"
        jobs.append({"name": name, "tree": str(tree), "seeds": list(seeds), "modules": list(MODULES),
                     "check": list(CHECK)})
    jobs.append(jobs.pop(1))  # the second reference run goes last, after every other tree ran in the process
    proc, results = multitree.run(jobs, work, drop=("gan", "common", "grading"), checked="required", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seconds = {f"{name}-{seed}": max(r.seconds.values()) for (name, seed), r in results.items()}
    assert max(seconds.values()) < 5, seconds  # each case well under a few seconds on one thread
    return {f"{name}-{seed}": _load(f"{name}-{seed}", r) for (name, seed), r in results.items()}


def _failing(runs: dict, tree: str, seed: int) -> set[str]:
    """Ids of the cases that a tree's outputs do not get full credit for, against the reference of that seed."""
    expected, _ = runs[f"reference-{seed}"]
    got, status = runs[f"{tree}-{seed}"]
    return {cid for cid, case in CASES.items()
            if score_case(case, expected[cid], got.get(cid), status.get(cid, "no output")).fraction < 1.0}


def test_catalogue_is_consistent_with_the_spec():
    for module, task_id in MODULES.items():
        mod, task = importlib.import_module(module), HOMEWORK.task(task_id)
        assert math.isclose(sum(c.points for c in mod.CASES), task.points), module
        assert task.cases == (module,), f"{task_id} should name {module}"
        visible = [c for c in mod.CASES if c.visibility == "visible"]
        assert 1 <= len(visible) <= 2 * len(task.regions)
        assert all(c.title and c.feedback and c.visibility in ("visible", "after_published") for c in mod.CASES)
        for mistake in mod.MISTAKES:
            assert mistake.region in task.regions and mistake.feedback
            assert set(mistake.caught_by) <= {c.id for c in mod.CASES}, mistake.id
    assert len(CASES) == sum(len(importlib.import_module(m).CASES) for m in MODULES)  # ids unique
    assert all(any(cid.startswith(p) for p in CASE_PREFIX.values()) for cid in CASES)
    assert set(HOMEWORK.region_ids) == set(CASE_PREFIX)


def test_mistake_bodies_graft_and_parse():
    files = workspace.region_files(HOMEWORK)
    for mistake in MISTAKES.values():
        rel = next(r for r, text in files.items() if mistake.region in markers.reference_bodies(text, r))
        grafted = markers.graft(files[rel], rel, {**markers.reference_bodies(files[rel], rel),
                                                  mistake.region: mistake.body})
        compile(grafted, rel, "exec")


def test_reference_is_finite_deterministic_and_seeded(runs):
    first, status = runs["reference-0"]
    again, status_again = runs["reference-again-0"]
    other, _ = runs["reference-1"]
    assert set(status.values()) == {"ok"} and set(status_again.values()) == {"ok"}, status
    assert set(first) == set(CASES)
    for cid, outputs in first.items():
        assert outputs and all(v.dtype == torch.float64 and torch.isfinite(v).all() for v in outputs.values()), cid
        assert outputs.keys() == again[cid].keys()
        assert all(torch.equal(v, again[cid][k]) for k, v in outputs.items()), f"{cid}: not bitwise reproducible"
        assert any(v.shape != other[cid][k].shape or not torch.equal(v, other[cid][k])
                   for k, v in outputs.items()), f"{cid}: seed 1 gives the same outputs as seed 0"


@pytest.mark.parametrize("mistake_id", sorted(MISTAKES))
def test_mistake_fails_exactly_its_cases(runs, mistake_id):
    mistake = MISTAKES[mistake_id]
    for seed in SEEDS:
        assert _failing(runs, f"mistake-{mistake_id}", seed) == set(mistake.caught_by), f"seed {seed}"


@pytest.mark.parametrize("region", sorted(CASE_PREFIX))
def test_stub_fails_only_its_regions_cases(runs, region):
    expected = {cid for cid in CASES if cid.startswith(CASE_PREFIX[region])}
    assert _failing(runs, f"stub-{region}", 0) == expected
    _, status = runs[f"stub-{region}-0"]
    assert all("NotImplementedError" in status[cid] for cid in expected)


def test_property_verdicts_are_computed_from_raw_outputs(runs):
    """The cutout's property cases return raw tensors only (images, cutouts, gradient); their flags come from
    ``Case.derive`` in this process: 1 on the reference, 0 for "no cutout at all" whatever the worker claimed, 0 for
    swapped input images, and malformed outputs score 0 without crashing the grader."""
    expected, _ = runs["reference-0"]
    derived = {cid: case for cid, case in CASES.items() if case.derive is not None}
    assert {cid for cid in CASES if cid.startswith("cutout/") and "/exact-" not in cid} <= set(derived)
    for cid, case in derived.items():
        raw = expected[cid]
        assert all(v.ndim == 4 for v in raw.values()), cid  # images, cutouts, gradients: no verdicts
        flags = {k: v for k, v in case.derive(raw).items() if v.ndim == 0}
        assert flags and all(float(v) == 1.0 for v in flags.values()), (cid, flags)
        # a region that returns x * 1 and patches torch in the worker: its raw outputs show no box
        uncut = {k: (raw["x"].repeat(v.shape[0] // raw["x"].shape[0], 1, 1, 1) if k.startswith("out") else
                     torch.ones_like(v) if k == "grad" else v) for k, v in raw.items()}
        assert score_case(case, raw, uncut, "ok").fraction == 0.0, cid
        swapped = {**raw, "x": raw["x"] + 1}
        assert score_case(case, raw, swapped, "ok").fraction == 0.0, cid
        for broken in ({k: v for k, v in raw.items() if k != "x"}, {**raw, "x": raw["x"][:1]},
                       {**raw, "x": raw["x"].float()}, {k: v[..., :-1] for k, v in raw.items()}):
            result = score_case(case, raw, broken, "ok")
            assert result.fraction == 0.0 and result.message, cid
