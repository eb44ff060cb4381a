"""Scoring a worker's tensors against the reference, reading its files defensively, and writing results.json."""

import json
import math
import os

import pytest
import torch
from safetensors.torch import save_file

from grading.case import Case
from grading.compare import read_outputs, score_case, tensor_error
from grading.results import TestResult, error_results, md_code, results_payload, write_results


def _case(**kw) -> Case:
    return Case("c/1", 1.0, lambda seed: {}, **kw)


EXPECTED = {"x0_hat": torch.linspace(-1, 1, 12).reshape(3, 4), "mask": torch.tensor([True, False])}


def _got(**changes):
    return {**{k: v.clone() for k, v in EXPECTED.items()}, **changes}


def test_identical_outputs_get_full_credit():
    res = score_case(_case(), EXPECTED, _got(), "ok")
    assert res.fraction == 1.0 and res.max_rel_err == 0.0


@pytest.mark.parametrize("scale, fraction", [(1e-6, 1.0), (5e-5, 1.0), (1e-3, 0.5), (0.5, 0.0)])
def test_relative_error_maps_to_partial_credit(scale, fraction):
    x = EXPECTED["x0_hat"]
    res = score_case(_case(rtol=0.0, atol=0.0), EXPECTED, _got(x0_hat=x + scale * x.abs().max()), "ok")
    assert res.fraction == fraction and math.isclose(res.max_rel_err, scale, rel_tol=0.1)
    if fraction < 1.0:
        assert "x0_hat" in res.message and "relative error" in res.message


def test_isclose_within_rtol_atol_is_full_credit():
    x = EXPECTED["x0_hat"]
    res = score_case(_case(rtol=1e-2, atol=1e-2), EXPECTED, _got(x0_hat=x * 1.005), "ok")
    assert res.fraction == 1.0


@pytest.mark.parametrize("got, words", [
    (_got(x0_hat=EXPECTED["x0_hat"].double()), "dtype"),
    (_got(x0_hat=EXPECTED["x0_hat"].reshape(4, 3)), "shape"),
    (_got(x0_hat=torch.full((3, 4), float("nan"))), "NaN/inf"),
    (_got(mask=torch.tensor([True, True])), "entries differ"),
    ({"x0_hat": EXPECTED["x0_hat"]}, "missing ['mask']"),
    (_got(extra=torch.ones(1)), "unexpected ['extra']"),
])
def test_mismatches_score_zero_and_name_the_tensor(got, words):
    res = score_case(_case(feedback="Check Formula 9."), EXPECTED, got, "ok")
    assert res.fraction == 0.0 and words in res.message


def test_error_status_and_missing_outputs_score_zero():
    assert score_case(_case(), EXPECTED, None, "ValueError: boom").message == "Error: ValueError: boom"
    assert score_case(_case(), EXPECTED, None, "ok").fraction == 0.0


def test_non_finite_reference_entries_must_match():
    e = torch.tensor([1.0, float("inf"), float("nan")])
    assert tensor_error(e, e.clone(), 1e-4, 1e-6) == (0.0, True, "")
    assert tensor_error(e, torch.tensor([1.0, -math.inf, math.nan]), 1e-4, 1e-6)[2]
    assert tensor_error(e, torch.tensor([1.0, math.inf, 0.0]), 1e-4, 1e-6)[2]


def _write_outputs(out, tensors, cases, worker=None):
    save_file(tensors, str(out / "outputs.safetensors"))
    status = {"worker": worker or {"ok": True}, "cases": cases}
    (out / "status.json").write_text(json.dumps(status))


def test_read_outputs_splits_keys_on_the_last_slash(tmp_path):
    _write_outputs(tmp_path, {"sds/b3/grad": torch.ones(2), "other/x": torch.ones(1)},
                   {"sds/b3": {"ok": True}, "bad": {"ok": False, "error": "ZeroDivisionError"}})
    files = read_outputs(tmp_path, ["sds/b3", "bad", "never"], 10)
    assert list(files.outputs) == ["sds/b3"] and torch.equal(files.outputs["sds/b3"]["grad"], torch.ones(2))
    assert files.status == {"sds/b3": "ok", "bad": "ZeroDivisionError"} and files.error == "" and not files.stray


