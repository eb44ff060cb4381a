"""``python -m ddpm_ddim.measure``: a tiny CPU run writes the table and JSON; bad input exits with code 2."""

import json

import pytest
from click.testing import CliRunner

from ddpm_ddim.measure import main


def test_tiny_cpu_run_prints_the_table_and_the_baseline_spread(tmp_path):
    out = tmp_path / "fd.json"
    args = ["--num_samples", "4", "--ddpm_steps", "2", "--ddim_steps", "2", "--batch_size", "4", "--device", "cpu",
            "--baseline_draws", "3", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and not result.exception, result.output
    for name in ("DDPM-2", "DDIM-2", "data-vs-data", "noise-vs-data", "over 3 independent draws"):
        assert name in result.output, name
    saved = json.loads(out.read_text())
    draws, rows = saved["data_vs_data_draws"], saved["rows"]
    assert len(draws) == 3 and len(set(draws)) == 3  # independent draws differ
    assert draws[0] == pytest.approx(rows["data-vs-data"]["fd"])  # draw 0 is the bar's baseline
    assert rows["DDPM-2"]["ratio"] == pytest.approx(rows["DDPM-2"]["fd"] / rows["data-vs-data"]["fd"])


@pytest.mark.parametrize("args", [["--num_samples", "1"], ["--baseline_draws", "0"], ["--ddim_steps", "-1"],
                                  ["--model", "no-such-model", "--num_samples", "2"], ["--device", "nope"]])
def test_bad_input_exits_with_code_2(args):
    result = CliRunner().invoke(main, ["--device", "cpu", *args])  # a later --device wins
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_spread_offset_0_is_the_reports_data_vs_data_and_first_skips_it():
    from common.toy.fid import data_vs_data_spread, face_fd_report, noise_images

    fds, _ = face_fd_report({"noise": noise_images(4)}, n=4)
    spread = data_vs_data_spread(4, 3)
    assert spread[0] == pytest.approx(fds["data-vs-data"])
    assert data_vs_data_spread(4, 3, first=1) == pytest.approx(spread[1:])
    assert data_vs_data_spread(4, 1, first=1) == []


@pytest.mark.parametrize(("args", "expected"), [([], 16), (["--batch_size", "3"], 3)])
def test_cpu_default_batch_is_small(monkeypatch, args, expected):
    import ddpm_ddim.measure as measure

    calls = []
    monkeypatch.setattr(measure, "measure_fd", lambda *a, **k: calls.append(a[4]) or {})
    monkeypatch.setattr(measure, "format_fd_table", lambda result: "table")
    result = CliRunner().invoke(main, ["--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    assert calls == [expected]
