"""``python -m grading check`` and ``submit`` on tiny fake trees (a one-file homework with a one-line public test)."""

import dataclasses
import os
import zipfile

import pytest
from click.testing import CliRunner

from grading import homeworks, markers
from grading.cli import main
from grading.homeworks.shared import code_item
from grading.spec import Homework, Item, Task

REFERENCE = '''"""A tiny homework."""

import math


def add_one(x):
    """x + 1."""
    # TODO: return x + 1
    # BEGIN SOLUTION add-one
    return x + 1
    # END SOLUTION


def double(x):
    # TODO: y, twice x
    # BEGIN SOLUTION double
    y = 2 * x
    # END SOLUTION
    return y
'''
TESTS = "from toyhw.ops import add_one, double\n\n\ndef test_add():\n    assert add_one(1) == 2\n\n\n" \
        "def test_double():\n    assert double(2) == 4\n"
HW = Homework(
    id="toy-hw", title="A tiny homework", handout="000_0000000000000000.txt", packages=("toyhw",),
    tasks=(Task("t1-add", "Task 1: add one", ("add-one",), 3, public_tests=("tests/test_tiny.py::test_add",)),
           Task("t2-double", "Task 2: double", ("double",), 2, public_tests=("tests/test_tiny.py::test_double",)),
           Task("report", "Report", (), 1)),
    items=(code_item("toyhw"), Item("out/eval.json", "Task 1: eval.json"), Item("report.pdf", "the report"),
           Item("extra/*.png", "optional pictures", required=False)),
    zip_name="{name}_{sid}.zip", zip_root="submission", size_cap_mb=0.05, forbidden_calls=("math.sqrt",))


def fill(starter, rid, body):
    """The starter with region ``rid``'s stub replaced by ``body`` (what a student writes)."""
    lines = starter.splitlines(keepends=True)
    begin = next(k for k, s in enumerate(lines) if s.strip() == f"# BEGIN TODO {rid}")
    end = next(k for k, s in enumerate(lines) if s.strip() == f"# END TODO {rid}")
    return "".join(lines[:begin + 1] + [body] + lines[end:])


def make_tree(root, ops=None, released=True, items=True):
    """A student tree: toyhw/ops.py (``ops``, default: both regions solved), the public test, the items."""
    starter = markers.strip(REFERENCE, "toyhw/ops.py")
    if ops is None and released:
        ops = fill(fill(starter, "add-one", "    return x + 1\n"), "double", "    y = x + x\n")
    elif ops is None:
        ops = REFERENCE
    (root / "toyhw").mkdir(parents=True)
    (root / "toyhw/__init__.py").write_text("")
    (root / "toyhw/ops.py").write_text(ops)
    (root / "tests").mkdir()
    (root / "tests/test_tiny.py").write_text(TESTS)
    if released:
        (root / ".grading/starter/toyhw").mkdir(parents=True)
        (root / ".grading/starter/toyhw/ops.py").write_text(starter)
    if items:
        (root / "out").mkdir()
        (root / "out/eval.json").write_text('{"score": 0.3}')
        (root / "report.pdf").write_bytes(b"%PDF-1.4 tiny")
    return starter


@pytest.fixture(autouse=True)
def toy_homework(monkeypatch):
    monkeypatch.setitem(homeworks.HOMEWORKS, HW.id, HW)


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_check_a_solved_released_tree_passes(tmp_path):
    make_tree(tmp_path)
    result = run("check", "toy-hw", "--path", str(tmp_path))
    assert result.exit_code == 0 and not result.exception, result.output
    out = result.output
    assert "no edits outside the TODO regions, no flagged code" in out
    assert "t1-add" in out and "t2-double" in out and out.count("passed") >= 2
    assert "MISSING" not in out and "No other problems." in out


