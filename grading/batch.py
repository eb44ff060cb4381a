"""``python -m grading grade``: grade a batch of submissions into results.json files, a CSV and an sqlite gradebook.

One broken submission never stops the batch (its results.json says what broke, with score 0); a submission already
graded is skipped unless ``--force``. ``run-autograder`` is the same grading with Gradescope's paths.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from common.cli import UserError, finite, user_errors
from common.runs import write_json_atomic
from grading import e2e, workspace
from grading.grade import Reference, grade_files
from grading.homeworks import items_root
from grading.results import TestResult, error_results, write_results
from grading.sandbox import Limits
from grading.spec import Homework
from grading.submission import Submission, find_region_files


@dataclass(frozen=True)
class GradeConfig:
    """Everything one ``grade`` run depends on (written next to its outputs as ``grade_config.json``)."""

    homework: str
    submissions: tuple[str, ...]
    out: str
    jobs: int = 1
    reproduce: str = "none"
    device: str = "cpu"
    timeout: float = 300.0
    force: bool = False
    seed: int = 0
    clip_model: str | None = None  # e2e: also re-score real-model outputs with this CLIP (grading/e2e_scores.py)


def missing_items(hw: Homework, root: Path | None) -> list[str]:
    """Descriptions of the required deliverables that the submission lacks (each costs the missing-item penalty)."""
    if root is None:
        return [it.description for it in hw.items if it.required]
    from grading.homeworks import items_root

    base = items_root(root, hw)
    return [it.description for it in hw.items if it.required and not any(base.glob(it.pattern))]


def total_score(tests: list[TestResult], hw: Homework, n_missing: int) -> float:
    """max(0, sum of test scores) x (1 - penalty x missing items), never below 0."""
    raw = max(0.0, sum(t.score for t in tests))
    return round(raw * max(0.0, 1.0 - hw.missing_item_penalty * n_missing), 4)


def grade_submission(hw: Homework, sub: Submission, ref: Reference, out_dir: Path) -> dict:
    """Grade one loaded submission into ``out_dir/results.json``; always writes a valid file and returns it."""
    start = time.monotonic()
    path = out_dir / "results.json"
    try:
        if sub.root is None:
            return write_results(path, error_results("Submission unreadable: " + "; ".join(sub.problems)))
        files = find_region_files(sub, hw)
        with tempfile.TemporaryDirectory(prefix="grade-", dir=ref.work) as work:
            tests, extracted = grade_files(hw, files, ref, Path(work), items=items_root(sub.root, hw))
        missing = missing_items(hw, sub.root)
        cost = f"-{hw.missing_item_penalty:.0%}" if hw.missing_item_penalty else "graded by hand"
        notes = [f"Missing item ({cost}): {m}" for m in missing]
        extra = {"flags": extracted.flags + sub.problems, "outside_edits": extracted.diffs,
                 "missing_items": missing, "student": {"sid": sub.sid, "name": sub.name}, "seed": ref.seed,
                 "sandbox": ref.limits.describe() if hasattr(ref.limits, "describe") else {}}
        return write_results(path, tests, score=total_score(tests, hw, len(missing)), extra_data=extra,
                             output="\n".join(notes), execution_time=time.monotonic() - start)
    except Exception as err:  # the grader's own failure: still a valid results.json, with score 0
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return write_results(path, error_results(f"Autograder error: {detail}"))


GRADEBOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS grades (homework TEXT, student TEXT, sid TEXT, name TEXT, score REAL, max_score REAL,
    flags TEXT, graded_at TEXT, PRIMARY KEY (homework, student));
CREATE TABLE IF NOT EXISTS tests (homework TEXT, student TEXT, number TEXT, name TEXT, score REAL, max_score REAL,
    PRIMARY KEY (homework, student, number));
"""


def write_gradebook(hw: Homework, rows: list[tuple[Submission, dict]], out: Path) -> None:
    """``out/grades.csv`` (one row per student, a column per task) and ``out/gradebook.sqlite``."""
    tasks = [t.id for t in hw.tasks]
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "sid", "name", "score", "max_score", *tasks, "flags"])
        for sub, res in rows:
            per_task = {t: sum(x["score"] for x in res.get("tests", []) if t in x.get("tags", [])) for t in tasks}
            flags = res.get("extra_data", {}).get("flags", [])
            writer.writerow([sub.key, sub.sid, sub.name, res["score"], hw.total_points,
                             *[round(per_task[t], 4) for t in tasks], " | ".join(flags)])
    with sqlite3.connect(out / "gradebook.sqlite") as db:
        db.executescript(GRADEBOOK_SCHEMA)
        for sub, res in rows:
            db.execute("REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?, ?, datetime('now'))",
                       (hw.id, sub.key, sub.sid, sub.name, res["score"], hw.total_points,
                        json.dumps(res.get("extra_data", {}).get("flags", []))))
            db.executemany("REPLACE INTO tests VALUES (?, ?, ?, ?, ?, ?)",
                           [(hw.id, sub.key, t.get("number", ""), t["name"], t["score"], t["max_score"])
                            for t in res.get("tests", [])])


