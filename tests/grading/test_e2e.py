"""End-to-end toy cases, toy-band calibration and reported-score checks (grading/e2e.py, grading/e2e_scores.py).

The SDS end-to-end case runs here in-process on the reference and blank (no update) at seed 0; the bands
calibrated from them put the reference in the top band and the blank in the lowest. One grading run through the
sandbox grades the catalogued mistake "SDS with the difference reversed": it lands in the lowest band, and a
tampered eval.json fails "Reported CLIP score reproduces" with both numbers. The reported-score checks (PNG
re-score, malformed eval.json) and the points (split, gate, zeroing) run without a worker.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from common.eval import clip_score_folder, write_eval_json
from common.images import save_image
from grading import e2e, markers, workspace
from grading.cases import e2e_distillation as cases
from grading.e2e_scores import REAL_CLIP, Reported, _clip, reported_check, reproduce_check, score_images
from grading.grade import Reference, grade_files
from grading.homeworks import get_homework
from grading.results import TestResult
from grading.sandbox import Limits
from grading.spec import Band, Bands

E2E = "grading.cases.e2e_distillation"
NYCU = get_homework("nycu-lab3")
SDS_TASK = NYCU.task("task1-sds")
CASE = next(c for c in cases.CASES if c.id == "e2e/sds")
CAPTIONS = cases.CAPTIONS["sds"]


@pytest.fixture(scope="module")
def runs():
    """In-process SDS end-to-end images at seed 0: the reference and the blank method (0 steps)."""
    from common.registry import load_sd

    threads, steps = torch.get_num_threads(), cases.SETTINGS["sds"][1]
    pipe = load_sd("toy-sd", torch.device("cpu"), torch.float32)  # SDS leaves it as it is: one load for both
    try:
        return {"reference": cases.run_toy(0, "sds", steps, pipe)["images"],
                "blank": cases.run_toy(0, "sds", 0, pipe)["images"]}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scores(runs):
    return {k: score_images(v, CAPTIONS) for k, v in runs.items()}


@pytest.fixture(scope="module")
def calibration(scores):
    return {SDS_TASK.id: e2e.calibration_for(SDS_TASK, CASE, (0,), [scores["reference"]], [scores["blank"]])}


def test_case_captions_are_the_first_toy_evaluation_captions():
    from distillation.evaluate import toy_items

    for method, captions in cases.CAPTIONS.items():
        assert tuple(toy_items(method, cases.N_TOY)[1][:len(captions)]) == captions
    assert {c.end_to_end.role for c in cases.CASES} == {"graded", "baseline"}


def test_the_wide_image_case_belongs_to_kaist_a5_task_1():
    from grading.cases import e2e_sync

    a5 = get_homework("kaist-a5")
    task = a5.task("task1-wide")
    hw = replace(a5, tasks=(replace(task, cases=(*task.cases, "grading.cases.e2e_sync")),))
    assert {t: (c.id, b.id) for t, (_, c, b) in e2e.banded_cases(hw).items()} == {
        "task1-wide": ("e2e/wide", "e2e/wide-blank")}
    assert e2e.task_cases(a5.task("task2-ambiguous"), e2e_sync) == []


def test_wide_crops_are_rescored_with_the_wide_images_naming(runs, tmp_path):
    folder = tmp_path / "wide_images"
    prompt = "a red circle on a blue background"
    for k, img in enumerate(runs["reference"][:3]):
        save_image(img, folder / f"{prompt.replace(' ', '_')}_{40 * k}.png")
    save_image(torch.cat(list(runs["reference"][:3]), dim=2), folder / f"{prompt.replace(' ', '_')}.png")  # panorama
    result = clip_score_folder(folder, _clip("toy-clip"), app="wide_images") | {"clip_model": "toy-clip"}
    write_eval_json(folder, result)
    assert reported_check("wide_images", tmp_path, None, app="wide_images").ok is True
    write_eval_json(folder, result | {"clip_model": "my-clip"})
    assert reported_check("wide_images", tmp_path, None, app="wide_images").ok is False


def test_band_edges_follow_the_calibration_rule():
    assert e2e.band_edges((1.0, 0.5), mu=0.9, sigma=0.03, baseline=0.2) == (0.84, 0.55)
    three = e2e.band_edges((1.0, 0.75, 0.5), mu=0.9, sigma=0.001, baseline=0.1)  # sigma floored at 0.005
    assert three == (0.89, 0.7, 0.5)
    with pytest.raises(ValueError, match="not separated"):
        e2e.band_edges((1.0, 0.5), mu=0.3, sigma=0.1, baseline=0.2)
    bands = Bands("toy-clip", (Band(0.84, 1.0), Band(0.55, 0.5)))
    assert [e2e.band_label(bands, s) for s in (0.9, 0.6, 0.1)] == ["[0.84, inf)", "[0.55, 0.84)", "(-inf, 0.55)"]


def test_reference_top_band_blank_lowest(scores, calibration):
    rec = calibration[SDS_TASK.id]
    bands = Bands("toy-clip", tuple(Band(b["lower"], b["fraction"]) for b in rec["bands"]))
    assert scores["reference"].score > 0.6 and scores["reference"].judge >= 0.5
    assert bands.fraction(scores["reference"].score) == 1.0
    assert bands.fraction(scores["blank"].score) == 0.0
    assert 0 < rec["reproduce_tolerance"] < 1 and rec["case"] == CASE.id


def _submit(folder, images, captions, score_shift: float = 0.0):
    """Save images as the student's evaluation would and write its toy eval.json (optionally misreported)."""
    folder.mkdir(parents=True, exist_ok=True)
    for img, caption in zip(images, captions):
        save_image(img, folder / f"{caption.replace(' ', '_')}.png")
    result = clip_score_folder(folder, _clip("toy-clip"))
    result["toy_judge"] = {"all": 1.0}
    result["score"] += score_shift
    write_eval_json(folder, result)
    return result["score"]