def test_check_reports_failures_outside_edits_flags_and_missing_items(tmp_path):
    starter = make_tree(tmp_path / "t", released=True, items=False, ops="")
    ops = fill(fill(starter, "add-one", "    return x + 2\n"), "double", "    y = math.sqrt(x) * 0 + 2 * x\n")
    (tmp_path / "t/toyhw/ops.py").write_text(ops.replace('"""x + 1."""', '"""x + 1, edited."""'))
    result = run("check", "toy-hw", "--path", str(tmp_path / "t"))
    out = result.output
    assert result.exit_code == 1, out
    assert "MISSING  out/eval.json" in out and "MISSING  report.pdf" in out
    assert "edited outside the TODO regions" in out and '+    """x + 1, edited."""' in out
    line = ops.splitlines().index("    y = math.sqrt(x) * 0 + 2 * x") + 1
    assert f"toyhw/ops.py:{line} [double] forbidden-call: uses math.sqrt" in out
    assert "--- t1-add: 1 failed" in out and "assert 3 == 2" in out
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln.startswith("  t") and "points" not in ln}
    assert rows["t1-add"] == "failed" and rows["t2-double"] == "passed"


def test_check_in_a_repo_tree_reads_the_reference_as_the_submission(tmp_path):
    make_tree(tmp_path, released=False)
    result = run("check", "toy-hw", "--path", str(tmp_path), "--task", "t2-double")
    assert result.exit_code == 0 and not result.exception, result.output
    assert "Code (repo, 1 files" in result.output and "no edits outside the TODO regions" in result.output
    assert "t1-add" not in result.output.split("Public tests")[1]


def test_check_flags_removed_markers_and_a_stub_left_in_place(tmp_path):
    starter = make_tree(tmp_path)
    (tmp_path / "toyhw/ops.py").write_text(starter.replace("    # END TODO double\n", ""))
    result = run("check", "toy-hw", "--path", str(tmp_path))
    assert result.exit_code == 1
    assert "TODO markers missing or moved for double" in result.output


