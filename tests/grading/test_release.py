"""grading.release / tree / gate: every homework released from this checkout through the full gate, a byte-identical
second release, the source transformations on small texts, and one-line errors for bad input."""

import ast
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from grading import gate, markers, release, tree
from grading.cli import main
from grading.homeworks import HOMEWORKS
from grading.spec import Homework, Item, Task

ROOT = Path(__file__).resolve().parents[2]

SOURCE = '''"""Module."""

from __future__ import annotations

import math
import os

import torch
from torch import nn, optim

from pkg.helpers import exported  # re-export, never read here


def f(x):
    """Doc."""
    scale = math.sqrt(2)
    # TODO: y = scale * x with torch
    # BEGIN SOLUTION f-scale
    y = torch.mul(x, scale)
    # END SOLUTION
    return y + os.sep.count("/")


def g(x):
    # TODO: the other homework's part
    # BEGIN SOLUTION g-other
    return nn.Identity()(x) + optim.SGD
    # END SOLUTION
'''


# ---------------------------------------------------------------- transformations (pure, fast)


def test_strip_file_stubs_tasks_and_marks_the_others_not_part():
    s = tree.strip_file(SOURCE, "pkg/mod.py", {"f-scale"}, "hw-x")
    assert s.task_ids == ("f-scale",)
    assert "# TODO: the other homework's part (not part of hw-x)" in s.starter
    assert 'raise NotImplementedError("TODO g-other: the other homework\'s part (not part of hw-x)")' in s.starter
    assert "torch.mul" not in s.starter and "nn.Identity" not in s.starter
    assert gate.stub_raises(s.starter, "f-scale") and gate.stub_raises(s.starter, "g-other")
    # the graded form keeps the task's body, stubs the other homework's region, keeps SOLUTION markers
    assert "torch.mul(x, scale)" in s.graded and "nn.Identity" not in s.graded
    assert [r.id for r in markers.find_regions(s.graded, "pkg/mod.py")] == ["f-scale", "g-other"]
    gate.check_round_trip(s)


def test_lint_clean_drops_only_imports_the_stub_left_unused_and_silences_handed_over_locals():
    starter = tree.strip_file(SOURCE, "pkg/mod.py", {"f-scale"}, "hw-x").starter
    ast.parse(starter)
    assert "import torch\n" not in starter and "from torch import" not in starter  # read only by the regions
    assert "import math\n" in starter and "import os\n" in starter  # still read outside the regions
    assert "from pkg.helpers import exported" in starter  # unused already in the reference: a re-export, kept
    assert "from __future__ import annotations" in starter
    assert "scale = math.sqrt(2)  # noqa: F841" in starter  # handed to the student, read only by the region
    assert "\n\n\n\nfrom pkg" not in starter  # an emptied import group leaves one blank line


def test_remove_unused_imports_rewrites_a_partly_used_from_import():
    original = "from a import b, c, d\n\n\ndef f():\n    return b(c(d))\n"
    stubbed = "from a import b, c, d\n\n\ndef f():\n    return c(1)\n"
    assert tree.remove_unused_imports(original, stubbed).splitlines()[0] == "from a import c"


def test_stub_function_keeps_signature_and_docstring():
    text = 'def helper(x):\n    """Doc."""\n    y = x * 2\n    return y\n\n\nOTHER = 1\n'
    out = tree.stub_function(text, "common/h.py", "helper", "common.h.helper is not part of hw")
    assert out == ('def helper(x):\n    """Doc."""\n    raise NotImplementedError("common.h.helper is not part of hw")'
                   '\n\n\nOTHER = 1\n')
    with pytest.raises(ValueError, match="no function 'missing'"):
        tree.stub_function(text, "common/h.py", "missing", "m")


def test_student_cli_drops_commands_whose_modules_are_not_shipped():
    text = ("import click\n\n\n@click.group()\ndef main():\n    pass\n\n\n"
            "from grading.check import check  # noqa: E402\n\nmain.add_command(check)\n\n"
            "from grading.release import release  # noqa: E402\n\nmain.add_command(release)\n")
    out = tree.student_cli(text, {"grading/check.py"})
    assert "main.add_command(check)" in out and "release" not in out
    ast.parse(out)


def test_public_test_files_bring_their_conftest_and_helpers(tmp_path):
    (tmp_path / "tests/pkg").mkdir(parents=True)
    (tmp_path / "tests/pkg/conftest.py").write_text("")
    (tmp_path / "tests/pkg/helpers.py").write_text("X = 1\n")
    (tmp_path / "tests/pkg/test_a.py").write_text("from helpers import X\n\n\ndef test_a():\n    assert X\n")
    (tmp_path / "tests/pkg/test_b.py").write_text("def test_b():\n    pass\n")
    got = tree.public_test_files(tmp_path, ["tests/pkg/test_a.py::test_a"])
    assert got == ["tests/pkg/conftest.py", "tests/pkg/helpers.py", "tests/pkg/test_a.py"]
    with pytest.raises(ValueError, match="not a file under tests/"):
        tree.public_test_files(tmp_path, ["tests/pkg/test_missing.py"])


