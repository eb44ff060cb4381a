"""``python -m grading grade`` and ``run-autograder``: bad input is one line and exit 2; results.json always exists."""

import json

from click.testing import CliRunner

from grading.cli import main


def _run(args):
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result, lines


def test_grade_refuses_bad_input_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result, lines = _run(["grade", "no-such-hw", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no-such-hw" in result.output
    result, lines = _run(["grade", "umich-hw5-gan", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and lines == [f"Error: no submissions found in {empty}"], lines
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result, lines = _run(["grade", "umich-hw5-gan", str(empty), "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: cannot write to --out"), lines
    result, _ = _run(["grade", "umich-hw5-gan", str(empty), "--out", str(tmp_path / "o"), "--jobs", "0"])
    assert result.exit_code == 2


def test_run_autograder_writes_results_even_without_a_release(tmp_path):
    sub, results, source = tmp_path / "submission", tmp_path / "results", tmp_path / "source"
    for folder in (sub, source):
        folder.mkdir()
    result, _ = _run(["run-autograder", "--submission", str(sub), "--results", str(results), "--source", str(source)])
    assert result.exit_code == 0, result.output
    written = json.loads((results / "results.json").read_text())
    assert written["score"] == 0 and written["tests"][0]["name"] == "Autograder error"
    assert written["tests"][0]["visibility"] == "visible"