def test_read_outputs_refuses_links_fifos_oversize_and_garbage(tmp_path):
    cases = {"a": {"ok": True}}
    _write_outputs(tmp_path, {"a/x": torch.ones(1000)}, cases)
    assert "over the" in read_outputs(tmp_path, ["a"], 1e-3).status["a"]
    (tmp_path / "outputs.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    assert "malformed" in read_outputs(tmp_path, ["a"], 10).status["a"]
    (tmp_path / "outputs.safetensors").unlink()
    os.symlink("/etc/passwd", tmp_path / "outputs.safetensors")
    assert "not a regular file" in read_outputs(tmp_path, ["a"], 10).status["a"]
    (tmp_path / "outputs.safetensors").unlink()
    (tmp_path / "elsewhere").write_bytes(b"")
    os.link(tmp_path / "elsewhere", tmp_path / "outputs.safetensors")
    assert "not a regular file" in read_outputs(tmp_path, ["a"], 10).status["a"]
    (tmp_path / "outputs.safetensors").unlink()
    os.mkfifo(tmp_path / "outputs.safetensors")  # opening it would block the grader forever
    assert "not a regular file" in read_outputs(tmp_path, ["a"], 10).status["a"]
    (tmp_path / "status.json").write_text("[1, 2")
    files = read_outputs(tmp_path, ["a"], 10)
    assert (files.outputs, files.status, files.error) == ({}, {}, "status.json is malformed (JSONDecodeError)")
    (tmp_path / "status.json").write_text(json.dumps({"worker": {"ok": False, "error": "import failed"}}))
    assert read_outputs(tmp_path, ["a"], 10).error == "import failed"


def test_results_json_has_explicit_score_and_gradescope_fields(tmp_path):
    tests = [TestResult("SDS · grad", "1.1", 2.5, 5.0, output="half", tags=("sds",)),
             TestResult("SDS · public", "1.2", 5.0, 5.0, visibility="visible")]
    payload = write_results(tmp_path / "results.json", tests, extra_data={"flags": []}, output="notes",
                            execution_time=3.14159, score=6.0,
                            leaderboard=[{"name": "toy CLIP", "value": 0.31, "order": "desc"}])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data == payload and data["score"] == 6.0 and data["output_format"] == "md"
    assert data["stdout_visibility"] == "hidden" and data["execution_time"] == 3.14
    assert [t["status"] for t in data["tests"]] == ["failed", "passed"]
    assert data["tests"][0]["visibility"] == "after_published" and data["tests"][0]["number"] == "1.1"
    assert data["leaderboard"][0]["value"] == 0.31
    assert results_payload(tests)["score"] == 7.5
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_results_refuse_nan_and_bad_fields(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        TestResult("t", score=math.nan, max_score=1.0)
    with pytest.raises(ValueError, match="visibility"):
        TestResult("t", visibility="secret")
    with pytest.raises(ValueError, match="finite"):
        write_results(tmp_path / "r.json", [], score=math.inf)
    with pytest.raises(ValueError):
        write_results(tmp_path / "r.json", [], extra_data={"x": math.nan})
    assert not list(tmp_path.iterdir())


def test_error_results_is_one_visible_zero_test(tmp_path):
    tests = error_results("Autograder error: boom", detail="Traceback ```x```")
    data = write_results(tmp_path / "results.json", tests)
    assert data["score"] == 0 and data["tests"][0]["name"] == "Autograder error"
    assert data["tests"][0]["visibility"] == "visible" and "````" in data["tests"][0]["output"]
    assert md_code("a") == "```\na\n```"