def test_reported_score_reproduces_and_a_mismatch_is_caught(runs, tmp_path):
    reported = _submit(tmp_path / "outputs/sds", runs["reference"], CAPTIONS)
    ok = reported_check("outputs/sds", tmp_path, None)
    assert ok.ok is True and ok.score == pytest.approx(reported) and ok.metric == "toy-clip"
    _submit(tmp_path / "lie/outputs/sds", runs["reference"], CAPTIONS, score_shift=0.02)
    bad = reported_check("outputs/sds", tmp_path / "lie", None)
    assert bad.ok is False and f"{reported:.4f}" in bad.message and f"{reported + 0.02:.4f}" in bad.message


@pytest.mark.parametrize("text", ["{not json", '{"score": NaN}', "[0.3]", '{"score": "0.3"}', '{"x": 1}',
                                  "[" * 100_000 + "]" * 100_000, '{"score": true}'])
def test_a_malformed_eval_json_is_a_failed_check_not_a_crash(runs, tmp_path, text):
    _submit(tmp_path / "outputs/sds", runs["reference"][:1], CAPTIONS[:1])
    (tmp_path / "outputs/sds/eval.json").write_text(text)
    got = reported_check("outputs/sds", tmp_path, None)
    assert got.ok is False and "eval.json" in got.message and "\n" not in got.message


def test_images_that_are_not_8bit_rgb_pngs_fail_the_check(runs, tmp_path):
    folder = tmp_path / "outputs/sds"
    _submit(folder, runs["reference"][:2], CAPTIONS[:2])
    Image.new("RGBA", (64, 64)).save(folder / f"{CAPTIONS[0].replace(' ', '_')}.png")
    got = reported_check("outputs/sds", tmp_path, None)
    assert got.ok is False and "not 8-bit RGB" in got.message
    (folder / f"{CAPTIONS[0].replace(' ', '_')}.png").write_bytes(b"\x89PNG not really")
    assert "not a readable PNG" in reported_check("outputs/sds", tmp_path, None).message


def test_real_clip_scores_are_checked_only_when_asked(runs, tmp_path):
    folder = tmp_path / "outputs/sds"
    _submit(folder, runs["reference"][:1], CAPTIONS[:1])
    data = json.loads((folder / "eval.json").read_text())
    data.pop("toy_judge")
    (folder / "eval.json").write_text(json.dumps(data))  # no toy marker, no config.json: the handouts' real CLIP
    got = reported_check("outputs/sds", tmp_path, None)
    assert got.ok is None and got.metric == REAL_CLIP and "--clip_model" in got.message
    assert reported_check("missing", tmp_path, None).ok is None


def test_reproduce_toy_flags_a_score_the_code_does_not_reach(scores, calibration):
    tol = calibration[SDS_TASK.id]["reproduce_tolerance"]
    honest = Reported(True, "", 0.99, tuple((c.replace(" ", "_"), 0.99) for c in CAPTIONS), "toy-clip")
    assert reproduce_check(CAPTIONS, scores["reference"], honest, tol)[0] is True
    ok, text = reproduce_check(CAPTIONS, scores["blank"], honest, tol)
    assert ok is False and "band points are 0" in text
    assert reproduce_check(CAPTIONS, scores["blank"], honest, None)[0] is None  # uncalibrated: not compared


