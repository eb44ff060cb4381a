"""grading.grade end to end on umich-hw5-gan: reference 100 %, starter 0, a catalogued mistake loses exactly its
points with feedback naming it, and attacks inside TODO regions score 0 on their task only."""

import importlib
import json

import pytest

from grading import markers, workspace
from grading.batch import grade_submission, total_score
from grading.grade import Reference, grade_files
from grading.homeworks import get_homework
from grading.sandbox import Limits
from grading.submission import load_submissions

HW = get_homework("umich-hw5-gan")
CODE_TASKS = [t for t in HW.tasks if t.cases]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return Reference(HW, 20261201, tmp_path_factory.mktemp("ref"), limits=Limits(wall_s=90))


def _files(bodies: dict[str, str]) -> dict[str, str]:
    """What a student hands in: every region file's starter with ``bodies`` written into its TODO regions."""
    return {rel: markers.fill(workspace.starter_text(HW, rel, text), bodies)
            for rel, text in workspace.region_files(HW).items()}


def _by_task(tests) -> dict[str, tuple[float, float]]:
    out = {}
    for t in tests:
        got, most = out.get(t.tags[0], (0.0, 0.0))
        out[t.tags[0]] = (got + t.score, most + t.max_score)
    return out


@pytest.fixture(scope="module")
def reference_bodies():
    return workspace.reference_bodies(HW)


def test_reference_gets_full_marks_and_starter_zero(ref, reference_bodies, tmp_path):
    full, _ = grade_files(HW, _files(reference_bodies), ref, tmp_path / "a")
    assert {k: v[0] == pytest.approx(v[1]) for k, v in _by_task(full).items()} == {t.id: True for t in CODE_TASKS}
    assert sum(t.max_score for t in full) == pytest.approx(sum(t.points for t in CODE_TASKS))
    none, extracted = grade_files(HW, _files({}), ref, tmp_path / "b")
    assert sum(t.score for t in none) == 0 and not extracted.flags
    assert all("NotImplementedError" in t.output for t in none)


def test_a_catalogued_mistake_loses_exactly_its_cases_and_is_named(ref, reference_bodies, tmp_path):
    module = importlib.import_module("grading.cases.gan_r1")
    mistake = module.MISTAKES[0]
    tests, _ = grade_files(HW, _files({**reference_bodies, mistake.region: mistake.body}), ref, tmp_path)
    lost = {t.name for t in tests if t.score < t.max_score}
    titles = {c.title or c.id for c in module.CASES if c.id in mistake.caught_by}
    assert {name.split(" · ", 1)[1] for name in lost} == titles
    assert all("known mistake" in t.output for t in tests if t.name in lost)


ATTACKS = {
    "gan-g-loss": "    while True:\n        pass\n",  # infinite loop: the wall clock kills the worker
    "gan-r1": "    torch.os._exit(0)\n",  # leaves the worker at once, exit code 0
}


def test_attacks_in_regions_score_zero_on_their_task_only(reference_bodies, tmp_path):
    ref = Reference(HW, 7, tmp_path / "ref", limits=Limits(wall_s=25))
    tests, _ = grade_files(HW, _files({**reference_bodies, **ATTACKS}), ref, tmp_path / "g")
    per_task = _by_task(tests)
    assert per_task["task1-loss"][0] == 0 and per_task["task3-r1"][0] == 0
    assert per_task["task4-cutout"][0] == pytest.approx(per_task["task4-cutout"][1])  # honest task untouched


def test_banned_constructs_are_not_run_and_reported(ref, reference_bodies, tmp_path):
    sneaky = {"gan-g-loss": "    import subprocess\n    return subprocess.run(['true'])\n"}
    tests, extracted = grade_files(HW, _files({**reference_bodies, **sneaky}), ref, tmp_path)
    loss = [t for t in tests if t.tags[0] == "task1-loss"]
    assert sum(t.score for t in loss) == 0 and all(t.output.startswith("Not run") for t in loss)
    assert any("gan-g-loss" in f for f in extracted.flags)


def test_results_json_is_written_for_a_broken_zip(ref, tmp_path):
    bad = tmp_path / "Kim Minji_2026001.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    (sub,) = load_submissions([bad], tmp_path / "subs", zip_name=HW.zip_name)
    res = grade_submission(HW, sub, ref, tmp_path / "out")
    assert res["score"] == 0 and json.loads((tmp_path / "out" / "results.json").read_text())["tests"]


def test_missing_items_cost_ten_percent_each():
    from grading.results import TestResult

    kaist = get_homework("kaist-a4")  # "Your score will be deducted by 10% for each missing item."
    tests = [TestResult("a", score=8, max_score=8), TestResult("b", score=2, max_score=8)]
    assert total_score(tests, kaist, 0) == 10 and total_score(tests, kaist, 2) == pytest.approx(8.0)
    assert total_score(tests, kaist, 20) == 0


@pytest.mark.parametrize("points,weights", [(100 / 14, [1.0] * 7), (100 / 14, [2.0, 1.0, 1.0]), (100 / 3, [1.0] * 9),
                                            (5.0, [0.3, 0.3, 0.4]), (7.0, [])])
def test_case_shares_add_up_to_the_task_points_and_never_more(points, weights):
    from grading.grade import case_shares

    shares = case_shares(points, weights)
    assert len(shares) == len(weights)
    if weights:
        assert round(sum(shares), 6) == round(points, 6)
        # each share is the exact split up to the rounding of 1e-6 (the last one absorbs the remainder)
        for share, w in zip(shares, weights):
            assert abs(share - points * w / sum(weights)) <= 1e-6 * len(weights)
    # summing per-test rounded shares, as the gate does, never lands above the homework's rounded points
    assert round(sum(shares) * 6, 4) <= round(points * 6, 4) + 1e-9
