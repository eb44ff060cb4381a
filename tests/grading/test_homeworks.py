"""The homework specs against the handouts and the repository: regions, points, bands, tests, items, commands."""

import ast
import functools
import json
import math
import re
from pathlib import Path

import pytest

from common.cli import UserError
from grading import markers
from grading.homeworks import HOMEWORKS, get_homework, node_file, public_test_files
from grading.scan import import_aliases, matches, scan_region

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENTS = ("gan", "ddpm_ddim", "dps", "distillation", "synchronization")
# Handout totals (compulsory, optional): KAIST A4 slides / A5 README 20 (+5), NYCU Lab 3 100, UMich HW5 part A 40%
# (+10% optional) and part B 60%.
TOTALS = {"kaist-a4": (20, 5), "nycu-lab3": (100, 0), "umich-hw5-gan": (40, 10), "umich-hw5-diffusion": (60, 0),
          "kaist-a5": (20, 5)}


def _scan_repo():
    """region id -> (file, Region) for files whose regions have ids; the packages still without ids."""
    regions, in_progress = {}, set()
    for pkg in ASSIGNMENTS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            if "# BEGIN SOLUTION" not in text:
                continue
            rel = path.relative_to(ROOT).as_posix()
            try:
                found = markers.find_regions(text, rel)
            except markers.MarkerError:
                in_progress.add(pkg)  # the seam is still moving this file to ids
                continue
            for region in found:
                assert region.id not in regions, f"region id {region.id} appears twice ({rel})"
                regions[region.id] = (rel, region)
    return regions, in_progress


REGIONS, IN_PROGRESS = _scan_repo()


def test_homeworks_are_listed_by_id():
    assert list(HOMEWORKS) == list(TOTALS)
    assert all(get_homework(i).id == i for i in TOTALS)
    with pytest.raises(UserError) as err:
        get_homework("kaist-a9")
    assert "\n" not in err.value.message and "kaist-a4" in err.value.message and "kaist-a5" in err.value.message


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_points_sum_to_the_handout_totals(hw_id):
    hw = HOMEWORKS[hw_id]
    total, optional = TOTALS[hw_id]
    assert hw.total_points == pytest.approx(total)
    assert sum(t.points for t in hw.tasks if t.optional) == pytest.approx(optional)
    assert len({t.id for t in hw.tasks}) == len(hw.tasks)


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_every_region_belongs_to_at_most_one_task_and_exists(hw_id):
    hw = HOMEWORKS[hw_id]
    assert len(hw.region_ids) == len(set(hw.region_ids)), "a region is graded by two tasks"
    for rid in hw.region_ids:
        if rid not in REGIONS:
            if IN_PROGRESS & set(hw.packages):
                pytest.skip(f"{rid}: {sorted(IN_PROGRESS)} still without region ids")
            pytest.fail(f"{hw_id}: region {rid} of a task is not in the repository")
        assert REGIONS[rid][0].split("/")[0] in hw.packages, f"{rid} lies outside the packages of {hw_id}"


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_region_files_are_submission_items(hw_id):
    hw = HOMEWORKS[hw_id]
    files = {REGIONS[r][0] for r in hw.region_ids if r in REGIONS}
    for rel in files:
        assert any(Path(rel).match(item.pattern) and rel.count("/") == item.pattern.count("/")
                   for item in hw.items), f"{rel} is not in any item of {hw_id}"


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_reference_regions_pass_their_homeworks_scan(hw_id):
    hw = HOMEWORKS[hw_id]
    for rid in hw.region_ids:
        if rid in REGIONS:
            rel, region = REGIONS[rid]
            assert scan_region(region.body, (ROOT / rel).read_text(), hw.forbidden_calls) == [], rid


def _band_tasks():
    return [(hw.id, t) for hw in HOMEWORKS.values() for t in hw.tasks if t.bands is not None]


@pytest.mark.parametrize("hw_id,task", _band_tasks(), ids=lambda x: getattr(x, "id", x))
def test_bands_are_half_open_and_gap_free(hw_id, task):
    bands = task.bands
    assert bands.metric == "clip-vit-b-32" and not bands.calibrated
    assert bands.bands[0].fraction == 1.0
    fractions = [b.fraction for b in bands.bands]
    assert fractions == sorted(fractions, reverse=True)
    for k, band in enumerate(bands.bands):
        assert bands.fraction(band.lower) == band.fraction  # the lower edge belongs to the band
        below = bands.bands[k + 1].fraction if k + 1 < len(bands.bands) else 0.0
        assert bands.fraction(math.nextafter(band.lower, -1)) == below  # just below: the next band, no hole
    assert bands.fraction(float("nan")) == 0.0 and bands.fraction(1.0) == 1.0
    toy = task.toy_bands
    assert toy.metric == "toy-clip" and toy.calibrated
    assert [b.fraction for b in toy.bands] == fractions and toy.fraction(1.0) == 0.0  # placeholders award nothing


