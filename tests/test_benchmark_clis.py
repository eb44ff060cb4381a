"""The benchmark scripts are click commands: --help lists their options; bad input (unknown list items, devices,
precisions, no CUDA) is one ``Error:`` line with exit code 2; tiny CPU smoke rows write strict JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

OPTIONS = {
    "bench_distillation": ["--methods", "--batches", "--precisions", "--graphs", "--steps", "--warmup", "--pixel",
                           "--channels_last", "--device", "--json", "--tiny", "Examples"],
    "bench_ddpm_dps": ["--arch", "--quick", "--steps", "--samplers", "--precisions", "--modes", "--graphs",
                       "--num_images", "--dps_images", "--channels_last", "--device", "--json", "celebahq",
                       "Examples"],
    "bench_sync": ["--quick", "--steps", "--modes", "--precisions", "--graphs", "--channels_last", "--device",
                   "--tiny", "--json", "Examples"],
    "bench_gan": ["--device", "--warmup", "--steps", "--resolutions", "--precisions", "--ops", "--json", "Examples"],
    "bench_grading": ["--homework", "--jobs", "--submissions", "--json", "umich-hw5-gan", "Examples"],
    "bench_similarity": ["--homeworks", "--submissions", "--copies", "--noise", "--max-share", "--json", "Examples"],
    "bench_unet_knobs": ["--rows", "--knobs", "--calls", "--profile", "--json", "compile-ro", "Examples"],
    "probe_vsd_parts": ["--batches", "--reps", "--profile", "--device", "--tiny", "fit16", "Examples"],
    "bench_cpu_toy": ["--model", "--random", "--widths", "--threads", "--wait_policies", "--reps", "--steps", "--json",
                      "Examples"],
    "ism_call_model": ["--batches", "--call_ms", "--draws", "--delta_t", "--delta_s", "--inv_steps", "--grid",
                       "--seed", "--json", "Examples"],
}


def load(name: str):
    module_name = f"_bench_cli_test_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def invoke(name: str, args: list[str]):
    return CliRunner().invoke(load(name).main, args)


def assert_one_line_error(result, needle: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one intra-op thread (a busy 2-core CPU makes 2 threads 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_help_lists_options(name: str) -> None:
    result = invoke(name, ["--help"])
    assert result.exit_code == 0, result.output
    assert not result.exception
    for option in OPTIONS[name]:
        assert option in result.output, (name, option)
    assert "[default:" in result.output


@pytest.mark.parametrize("name,args,needle", [
    ("bench_distillation", ["--methods", "sds,bogus"], "'bogus': choose from sds, vsd"),
    ("probe_vsd_parts", ["--batches", "0"], "expected integers >= 1"),
    ("probe_vsd_parts", ["--device", "cpu"], "pass --device cpu --tiny"),
    ("bench_distillation", ["--precisions", "fp8"], "'fp8': choose from auto, fp32"),
    ("bench_distillation", ["--batches", "1,0"], "expected integers >= 1"),
    ("bench_distillation", ["--graphs", "compiled"], "choose from eager, graphs"),
    ("bench_distillation", ["--device", "tpu"], "unknown device 'tpu'"),
    ("bench_ddpm_dps", ["--samplers", "EULER"], "'EULER': choose from DDPM, DDIM, DPS"),
    ("bench_ddpm_dps", ["--modes", "batched,bogus"], "'bogus': choose from batched, single"),
    ("bench_ddpm_dps", ["--precisions", "fp16,fp8"], "'fp8'"),
    ("bench_ddpm_dps", ["--arch", "nope"], "--arch"),
    ("bench_ddpm_dps", ["--arch", "celebahq", "--device", "cpu"], "--device cpu --arch tiny for a smoke run"),
    ("bench_sync", ["--steps", "0"], "--steps"),
    ("bench_sync", ["--modes", "panorama"], "choose from all, chunks, single"),
    ("bench_sync", ["--device", "cpu"], "--device cpu --tiny for a smoke run"),
    ("bench_gan", ["--warmup", "-1"], "--warmup"),
    ("bench_gan", ["--device", "tpu"], "unknown device 'tpu'"),
    ("bench_gan", ["--device", "cpu", "--resolutions", "48"], "48 is not a power of two"),
    ("bench_gan", ["--ops", "triton"], "choose from cuda, ref"),
    ("bench_grading", ["--jobs", "0"], "--jobs"),
    ("bench_grading", ["--timeout", "nan"], "not a finite number"),
    ("bench_similarity", ["--noise", "abc"], "expected comma-separated integers"),
    ("bench_similarity", ["--homeworks", "bogus"], "'bogus': choose from"),
    ("bench_similarity", ["--copies", "150"], "at most half"),
    ("bench_unet_knobs", ["--rows", "sd21:0"], "is not model:batch"),
    ("bench_unet_knobs", ["--rows", "unet:2"], "is not model:batch"),
    ("bench_unet_knobs", ["--knobs", "eager,graphs+fp8"], "unknown knob in 'graphs+fp8'"),
    ("bench_unet_knobs", ["--calls", "0"], "--calls"),
    ("ism_call_model", ["--call_ms", "1:x"], "'1:x' is not rows:ms"),
    ("ism_call_model", ["--call_ms", "1:nan,2:3"], "a finite ms > 0"),
    ("ism_call_model", ["--call_ms", "2:5"], "at least two"),
    ("ism_call_model", ["--call_ms", "1:3,4:5"], "the CFG call of 20 rows is beyond"),
    ("ism_call_model", ["--grid", "ddpm"], "'ddpm' is not one of"),
])
def test_bad_values_are_one_line_errors(name: str, args: list[str], needle: str) -> None:
    assert_one_line_error(invoke(name, args), needle)


@pytest.mark.parametrize("name,args", [("bench_distillation", []), ("bench_ddpm_dps", []), ("bench_sync", []),
                                       ("bench_gan", ["--device", "cuda"])])
def test_without_cuda_the_full_runs_say_so(name: str, args: list[str], monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke(name, args)
    assert_one_line_error(result, "needs a CUDA GPU")
    assert "for a smoke run" in result.output


@pytest.mark.parametrize("name,args,row", [
    ("bench_distillation", ["--tiny", "--methods", "sds", "--batches", "1", "--precisions", "fp32", "--steps", "1",
                            "--warmup", "0"], "| sds | 1 | fp32 | eager |"),
    ("bench_ddpm_dps", ["--arch", "tiny", "--samplers", "DDIM", "--steps", "1", "--modes", "batched",
                        "--num_images", "1"], "DDIM"),
    ("bench_sync", ["--tiny", "--steps", "1", "--modes", "all"], "| all views batched | auto=fp32 | eager |"),
])
def test_tiny_cpu_smoke_rows_write_strict_json(name: str, args: list[str], row: str, tmp_path: Path,
                                               one_thread) -> None:
    out = tmp_path / "rows.json"
    result = invoke(name, [*args, "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert not result.exception
    assert row in result.output and "--graphs graphs/compile need CUDA" in result.output
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert data["device"] == "cpu" and len(data["rows"]) == 1
    assert data["rows"][0]["peak_mib"] is None and data["rows"][0]["graph_stats"] == {}


def test_unet_knobs_without_cuda_says_so(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_one_line_error(invoke("bench_unet_knobs", []), "needs a CUDA GPU and none is available")


def test_ism_call_model_counts_the_grid_and_prices_a_line_in_closed_form(tmp_path: Path) -> None:
    model = load("ism_call_model")
    # t = 100, 500, 980 -> s = 20, 420, 900 -> n = 0, 2, 4 inversion steps (2d-sds grid, delta_s 200)
    rows = model.call_rows(torch.tensor([100, 500, 980]), 80, 200, 5, "2d-sds")
    assert rows == [2, 2, 1, 1, 3, 6]
    # LucidDreamer's grid starts at 0 and ends with a partial step: ceil(s / 200) = 1, 3, 5 steps
    assert model.call_rows(torch.tensor([100, 500, 980]), 80, 200, 5, "luciddreamer") == [3, 2, 2, 1, 1, 3, 6]
    line = model.parse_curve("1:7,20:45")  # 5 + 2 * rows ms
    assert model.price(rows, line, padded=False) == pytest.approx(5 * len(rows) + 2 * sum(rows))
    assert model.price(rows, line, padded=True) == pytest.approx(5 * 6 + 2 * (2 + 2 + 1 + 1 + 3 + 6))  # 3 rows: 3
    assert model.price([5, 10, 20], line, padded=True) == pytest.approx(3 * 5 + 2 * (6 + 10 + 20))  # 5 -> 6 rows
    out = tmp_path / "model.json"
    result = invoke("ism_call_model", ["--draws", "200", "--call_ms", "1:7,20:45", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())["rows"]
    for row in data:  # a line prices every step at 5 ms per call + 2 ms per row
        assert row["ism_exact_ms"] == pytest.approx(5 * row["calls"] + 2 * row["rows"])
        assert row["sds_ms"] == pytest.approx(5 + 4 * row["prompts"])
    assert [row["prompts"] for row in data] == [1, 10] and data[0]["calls"] >= 2