@pytest.mark.parametrize("args,message", [
    (("check", "no-such-hw"), "unknown homework 'no-such-hw'; choose one of:"),
    (("check", "toy-hw", "--path", "{tmp}/nowhere"), "is not a folder"),
    (("check", "toy-hw", "--path", "{tmp}"), "is not a toy-hw tree (no toyhw/ package)"),
    (("check", "toy-hw", "--path", "{tree}", "--task", "t9"), "toy-hw has no task 't9'"),
    (("submit", "no-such-hw", "--name", "A", "--sid", "1"), "unknown homework"),
    (("submit", "toy-hw", "--name", "A B", "--sid", "12_34", "--path", "{tree}"), "--sid '12_34' must be"),
    (("submit", "toy-hw", "--name", "  ", "--sid", "1", "--path", "{tree}"), "has no letters or digits"),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    make_tree(tmp_path / "tree")
    args = [a.format(tmp=tmp_path, tree=tmp_path / "tree") for a in args]
    result = run(*args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ") and message in result.output


def _entries(path):
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, i.date_time, i.external_attr >> 16) for i in zf.infolist()], \
            {n: zf.read(n) for n in zf.namelist()}


def test_submit_writes_the_handout_zip_deterministically(tmp_path):
    make_tree(tmp_path / "tree")
    first = run("submit", "toy-hw", "--name", "Kim  Min-ji", "--sid", "20261234", "--path", str(tmp_path / "tree"))
    assert first.exit_code == 0 and not first.exception, first.output
    path = tmp_path / "tree/Kim_Min-ji_20261234.zip"
    assert f"wrote {path} (4 files" in first.output and "warning" not in first.output
    entries, data = _entries(path)
    assert [e[0] for e in entries] == ["submission/out/eval.json", "submission/report.pdf",
                                      "submission/toyhw/__init__.py", "submission/toyhw/ops.py"]
    assert {e[1] for e in entries} == {(1980, 1, 1, 0, 0, 0)} and {e[2] for e in entries} == {0o100644}
    assert data["submission/out/eval.json"] == b'{"score": 0.3}'
    with zipfile.ZipFile(path) as zf:  # the grader finds the items again under zip_root
        zf.extractall(tmp_path / "unzipped")
    inner = homeworks.items_root(tmp_path / "unzipped", HW)
    assert inner == tmp_path / "unzipped/submission"
    assert all(any(inner.glob(it.pattern)) for it in HW.items if it.required)
    os.utime(tmp_path / "tree/report.pdf", (1e9, 1e9))  # a different mtime changes nothing
    again = tmp_path / "again.zip"
    result = run("submit", "toy-hw", "--name", "Kim Min-ji", "--sid", "20261234", "--path", str(tmp_path / "tree"),
                 "--out", str(again))
    assert result.exit_code == 0 and again.read_bytes() == path.read_bytes()


def test_submit_warns_about_regions_still_stubbed(tmp_path):
    starter = make_tree(tmp_path, ops="")
    (tmp_path / "toyhw/ops.py").write_text(fill(starter, "double", "    y = 2 * x\n"))
    result = run("submit", "toy-hw", "--name", "A", "--sid", "7", "--path", str(tmp_path))
    assert result.exit_code == 0 and "warning: these TODO regions still raise NotImplementedError: add-one" in \
        result.output


@pytest.mark.parametrize("breakage,message", [
    ("missing", "not submitted: missing required items: report.pdf (the report)"),
    ("link", "report.pdf is a link"),
    ("large", "over the handout's 0.05 MB cap; largest files: out/eval.json"),
])
def test_submit_refuses_missing_links_and_oversize(tmp_path, breakage, message):
    make_tree(tmp_path / "tree")
    report = tmp_path / "tree/report.pdf"
    if breakage == "missing":
        report.unlink()
    elif breakage == "link":
        report.unlink()
        (tmp_path / "elsewhere.pdf").write_bytes(b"%PDF")
        report.symlink_to(tmp_path / "elsewhere.pdf")
    else:
        (tmp_path / "tree/out/eval.json").write_bytes(os.urandom(80_000))  # incompressible
    result = run("submit", "toy-hw", "--name", "A", "--sid", "7", "--path", str(tmp_path / "tree"))
    assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output
    assert not list((tmp_path / "tree").glob("*.zip"))


def test_a_real_spec_with_its_public_tests_swapped_for_a_tiny_one(tmp_path, monkeypatch):
    """kaist-a4's layout and zip name, the public test monkeypatched to the tiny one."""
    real = homeworks.HOMEWORKS["kaist-a4"]
    tasks = tuple(dataclasses.replace(t, public_tests=("tests/test_tiny.py::test_add",)) for t in real.tasks)
    monkeypatch.setitem(homeworks.HOMEWORKS, "kaist-a4", dataclasses.replace(real, tasks=tasks))
    (tmp_path / "toyhw").mkdir()
    (tmp_path / "toyhw/ops.py").write_text(REFERENCE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_tiny.py").write_text(TESTS)
    (tmp_path / "distillation").mkdir()
    (tmp_path / "distillation/__init__.py").write_text("")
    for method in ("sds", "pds"):
        (tmp_path / "outputs" / method).mkdir(parents=True)
        (tmp_path / "outputs" / method / "A_dog.png").write_bytes(b"png")
        (tmp_path / "outputs" / method / "eval.json").write_text("{}")
    (tmp_path / "Kim_Minji_20261234.pdf").write_bytes(b"%PDF")
    result = run("check", "kaist-a4", "--path", str(tmp_path))
    assert result.exit_code == 0 and "MISSING" not in result.output, result.output
    assert "-        outputs/vsd/*.png" in result.output  # the optional task's items
    result = run("submit", "kaist-a4", "--name", "Kim Minji", "--sid", "20261234", "--path", str(tmp_path))
    assert result.exit_code == 0, result.output
    names, _ = _entries(tmp_path / "Kim_Minji_20261234.zip")
    assert [n[0] for n in names] == ["Kim_Minji_20261234.pdf", "distillation/__init__.py", "outputs/pds/A_dog.png",
                                     "outputs/pds/eval.json", "outputs/sds/A_dog.png", "outputs/sds/eval.json"]