@pytest.mark.parametrize("hw_id,task_id,score,points", [
    ("nycu-lab3", "task1-sds", 0.27, 15), ("nycu-lab3", "task1-sds", 0.25, 10), ("nycu-lab3", "task1-sds", 0.2399, 0),
    ("nycu-lab3", "task2-vsd", 0.26, 25), ("nycu-lab3", "task3-sdi", 0.24, 20), ("nycu-lab3", "task3-sdi", 0.3, 30),
    ("kaist-a4", "task1-sds", 0.28, 10), ("kaist-a4", "task2-pds", 0.2799, 5), ("kaist-a4", "task3-vsd", 0.27, 2.5),
    ("kaist-a4", "task1-sds", 0.2599, 0), ("kaist-a5", "task1-wide", 0.26, 5), ("kaist-a5", "task3-inner-rotate",
                                                                                 0.29, 5)])
def test_band_points_match_the_handout_tables(hw_id, task_id, score, points):
    task = HOMEWORKS[hw_id].task(task_id)
    assert task.points * task.bands.fraction(score) == pytest.approx(points)


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_public_tests_are_existing_repo_tests(hw_id):
    hw = HOMEWORKS[hw_id]
    for task in hw.tasks:
        assert bool(task.public_tests) == bool(task.regions), f"{task.id}: coding tasks (only) have public tests"
        for node in task.public_tests:
            path = ROOT / node_file(node)
            name = re.sub(r"\[.*\]$", "", node.split("::")[1])
            assert path.is_file() and f"def {name}(" in path.read_text(), node
    assert all(f.startswith("tests/") for f in public_test_files(hw))


def _module_source(module: str) -> str:
    """Text of a ``python -m`` module and of its package's other modules (options may live in helpers)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = ROOT / module.replace(".", "/") / "__main__.py"
    assert path.is_file(), f"no module {module}"
    return "".join(p.read_text() for p in sorted((ROOT / module.split(".")[0]).rglob("*.py")))


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_commands_use_real_entry_points_and_options(hw_id):
    for task in HOMEWORKS[hw_id].tasks:
        for command in (task.command, task.real_command):
            for part in filter(None, (p.strip() for p in command.split("&&"))):
                words = part.split()
                assert words[:2] == ["python", "-m"], part
                source = _module_source(words[2])
                for option in (w for w in words[3:] if w.startswith("--")):
                    assert f'"{option}"' in source or f"'{option}'" in source, f"{words[2]} has no {option}"
        json.dumps(task.fixed, allow_nan=False)  # plain data


@functools.cache
def _referenced_names(path: Path) -> frozenset[str]:
    """Every dotted name a module refers to, resolved through its imports (AST, not a text search)."""
    text = path.read_text()
    aliases, out = import_aliases(text), set()
    for node in ast.walk(ast.parse(text)):
        parts = []
        while isinstance(node, ast.Attribute):
            parts, node = [node.attr, *parts], node.value
        if isinstance(node, ast.Name):
            out.add(".".join([aliases.get(node.id, node.id), *parts]))
    return frozenset(out)


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_strip_functions_are_top_level_functions_nothing_shipped_calls(hw_id):
    hw = HOMEWORKS[hw_id]
    for dotted in hw.strip_functions:
        module, name = dotted.rsplit(".", 1)
        own = ROOT / (module.replace(".", "/") + ".py")
        assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in ast.parse(own.read_text()).body)
        assert any(matches(dotted, f) for f in hw.forbidden_calls), f"{dotted} is stripped but not flagged"
        for pkg in ("common", *hw.packages):
            for path in (ROOT / pkg).rglob("*.py"):
                used = any(matches(name, dotted) for name in _referenced_names(path))
                assert path == own or not used, f"{path} uses {dotted}"


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_zip_names_and_items(hw_id):
    hw = HOMEWORKS[hw_id]
    assert hw.zip_name.endswith(".zip") and "{sid}" in hw.zip_name
    assert re.fullmatch(r"\d{3}_[0-9a-f]{16}\.txt", hw.handout)  # a file of shared/seeds
    patterns = [item.pattern for item in hw.items]
    assert len(patterns) == len(set(patterns)) and all(not p.startswith(("/", ".")) for p in patterns)
    assert any(item.required for item in hw.items)


@pytest.mark.parametrize("hw_id", list(TOTALS))
def test_coding_tasks_name_existing_case_modules(hw_id):
    for task in HOMEWORKS[hw_id].tasks:
        assert bool(task.cases) == bool(task.regions), f"{task.id}: coding tasks (only) have graded cases"
        for module in task.cases:
            assert module.startswith("grading.cases.") and (ROOT / (module.replace(".", "/") + ".py")).is_file()