def ensure_calibration(hw: Homework, ref: Reference, out: Path) -> None:
    """Toy bands for banded tasks when no release.json holds them (grading from a checkout): calibrated once on the
    reference (a few minutes on a CPU) and kept in ``out/calibration.json`` for later runs of the same batch."""
    banded = [t for t in hw.tasks if t.id in e2e.banded_cases(hw)]
    if not banded or all(e2e.calibration_record(t, ref) for t in banded):
        return
    path = out / "calibration.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("homework") == hw.id and cached.get("seed") == ref.seed:
            e2e.configure(ref, calibration=cached["tasks"])
            return
    seeds = tuple(dict.fromkeys((ref.seed, *e2e.DEFAULT_SEEDS)))
    tasks = e2e.calibrate_toy_bands(hw, seeds, ref.root, ref.work / "calibrate", ref.limits)
    write_json_atomic(path, {"homework": hw.id, "seed": ref.seed, "tasks": tasks})
    e2e.configure(ref, calibration=tasks)


def grade_batch(hw: Homework, subs: list[Submission], cfg: GradeConfig,
                progress=None) -> list[tuple[Submission, dict]]:
    """Grade every submission (``cfg.jobs`` at once), skipping graded ones unless ``cfg.force``."""
    out = Path(cfg.out)
    # Trees live outside the grader's checkout, which the sandbox hides from workers (it holds the reference).
    work = Path(tempfile.mkdtemp(prefix=f"grading-{hw.id}-"))
    ref = Reference(hw, cfg.seed, work, workspace.ROOT, Limits(wall_s=cfg.timeout))
    e2e.configure(ref, reproduce=cfg.reproduce, clip_model=cfg.clip_model)  # e2e hook: reported-score checks
    ensure_calibration(hw, ref, out)

    def one(sub: Submission) -> tuple[Submission, dict]:
        target = out / sub.key / "results.json"
        if target.exists() and not cfg.force:
            return sub, json.loads(target.read_text())
        (out / sub.key).mkdir(parents=True, exist_ok=True)
        res = grade_submission(hw, sub, ref, out / sub.key)
        if progress is not None:
            progress(sub, res)
        return sub, res

    for task in hw.tasks:  # reference outputs first, once, so the workers below only run student code
        for module in task.cases:
            ref.outputs(module)
    try:
        with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
            rows = list(pool.map(one, subs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_gradebook(hw, rows, out)
    (out / "grade_config.json").write_text(json.dumps(asdict(cfg), indent=2, allow_nan=False) + "\n")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Commands


def _homework_choice() -> click.Choice:
    from grading.homeworks import HOMEWORKS

    return click.Choice(sorted(HOMEWORKS))


@click.command("grade", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 119})
@click.argument("homework", type=_homework_choice())
@click.argument("submissions", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for results, CSV, gradebook.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Submissions graded at once.")
@click.option("--reproduce", default="none", show_default=True, type=click.Choice(["none", "toy", "real"]),
              help="Re-run the student's entry point to check reported scores.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--timeout", default=300.0, show_default=True, type=finite(10, 7200),
              help="Wall-clock seconds per task worker.")
@click.option("--force", is_flag=True, help="Grade again submissions that already have a results.json.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1),
              help="Seed of the hidden cases (keep it private; the same seed grades the same).")
@click.option("--clip_model", default=None, type=click.Choice(["clip-vit-b-32"]),
              help="Also re-score reported real-model CLIP scores with OpenAI ViT-B/32 (toy outputs: toy-clip).")
@user_errors
def grade_command(homework, submissions, out, jobs, reproduce, device, timeout, force, seed, clip_model) -> None:
    """Grade SUBMISSIONS (zips, folders or a Gradescope export folder) of HOMEWORK.

    Writes OUT/<student>/results.json (Gradescope format), OUT/grades.csv and OUT/gradebook.sqlite. Student code
    runs only in sandboxed worker processes; one broken submission never stops the batch.

    \b
    Examples:
      python -m grading grade kaist-a4 submissions/*.zip --out graded/kaist-a4
      python -m grading grade umich-hw5-gan export/ --out graded/gan --jobs 2
      python -m grading grade nycu-lab3 submissions/ --out graded/nycu --reproduce toy --clip_model clip-vit-b-32
    """
    from tqdm import tqdm

    from grading.homeworks import get_homework
    from grading.submission import load_submissions

    hw = get_homework(homework)
    cfg = GradeConfig(homework, tuple(submissions), out, jobs, reproduce, device, timeout, force, seed, clip_model)
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write to --out {out}: {err.strerror}") from None
    subs = load_submissions(submissions, out_dir / ".work" / "submissions", zip_name=hw.zip_name)
    if not subs:
        raise UserError("no submissions found in " + ", ".join(submissions))
    bar = tqdm(total=len(subs), desc=f"grading {homework}", unit="submission")

    def report(sub, res) -> None:
        bar.update(1)
        bar.write(f"{sub.label}: {res['score']:g} / {hw.total_points:g}")

    rows = grade_batch(hw, subs, cfg, progress=report)
    bar.close()
    click.echo(f"graded {len(rows)} submissions -> {out_dir / 'grades.csv'}, {out_dir / 'gradebook.sqlite'}")