def test_trim_pyproject_and_template_fill():
    text = (ROOT / "pyproject.toml").read_text()
    out = tree.trim_pyproject(text, ["common", "gan", "grading"])
    assert 'include = ["common*", "gan*", "grading*"]' in out and out.count("\n") == text.count("\n")
    assert tree.fill("a @@x@@ b", x=1) == "a 1 b"
    with pytest.raises(KeyError, match="y"):
        tree.fill("@@y@@")


def test_gate_checks_are_one_line_errors():
    with pytest.raises(gate.GateError, match=r"\(b\): 1 public test\(s\) pass on the raw starter: t::a"):
        gate.check_starter_tests({"t::a": "passed", "t::b": "failed"})
    with pytest.raises(gate.GateError, match=r"\(b\): public tests cannot be collected"):
        gate.check_starter_tests({"tests.x": "uncollectable"})
    with pytest.raises(gate.GateError, match=r"\(c\): the reference grafted into the starter fails t::b"):
        gate.check_graft_tests({"t::a": "passed", "t::b": "failed"}, {"t::a": "failed", "t::b": "failed"}, True)
    with pytest.raises(gate.GateError, match=r"\(c\): t::a passes on the reference but did not fail"):
        gate.check_graft_tests({"t::a": "passed"}, {"t::a": "skipped"}, True)
    with pytest.raises(gate.GateError, match=r"\(b\): public test t.py::c is not collected"):
        gate.check_collected({"t.py::a[1]": "failed"}, ("t.py::a", "t.py::c"), "b")
    with pytest.raises(gate.GateError, match=r"\(b\): pytest in the tree runs t.py::z, which is not a public test"):
        gate.check_collected({"t.py::a[1]": "failed", "t.py::z": "failed"}, ("t.py::a",), "b")
    run = gate.TreeRun(((0, "ok"), (2, "Error: boom")), {}, {})
    with pytest.raises(gate.GateError, match=r"\(d\): python -m b --help exits 2: Error: boom"):
        gate.check_smoke([("a", "--help"), ("b", "--help")], run, Path("/x/starter"))


def test_zip_is_deterministic_with_fixed_times_and_modes():
    files = {"setup.sh": b"#!/bin/sh\n", "b/x.py": b"x = 1\n", "a.safetensors": b"\0" * 10}
    data = release.zip_bytes(files)
    assert data == release.zip_bytes(dict(reversed(list(files.items()))))
    infos = zipfile.ZipFile(__import__("io").BytesIO(data)).infolist()
    assert [i.filename for i in infos] == ["a.safetensors", "b/x.py", "setup.sh"]
    assert {i.date_time for i in infos} == {release.ZIP_DATE}
    assert [i.external_attr >> 16 for i in infos] == [0o100644, 0o100644, 0o100755]


# ---------------------------------------------------------------- bad input: one line, exit 2


