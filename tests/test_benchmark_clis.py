"""The benchmark scripts are click commands: --help works and lists their options; a tiny CPU smoke run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

OPTIONS = {
    "bench_distillation": ["--methods", "--batches", "--precisions", "--steps", "--warmup", "--pixel", "--device",
                           "--json", "--tiny", "Examples"],
    "bench_ddpm_dps": ["--arch", "--quick", "--samplers", "--precisions", "--modes", "--num_images", "--device",
                       "--json", "celebahq", "Examples"],
    "bench_sync": ["--quick", "--steps", "Examples"],
    "bench_gan": ["--device", "--warmup", "--steps", "--resolutions", "Examples"],
    "bench_grading": ["--homework", "--jobs", "--submissions", "--json", "umich-hw5-gan", "Examples"],
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


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_help_lists_options(name: str) -> None:
    result = CliRunner().invoke(load(name).main, ["--help"])
    assert result.exit_code == 0, result.output
    assert not result.exception
    for option in OPTIONS[name]:
        assert option in result.output, (name, option)
    assert "[default:" in result.output


@pytest.mark.parametrize("name,args", [("bench_sync", ["--steps", "0"]), ("bench_gan", ["--warmup", "-1"]),
                                       ("bench_ddpm_dps", ["--arch", "nope"]), ("bench_grading", ["--jobs", "0"])])
def test_bad_values_are_usage_errors(name: str, args: list[str]) -> None:
    result = CliRunner().invoke(load(name).main, args)
    assert result.exit_code == 2


def test_distillation_tiny_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = ["--tiny", "--device", "cpu", "--methods", "sds", "--batches", "1", "--precisions", "fp32", "--steps", "1",
            "--warmup", "0", "--json", str(out)]
    result = CliRunner().invoke(load("bench_distillation").main, args)
    assert result.exit_code == 0, result.output
    assert not result.exception
    assert "| sds | 1 | fp32 |" in result.output
    assert out.exists()
