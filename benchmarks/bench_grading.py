"""Benchmark ``python -m grading grade`` on each homework's reference submission: time, memory, worker runs (CPU).

For every homework, a zip holding the reference solution in the starter's TODO regions (code only: no result images
or eval.json, so deliverable checks score as for a code-only hand-in) is graded ``--submissions`` times with
``grading.batch.grade_batch``, ``--jobs`` of them at once, on the toy default (CPU, sandboxed workers). Each
homework runs in a fresh process, so its peak-memory numbers are its own. Columns:

* ``ref s``: the reference phase (the reference outputs every grade is compared with; once per batch);
* ``s / sub``: wall time of one submission (first worker start to last worker end, mean) and ``batch s`` the whole
  student phase (with ``--jobs 2``, two submissions at once: throughput = submissions / batch s);
* ``parent MB``: peak RSS of this (trusted) process; ``worker MB``: the largest ``WorkerResult.peak_rss_mb`` (the
  worker's own VmHWM); ``children MB``: ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest waited-for
  descendant); ``need MB`` = parent + jobs x worker, what a grading container must hold;
* ``runs``: worker runs of the reference phase (reference + mistakes) and per submission;
* ``score``: what the reference submission got (code-only: deliverable and reported-score tests may fail; the
  JSON rows list the tests it did not pass).

Measured once on the shared 2-core dev machine (CPU torch 2.14.1+cu130 build; ~7 agents at once, load average 7-8
during the --jobs 1 run and 3-6 during the --jobs 2 run, so the two runs are not comparable), seed 0; every test
of every reference submission passed (the scores lack the hand-graded tasks and the missing-item penalties):

| homework | jobs | subs | ref s | s / sub | batch s | parent MB | worker MB | child MB | need MB | ref runs | runs |
|---|---|---|---|---|---|---|---|---|---|---|---|
| kaist-a4 | 1 | 1 | 19.7 | 25.1 | 25.7 | 721 | 901 | 721 | 1622 | 3 | 3 |
| kaist-a5 | 1 | 1 | 27.7 | 26.1 | 26.8 | 781 | 898 | 781 | 1679 | 3 | 3 |
| nycu-lab3 | 1 | 1 | 18.3 | 19.5 | 20.2 | 722 | 901 | 721 | 1623 | 3 | 3 |
| umich-hw5-diffusion | 1 | 1 | 46.1 | 39.3 | 40.3 | 722 | 901 | 721 | 1623 | 5 | 5 |
| umich-hw5-gan | 1 | 1 | 24.3 | 24.4 | 24.6 | 723 | 878 | 721 | 1601 | 3 | 3 |
| kaist-a4 | 2 | 2 | 21.1 | 25.0 | 25.7 | 722 | 901 | 722 | 2524 | 3 | 3 |
| kaist-a5 | 2 | 2 | 14.9 | 17.7 | 18.1 | 820 | 904 | 820 | 2628 | 3 | 3 |
| nycu-lab3 | 2 | 2 | 14.1 | 11.5 | 11.7 | 723 | 901 | 722 | 2525 | 3 | 3 |
| umich-hw5-diffusion | 2 | 2 | 15.8 | 20.4 | 21.0 | 723 | 901 | 723 | 2525 | 5 | 5 |
| umich-hw5-gan | 2 | 2 | 9.3 | 13.5 | 13.8 | 724 | 883 | 722 | 2490 | 3 | 3 |

A worker run is dominated by its imports (torch and the homework's packages, ~4-9 s on a busy core); the parent
holds ~720 MB because it imports torch too (for the comparison). A Gradescope container grading one submission needs
~1.6 GB (the default 768 MB is not enough).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _cli as bench  # noqa: E402
from common.cli import UserError, finite, user_errors  # noqa: E402
from common.runs import write_json_atomic  # noqa: E402
from grading import grade, markers, workspace  # noqa: E402
from grading.batch import GradeConfig, grade_batch  # noqa: E402
from grading.homeworks import HOMEWORKS, get_homework  # noqa: E402
from grading.spec import Homework  # noqa: E402
from grading.submission import load_submissions  # noqa: E402
from grading.submit import zip_file_name  # noqa: E402

HEAD = ["homework", "jobs", "subs", "ref s", "s / sub", "batch s", "parent MB", "worker MB", "children MB", "need MB",
        "ref runs", "runs / sub", "score"]


def reference_zip(hw: Homework, folder: Path, sid: str) -> Path:
    """The reference solution as a student would hand it in: every region file's starter with the reference bodies
    written into its TODO regions, under the handout's zip root, in a zip with the handout's name."""
    bodies = workspace.reference_bodies(hw)
    path = folder / zip_file_name(hw, "Bench Student", sid)
    root = hw.zip_root.strip("/")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, text in workspace.region_files(hw).items():
            zf.writestr(f"{root}/{rel}" if root else rel, markers.fill(workspace.starter_text(hw, rel, text), bodies))
    return path


class Recorder:
    """Wraps ``grading.grade.run_worker`` (the one call every worker run goes through) and keeps what each did."""

    def __init__(self):
        self.runs: list[dict] = []
        self._lock = threading.Lock()
        self._inner = grade.run_worker

    def __call__(self, tree, request, out_dir, limits, **kw):
        start = time.monotonic()
        result = self._inner(tree, request, out_dir, limits, **kw)
        kind = "reference" if Path(tree).parent.name == "trees" else "student"  # Reference._tree: work/trees/<key>
        with self._lock:
            self.runs.append({"kind": kind, "tree": str(tree), "start": start, "end": time.monotonic(),
                              "peak_rss_mb": result.peak_rss_mb, "timed_out": result.timed_out})
        return result


def measure(hw_id: str, jobs: int, n: int, timeout: float, seed: int) -> dict:
    """Grade ``n`` copies of the reference submission of ``hw_id`` with ``jobs`` at once, in this process."""
    hw = get_homework(hw_id)
    recorder = Recorder()
    grade.run_worker = recorder
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        zips = [reference_zip(hw, tmp / "in", f"20269{k:03d}") for k in range(n)]
        subs = load_submissions(zips, tmp / "subs", zip_name=hw.zip_name)
        cfg = GradeConfig(hw_id, tuple(map(str, zips)), str(tmp / "out"), jobs=jobs, timeout=timeout, force=True,
                          seed=seed)
        start = time.monotonic()
        rows = grade_batch(hw, subs, cfg)
        end = time.monotonic()
    student = [r for r in recorder.runs if r["kind"] == "student"]
    first = min((r["start"] for r in student), default=end)
    per_sub: dict[str, list[dict]] = {}
    for r in student:
        per_sub.setdefault(str(Path(r["tree"]).parent), []).append(r)  # one grade-* work dir per submission
    latency = [max(r["end"] for r in rs) - min(r["start"] for r in rs) for rs in per_sub.values()]
    mb = 1024.0  # ru_maxrss is in KiB on Linux
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mb
    worker = max((r["peak_rss_mb"] for r in recorder.runs), default=0.0)
    return {"homework": hw_id, "jobs": jobs, "submissions": n, "reference_s": round(first - start, 1),
            "per_submission_s": round(sum(latency) / max(len(latency), 1), 1), "batch_s": round(end - first, 1),
            "parent_mb": round(parent), "worker_mb": round(worker),
            "children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mb),
            "need_mb": round(parent + jobs * worker), "reference_runs": len(recorder.runs) - len(student),
            "runs_per_submission": round(len(student) / max(n, 1), 1),
            "timed_out": sum(r["timed_out"] for r in recorder.runs),
            "score": f"{sum(res['score'] for _, res in rows) / max(n, 1):g} / {hw.total_points:g}",
            "not_passed": sorted({t["name"] for _, res in rows for t in res["tests"] if t["status"] != "passed"})}


def _in_child(hw_id: str, jobs: int, n: int, timeout: float, seed: int) -> dict:
    """``measure`` in a fresh interpreter (this script), so peak RSS is per homework."""
    with tempfile.TemporaryDirectory(prefix="bench-grading-row-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--homework", hw_id, "--jobs", str(jobs), "--submissions", str(n),
               "--timeout", str(timeout), "--seed", str(seed), "--json", str(out), "--quiet"]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0 or not out.exists():
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            return {"homework": hw_id, "jobs": jobs, "submissions": n, "error": tail}
        return json.loads(out.read_text())[0]


def _cells(row: dict) -> list[str]:
    if "error" in row:
        return [row["homework"], str(row["jobs"]), str(row["submissions"]), f"error: {row['error']}"]
    keys = ("reference_s", "per_submission_s", "batch_s", "parent_mb", "worker_mb", "children_mb", "need_mb",
            "reference_runs", "runs_per_submission", "score")
    return [row["homework"], str(row["jobs"]), str(row["submissions"]), *(str(row[k]) for k in keys)]


@bench.bench_command()
@click.option("--homework", default="all", show_default=True, type=click.Choice(["all", *sorted(HOMEWORKS)]),
              help="Which homework's reference submission to grade (all: each in its own process).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 8), help="Submissions graded at once.")
@click.option("--submissions", "n", default=0, show_default=True, type=click.IntRange(0, 32),
              help="Copies of the reference submission to grade (0: as many as --jobs).")
@click.option("--timeout", default=600.0, show_default=True, type=finite(10, 7200),
              help="Wall-clock seconds per worker.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1), help="Grading seed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows here.")
@click.option("--quiet", is_flag=True, hidden=True, help="No table (used for the per-homework child processes).")
@user_errors
def main(homework, jobs, n, timeout, seed, json_path, quiet) -> None:
    """Grade each homework's reference submission on the toy default and print time, memory and worker runs.

    \b
    Examples:
      python benchmarks/bench_grading.py
      python benchmarks/bench_grading.py --homework umich-hw5-gan --jobs 2
      python benchmarks/bench_grading.py --jobs 2 --json grading_bench.json
    """
    from tqdm import tqdm

    n = n or jobs
    if homework != "all":
        rows = [measure(homework, jobs, n, timeout, seed)]
    else:
        rows = [_in_child(hw, jobs, n, timeout, seed) for hw in tqdm(sorted(HOMEWORKS), desc="homeworks")]
    if json_path:
        try:
            write_json_atomic(json_path, rows)
        except OSError as err:
            raise UserError(f"cannot write --json {json_path}: {err.strerror}") from None
    if not quiet:
        click.echo("| " + " | ".join(HEAD) + " |\n|" + "---|" * len(HEAD))
        for row in rows:
            click.echo("| " + " | ".join(_cells(row)) + " |")


if __name__ == "__main__":
    main()