def _fake_repo(tmp_path: Path, loss: str) -> Path:
    """A minimal checkout: this repo's grading package, pyproject and .ci/env, a bare common and one package."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "grading", repo / "grading", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".ci").mkdir()
    shutil.copy(ROOT / ".ci/env", repo / ".ci/env")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    for pkg in ("common", "toypkg"):
        (repo / pkg).mkdir()
        (repo / pkg / "__init__.py").write_text("")
    (repo / "toypkg/loss.py").write_text(loss)
    return repo


def _toy_homework() -> Homework:
    task = Task(id="t1", title="Task 1", regions=("f-scale",), points=10.0)
    return Homework(id="toy-hw", title="Toy", handout="none.txt", packages=("toypkg",), tasks=(task,),
                    items=(Item("toypkg/*.py", "code"),), zip_name="{sid}.zip")


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, ["release", *args])
    lines = [s for s in result.output.splitlines() if s.startswith("Error:")]
    return result, lines


def test_bad_inputs_exit_2_with_one_line(tmp_path, monkeypatch):
    result, errors = _invoke(["no-such-hw", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and len(errors) == 1 and "unknown homework 'no-such-hw'" in errors[0]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result, errors = _invoke(["kaist-a4", "--out", str(busy)])
    assert result.exit_code == 2 and "is not empty (pass --force" in errors[0]
    result, errors = _invoke(["kaist-a4", "--out", str(busy), "--force"])
    assert result.exit_code == 2 and "holds files that are not a release (notes.txt)" in errors[0]
    result, errors = _invoke(["kaist-a4", "--out", str(busy / "notes.txt" / "sub")])
    assert result.exit_code == 2 and errors[0].startswith("Error: cannot write to --out")
    assert (busy / "notes.txt").read_text() == "mine"
    # a tree whose markers do not balance
    repo = _fake_repo(tmp_path, SOURCE.replace("    # END SOLUTION\n    return y", "    return y", 1))
    monkeypatch.setitem(HOMEWORKS, "toy-hw", _toy_homework())
    result, errors = _invoke(["toy-hw", "--out", str(tmp_path / "bad"), "--repo", str(repo), "--skip-gate"])
    assert result.exit_code == 2 and len(errors) == 1 and "BEGIN SOLUTION inside the region" in errors[0]
    assert not result.exception or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_skip_gate_release_of_a_toy_tree_is_byte_identical_and_recorded(tmp_path, monkeypatch):
    repo = _fake_repo(tmp_path, SOURCE.replace("from pkg.helpers", "from toypkg.helpers"))
    (repo / "toypkg/helpers.py").write_text("exported = 1\n")
    monkeypatch.setitem(HOMEWORKS, "toy-hw", _toy_homework())
    for out in ("r1", "r2"):
        result, errors = _invoke(["toy-hw", "--out", str(tmp_path / out), "--repo", str(repo), "--skip-gate"])
        assert result.exit_code == 0, result.output
    first, second = _tree_bytes(tmp_path / "r1"), _tree_bytes(tmp_path / "r2")
    assert first == second
    record = json.loads(first["release.json"])
    assert record["gate"]["skipped"] is True and record["regions"]["not_part"] == ["g-other"]
    assert "toypkg/loss.py" in record["starter_sha256"] and "student/.grading/starter/toypkg/loss.py" in first
    result, errors = _invoke(["toy-hw", "--out", str(tmp_path / "r1"), "--repo", str(repo), "--skip-gate", "--force"])
    assert result.exit_code == 0 and _tree_bytes(tmp_path / "r1") == first


def _tree_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- every homework, full gate, this checkout


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Every homework released from this checkout with the full gate (the acceptance test of issue #15 part 3)."""
    base = tmp_path_factory.mktemp("releases")
    out = {}
    for hw_id, hw in HOMEWORKS.items():
        # the ungated copy first: both read the checkout within seconds (others may be editing it meanwhile)
        release.make_release(hw, base / f"{hw_id}-again", skip_gate=True, echo=lambda s: None)
        # gate step (e) grades reference and starter (~1 min per homework on 2 cores): the GAN homework runs it
        # here; the other homeworks' cases are checked against reference, stub and mistakes in test_cases_*.
        record = release.make_release(hw, base / hw_id, echo=lambda s: None, autograder_gate=hw_id == "umich-hw5-gan")
        out[hw_id] = (hw, base / hw_id, record)
    return out


@pytest.mark.parametrize("hw_id", sorted(HOMEWORKS))
def test_release_passes_the_gate_and_ships_no_answers(released, hw_id):
    hw, out, record = released[hw_id]
    assert set(record["gate"]["steps"]) == {"a", "b", "c", "d"} and not record["gate"]["skipped"]
    if hw_id == "umich-hw5-gan":
        auto = record["gate"]["autograder"]
        assert auto["ok"] is True and auto["result"]["reference"] == auto["result"]["total"] > 0
        assert auto["result"]["starter"] == 0
    assert record["regions"]["graded"] == list(hw.region_ids)
    student = _tree_bytes(out / "student")
    assert set(record["starter_sha256"]) == set(student)
    assert all(hashlib.sha256(student[p]).hexdigest() == h for p, h in record["starter_sha256"].items())
    assert not any(p.startswith(("grading/cases", "grading/release", "grading/grade")) for p in student)
    for path in record["regions"]["files"]:
        starter = student[path].decode()
        for region in markers.find_regions((ROOT / path).read_text(), path):
            assert region.body.strip() not in starter, f"{path}: the body of {region.id} ships"
            assert gate.stub_raises(starter, region.id)
        assert student[f".grading/starter/{path}"] == student[path]
    again = out.parent / f"{hw_id}-again"
    assert _tree_bytes(again / "student") == student  # the same checkout releases byte-identical trees
    with zipfile.ZipFile(out / "autograder.zip") as zf, zipfile.ZipFile(again / "autograder.zip") as zg:
        assert [(i.filename, i.CRC) for i in zf.infolist() if i.filename != "release.json"] == [
            (i.filename, i.CRC) for i in zg.infolist() if i.filename != "release.json"]
    conftest = student["tests/conftest.py"].decode()
    assert all(repr(e) in conftest for t in hw.tasks for e in t.public_tests)
    readme = student["README.md"].decode()
    assert "bash .ci/env python -m pytest -q" in readme and all(t.title in readme for t in hw.tasks)
    with zipfile.ZipFile(out / "autograder.zip") as zf:
        names = zf.namelist()
        assert {"setup.sh", "run_autograder", "release.json", "grading/cli.py"} <= set(names)
        assert zf.read("release.json") == (out / "release.json").read_bytes()
        assert "python -m grading run-autograder" in zf.read("run_autograder").decode()
        assert "chmod 700 /autograder/source /autograder/results" in zf.read("setup.sh").decode()
