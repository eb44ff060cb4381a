"""The ``python -m grading`` command group. Each command lives in its own module and is added here by import."""

from __future__ import annotations

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 119}


@click.group(context_settings=CONTEXT)
def main() -> None:
    """Release starter code, check and submit homework, grade submissions, find similar submissions.

    \b
    Examples:
      python -m grading release kaist-a4 --out dist/kaist-a4
      python -m grading check kaist-a4
      python -m grading submit kaist-a4 --name "Kim Minji" --sid 20261234
      python -m grading grade kaist-a4 submissions/*.zip --out graded/kaist-a4
      python -m grading similarity kaist-a4 submissions/ --out similarity/kaist-a4
    """


# Commands are registered below, one import each (the modules define click commands).
from grading.similarity import similarity  # noqa: E402

main.add_command(similarity)

from grading.release import release  # noqa: E402

main.add_command(release)

from grading.check import check  # noqa: E402

main.add_command(check)

from grading.submit import submit  # noqa: E402

main.add_command(submit)

from grading.batch import grade_command  # noqa: E402

main.add_command(grade_command)

from grading.autograder import run_autograder_command  # noqa: E402

main.add_command(run_autograder_command)
