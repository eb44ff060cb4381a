"""``python -m grading run-autograder``: what Gradescope's ``run_autograder`` calls.

Reads ``/autograder/submission`` (the student's files), grades it with the same code as ``grade`` using the
reference tree this package sits in (``/autograder/source``), and writes ``/autograder/results/results.json``.
The file is written in every case: a crash of the grader itself gives a visible "Autograder error" test and score 0.
"""

from __future__ import annotations

import json
import tempfile
import traceback
from pathlib import Path

import click

from grading import workspace
from grading.results import error_results, write_results


def release_info(source: Path) -> dict:
    """``release.json`` of the autograder's source folder (homework id, grading seed); empty when absent."""
    path = source / "release.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_autograder(submission: Path, results: Path, source: Path, homework: str | None = None) -> dict:
    """Grade the submission folder into ``results/results.json``; returns what was written."""
    from grading.batch import grade_submission
    from grading.grade import Reference
    from grading.homeworks import get_homework
    from grading.submission import load_submissions

    target = results / "results.json"
    try:
        info = release_info(source)
        hw = get_homework(homework or info["homework"])
        with tempfile.TemporaryDirectory(prefix="autograder-") as tmp:
            work = Path(tmp)
            subs = load_submissions([submission], work / "submission", single=True)
            if len(subs) != 1:
                return write_results(target, error_results(f"expected one submission, found {len(subs)}"))
            _who(subs[0], submission.parent / "submission_metadata.json")
            ref = Reference(hw, int(info.get("grading_seed", 0)), work, source)
            out = work / "out"
            out.mkdir()
            written = grade_submission(hw, subs[0], ref, out)
        return write_results(target, written) if isinstance(written, list) else _copy(written, target)
    except BaseException as err:  # noqa: B036 - results.json must exist whatever happened
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return write_results(target, error_results(f"Autograder error: {detail}"))


def _who(sub, metadata: Path) -> None:
    """Name and student id from Gradescope's ``submission_metadata.json`` (the folder name says nothing there)."""
    try:
        users = json.loads(metadata.read_text()).get("users") or []
    except (OSError, ValueError, AttributeError):
        return
    if users and isinstance(users[0], dict):
        sub.name = str(users[0].get("name", "")) or sub.name
        sub.sid = str(users[0].get("sid", "") or users[0].get("email", "")) or sub.sid
        sub.problems[:] = [p for p in sub.problems if "does not match" not in p]


def _copy(written: dict, target: Path) -> dict:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(written, indent=2, allow_nan=False) + "\n")
    tmp.replace(target)
    return written


@click.command("run-autograder", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--submission", default="/autograder/submission", show_default=True, type=click.Path(path_type=Path))
@click.option("--results", default="/autograder/results", show_default=True, type=click.Path(path_type=Path))
@click.option("--source", default=str(workspace.ROOT), show_default=True, type=click.Path(path_type=Path),
              help="The reference tree (this package's own parent on Gradescope: /autograder/source).")
@click.option("--homework", default=None, help="Homework id (default: release.json's).")
def run_autograder_command(submission: Path, results: Path, source: Path, homework: str | None) -> None:
    """Grade one submission with Gradescope's paths; always writes RESULTS/results.json.

    \b
    Examples:
      python -m grading run-autograder            # on Gradescope, from run_autograder
      python -m grading run-autograder --submission sub/ --results out/ --homework kaist-a4
    """
    res = run_autograder(submission, results, source, homework)
    click.echo(f"score {res.get('score', 0)}; wrote {results / 'results.json'}")