class _Ref:
    def __init__(self, hw_id, root):
        self.hw, self.root, self.limits = get_homework(hw_id), root, Limits()


@pytest.mark.parametrize("hw_id, impl_max, band_max", [("kaist-a4", 0.0, 10.0), ("nycu-lab3", 10.0, 10.0)])
def test_points_split_gate_and_zeroing_follow_the_handouts(monkeypatch, runs, scores, calibration, tmp_path, hw_id,
                                                           impl_max, band_max):
    hw = get_homework(hw_id)
    task = replace(hw.task("task1-sds"), cases=(E2E,))
    ref = _Ref(hw_id, tmp_path)
    e2e.configure(ref, calibration=calibration)
    monkeypatch.setattr(e2e, "_run_case", lambda *a: (scores["reference"], ""))
    impl = [TestResult("impl a", score=3.0, max_score=task.points / 2, status="failed"),
            TestResult("impl b", score=task.points / 2, max_score=task.points / 2, status="passed")]
    _submit(tmp_path / "sub/outputs/sds", runs["reference"], CAPTIONS)
    ctx = {"ref": ref, "tree": tmp_path, "work": tmp_path, "seed": 0, "blocked": [], "items": tmp_path / "sub"}
    out = e2e.band_tests(task, 1, impl, [cases], ctx)
    band, check = out[2:]
    assert sum(t.max_score for t in out) == pytest.approx(task.points)
    assert sum(t.max_score for t in out[:2]) == pytest.approx(impl_max) and band.max_score == pytest.approx(band_max)
    gate = (3.0 + task.points / 2) / task.points if hw_id == "kaist-a4" else 1.0
    assert band.score == pytest.approx(band_max * gate) and check.status == "passed" and check.max_score == 0
    assert band.name.startswith(f"{task.title} · toy end-to-end CLIP score {scores['reference'].score:.3f} -> band [")
    _submit(tmp_path / "lie/outputs/sds", runs["reference"], CAPTIONS, score_shift=0.01)
    zeroed = e2e.band_tests(task, 1, impl, [cases], {**ctx, "items": tmp_path / "lie"})
    assert zeroed[2].score == 0 and "does not reproduce" in zeroed[2].output and zeroed[3].status == "failed"
    blocked = e2e.band_tests(task, 1, impl, [cases], {**ctx, "blocked": ["sds-loss: missing"]})
    assert blocked[2].score == 0 and "Not run" in blocked[2].output


def test_grading_a_reversed_sds_in_the_sandbox_lands_lowest_and_a_misreport_fails(runs, scores, calibration,
                                                                                  tmp_path):
    from grading.cases.sds import MISTAKES

    reversed_sds = next(m for m in MISTAKES if m.id == "sds-reversed")
    hw = replace(NYCU, tasks=(replace(SDS_TASK, cases=(E2E,)),))
    ref = Reference(hw, 0, tmp_path / "ref", limits=Limits(wall_s=240))
    e2e.configure(ref, calibration=calibration)
    bodies = {**workspace.reference_bodies(hw), "sds-loss": reversed_sds.body}
    files = {rel: markers.fill(workspace.starter_text(hw, rel, text), bodies)
             for rel, text in workspace.region_files(hw).items()}
    reported = _submit(tmp_path / "sub/outputs/sds", runs["reference"], CAPTIONS, score_shift=-0.05)
    tests, _ = grade_files(hw, files, ref, tmp_path / "work", items=tmp_path / "sub")
    band, check = tests
    assert band.name.startswith("Task 1: SDS · toy end-to-end CLIP score ") and band.name.endswith(": 0/20")
    assert "-> band (-inf, " in band.name and band.score == 0 and "cosine per caption" in band.output
    got = float(band.name.split("CLIP score ")[1].split(" ")[0])
    assert got < scores["blank"].score + 0.1  # ascending the loss is no better than doing nothing
    assert check.name == "Task 1: SDS · Reported CLIP score reproduces" and check.status == "failed"
    assert f"{reported:.4f}" in check.output and f"{reported + 0.05:.4f}" in check.output
    assert ref.outputs(E2E).outputs == {}  # the e2e module has no reference outputs to compare with
