"""Malicious umich-hw5-gan submissions through the real grading path (issue #16, section 5).

Every submission (``tests/grading/adversarial/gan_attacks.py``) is a zip or a folder built here, loaded with
``load_submissions`` and graded with ``grade_submission`` into ``results.json``, exactly as ``python -m grading
grade`` does. It carries up to three attacks, one per coded task, and the reference in every other region. Each
attack must score 0 on the cases it attacks, every other case keeps full credit, the grade ends within its time
bound, and nothing the attack aimed at (files, network, processes) is touched. The sandbox-level attacks of
``test_sandbox.py`` run on a tiny tree; these run on the homework's own tree and cases, so they also check the
scan, the extraction of region bodies and the scoring around the sandbox.

Cost: one module-scoped Reference (3 worker runs) and 2-3 worker runs per submission (~5 s each on 2 busy cores),
plus one wall-clock kill (``WALL_S``) and the mistake runs of the lying tensor (2): ~85 s on 2 cores at load 2, ~200 s
at load 8.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "adversarial"))

import gan_attacks as ga  # noqa: E402

from grading import sandbox_view  # noqa: E402
from grading.batch import grade_submission  # noqa: E402
from grading.grade import Reference, case_modules  # noqa: E402
from grading.sandbox import GRADER_ROOT, Limits, SandboxError, plan  # noqa: E402
from grading.submission import load_submissions  # noqa: E402

HW = ga.HW
SEED = 20260916
WALL_S = 30.0  # each student worker's wall-clock limit: ~3x a worker on 2 loaded cores (the reference: 120 s)
BOUND_S = 3 * WALL_S + 45  # a whole submission: three task workers, extraction, scoring, a few mistake runs
TASK_OF = {"g-loss/": ga.G, "d-loss/": ga.D, "d-main/": "gan-d-real"}  # task 1's cases by region


def _isolated() -> bool:
    try:
        return plan(Limits()).layers["mode"] in ("bwrap", "unshare")
    except SandboxError:
        return False


pytestmark = pytest.mark.skipif(not _isolated(), reason="needs root with bwrap or mount namespaces (the CI image)")


@dataclass
class CaseInfo:
    case_id: str
    task: str  # task id
    region: str  # the region the case exercises
    points: float


def case_table() -> dict[str, CaseInfo]:
    """Test number ("k.i", as ``grade_files`` numbers them) -> the case it reports."""
    out = {}
    for k, task in enumerate(HW.tasks, 1):
        if not task.cases:
            continue
        cases = [c for module in case_modules(task) for c in module.CASES]
        total = sum(c.points for c in cases)
        for i, case in enumerate(cases, 1):
            region = next((r for p, r in TASK_OF.items() if case.id.startswith(p)), task.regions[0])
            out[f"{k}.{i}"] = CaseInfo(case.id, task.id, region, task.points * case.points / total)
    return out


CASES = case_table()


@dataclass
class Graded:
    spec: ga.Submission
    results: dict
    elapsed: float
    problems: list[str]
    extracted_to: Path
    out_dir: Path


@dataclass
class World:
    base: Path
    paths: ga.Paths
    ref: Reference  # student runs: WALL_S
    server: socket.socket
    graded: dict[str, Graded]

    def grade(self, key: str) -> Graded:
        if key not in self.graded:
            spec = ga.submissions(self.paths)[key]
            src = self.base / "in" / key
            src.mkdir(parents=True)
            path = ga.write_folder(spec, src) if spec.folder else ga.write_zip(spec, src)
            (sub,) = load_submissions([path], self.base / "subs" / key, zip_name=HW.zip_name)
            out = self.paths.out_dir.parent / key
            out.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            results = grade_submission(HW, sub, self.ref, out)
            elapsed = time.monotonic() - start
            assert json.loads((out / "results.json").read_text()) == results
            self.graded[key] = Graded(spec, results, elapsed, list(sub.problems), self.base / "subs" / key, out)
        return self.graded[key]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("adversarial")
    ref = Reference(HW, SEED, base / "ref", limits=Limits(wall_s=120))
    for task in HW.tasks:
        for module in task.cases:
            ref.outputs(module)  # the reference outputs first, once, under the generous limit
    tight = copy.copy(ref)  # shares the cached reference and mistake runs
    # disk_mb above the huge-file attack's ~310 MB: this suite checks the per-file cap; the total-disk watchdog
    # has its own test (tests/grading/test_sandbox.py)
    tight.limits = Limits(wall_s=WALL_S, disk_mb=1024)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    paths = ga.Paths(base / "graded" / "tamper", ref.work, GRADER_ROOT, server.getsockname()[1],
                     f"{os.getpid()}-{time.monotonic_ns()}")
    yield World(base, paths, tight, server, {})
    server.close()
    for path in _probe_files(paths):
        path.unlink(missing_ok=True)


def _probe_files(p: ga.Paths) -> list[Path]:
    """Every file a probe body tries to create outside its own out dir (none may exist afterwards)."""
    return [p.out_dir / f"pwned-{p.token}.json", p.out_dir / f"pwned-{p.token}.pt",
            p.ref_work / "trees" / "reference" / f"pwned_{p.token}.py", p.ref_work / f"pwned-{p.token}.json",
            p.grader_root / "grading" / "cases" / f"pwned_{p.token}.py",
            Path("/tmp/grading-sandbox-uids") / f"pwned-{p.token}", Path(f"/tmp/adv-absolute-{p.token}.py")]


def by_case(results: dict) -> dict[str, dict]:
    """case id -> its test in results.json."""
    return {CASES[t["number"]].case_id: t for t in results["tests"]}


def zeroed(spec: ga.Submission) -> dict[str, ga.Attack]:
    """case id -> the attack that must zero it."""
    out = {}
    for attack in spec.attacks:
        task = next(t.id for t in HW.tasks if attack.region in t.regions)
        for info in CASES.values():
            hit = info.region == attack.region if attack.scope == "region" else info.task == task
            if hit:
                out[info.case_id] = attack
    return out


def check_scores(g: Graded, skip: tuple[str, ...] = ()) -> None:
    """0 on every attacked case (with the attack's message), full credit elsewhere, the total, the time bound."""
    tests, lost = by_case(g.results), zeroed(g.spec)
    assert set(tests) == {c.case_id for c in CASES.values()}, "every case of every coded task is reported"
    for info in CASES.values():
        test = tests[info.case_id]
        if info.region in skip:
            continue
        if info.case_id in lost:
            attack = lost[info.case_id]
            assert test["score"] == 0, f"{attack.name}: {info.case_id} got credit: {test['output'][:300]}"
            assert attack.expect in test["output"], (attack.name, info.case_id, test["output"][:500])
        else:
            assert test["score"] == pytest.approx(info.points), f"honest {info.case_id}: {test['output'][:300]}"
    if not skip:
        assert g.results["score"] == pytest.approx(sum(c.points for c in CASES.values() if c.case_id not in lost))
    assert g.elapsed < BOUND_S, f"grading took {g.elapsed:.0f} s"


def task_output(g: Graded, region: str) -> str:
    return "\n".join(t["output"] for cid, t in by_case(g.results).items()
                     if next(c for c in CASES.values() if c.case_id == cid).region == region)


def attack_message(g: Graded, region: str) -> str:
    """The first "ATTACK ..." report of a probe body (raised in the sandbox, copied into results.json)."""
    match = re.search(r"ATTACK [^\n]*", task_output(g, region))
    assert match, task_output(g, region)[:500]
    return match.group(0)


def no_sandbox_process_left() -> None:
    """No live process of any sandbox uid that no grader on the machine holds right now."""
    for uid in range(sandbox_view.BASE_UID, sandbox_view.BASE_UID + sandbox_view.UID_SLOTS):
        fd = sandbox_view.lock_uid(uid)
        if fd is None:
            continue  # in use by another grading process (a parallel test run)
        try:
            assert not sandbox_view.live_pids(uid), f"a process of sandbox uid {uid} outlived its worker"
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------------------


def test_exits_in_regions_and_edits_outside_them(world):
    """In the regions: raise SystemExit (g-loss; the scan does not see it, the worker fails that case only) and the
    obvious sys.exit / os._exit (cutout; the scan blocks the task). Outside them (inert, flagged): sys.exit at
    gan.loss import, os._exit at gan.augment import, a correct d_reg patched over the stubbed r1 method, and hook
    files that call os._exit (sitecustomize.py, conftest.py, a .pth, gan/__init__.py). Graded as a folder."""
    g = world.grade("exits")
    check_scores(g)
    flags = g.results["extra_data"]["flags"]
    assert any("diffaugment-cutout: uses the sys module" in f for f in flags), flags
    assert any("diffaugment-cutout: uses the os module" in f for f in flags), flags
    assert not any(ga.G in f for f in flags), "raise SystemExit passes the scan: the sandbox is the defence"
    assert any(f.startswith("gan/loss.py: edits outside") for f in flags), flags
    assert any(f.startswith("gan/augment.py: edits outside") for f in flags), flags
    diffs = g.results["extra_data"]["outside_edits"]
    assert "+os._exit(0)" in diffs["gan/augment.py"] and "+sys.exit(0)" in diffs["gan/loss.py"]
    assert "+StyleGAN2Loss.d_reg = _d_reg_outside" in diffs["gan/loss.py"]


def test_endless_loop_fork_storm_and_memory_bomb_end_in_time(world):
    g = world.grade("hog")
    check_scores(g)
    forks = int(re.search(r"after (\d+) forks", attack_message(g, ga.R1)).group(1))
    assert forks < Limits().processes, "RLIMIT_NPROC of the sandbox uid stops a fork storm"
    assert "ATTACK" not in task_output(g, ga.G)  # the 8 GiB allocation failed before the region's next line
    no_sandbox_process_left()


def test_writes_fake_stdout_and_reads_reach_nothing(world):
    g = world.grade("tamper")
    check_scores(g)
    wrote = attack_message(g, ga.G)
    assert wrote.startswith("ATTACK wrote 0 of"), wrote
    listed = ast.literal_eval(re.search(r"listed (\{.*\})", attack_message(g, ga.CUTOUT)).group(1))
    paths = world.paths
    assert not {str(paths.ref_work / "runs"), str(paths.ref_work / "trees"), str(paths.out_dir)} & set(listed)
    assert not {"gan", "grading"} & set(listed.get(str(paths.grader_root), [])), listed  # only .venv, toy models
    assert not [p for p in _probe_files(world.paths) if p.exists()]
    assert g.results["score"] == pytest.approx(6.0)  # the printed JSON (score 1000) was never read


def test_lying_outputs_score_zero(world):
    """A tensor subclass whose == is always true (values stripped to a plain tensor before they leave the worker),
    an always-equal non-tensor object, and an error message written as Markdown that poses as a pass; the
    cutout's attack is the next test."""
    g = world.grade("liar")
    check_scores(g, skip=(ga.CUTOUT,))
    out = by_case(g.results)["g-loss/b3"]["output"]  # the student's own text, rendered as Markdown by Gradescope:
    fence = re.search(r"^(`{3,})$", out, re.M)  # it must sit in a code block, where it is inert
    assert fence and out.index(fence.group(1)) < out.index("### Matches") < out.rindex(fence.group(1)), out


def test_monkeypatched_property_checks_get_no_credit(world):
    """A region that patches torch.as_tensor (through a local name) and does no cutout: the property cases' flags
    are computed in the parent from raw tensors (``Case.derive``), so the patch fakes nothing."""
    g = world.grade("liar")
    assert sum(t["score"] for t in g.results["tests"] if "task4-cutout" in t["tags"]) == 0


def test_network_huge_files_and_hostile_archive(world):
    """A socket to the grading host, files and stdout over the size limit, and a zip whose augment.py is a link
    to the reference, with zip-slip, absolute and hidden-case members."""
    g = world.grade("net")
    check_scores(g)
    with pytest.raises(BlockingIOError):
        world.server.accept()  # nothing reached the server
    sizes = attack_message(g, ga.R1)
    out_mb = int(re.search(r"'out': (\d+)", sizes).group(1))
    assert out_mb <= Limits().file_size_mb and "File too large" in sizes, sizes
    problems = " | ".join(g.problems)
    assert "link" in problems and "adv-slip" in problems and "adv-absolute" in problems, problems
    assert not list(world.base.rglob("adv-slip*")) and not list(world.base.rglob("adv-absolute*"))
    assert not Path(f"/tmp/adv-absolute-{world.paths.token}.py").exists()


def test_zip_bomb_is_refused_without_unpacking(world, tmp_path):
    bomb = ga.zip_bomb(tmp_path)
    start = time.monotonic()
    (sub,) = load_submissions([bomb], tmp_path / "subs", zip_name=HW.zip_name)
    res = grade_submission(HW, sub, world.ref, tmp_path / "out")
    assert time.monotonic() - start < 30 and sub.root is None
    assert res["score"] == 0 and "zip bomb" in res["tests"][0]["output"], res["tests"][0]["output"]
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == res
    assert sum(f.stat().st_size for f in (tmp_path / "subs").rglob("*") if f.is_file()) < 1 << 20
