"""common.cli.user_errors: one line for domain errors, the traceback for errors in student code or with --debug."""

import importlib.util
import textwrap

import click
import pytest
from click.testing import CliRunner

from common.cli import CONTEXT_SETTINGS, UserError, solution_spans, student_frame, user_errors

STUDENT = '''
def region_step(x):
    """A homework function: validation outside the region, the student's math inside."""
    if x < 0:
        raise ValueError("x must be >= 0")  # our validation: one line
    # TODO: y = the square root of x
    # BEGIN SOLUTION demo-sqrt
    y = int("not a number") if x == 7 else x ** 0.5  # a student bug for x = 7
    # END SOLUTION
    return y


def helper(x):
    return int(x)
'''


@pytest.fixture(scope="module")
def homework(tmp_path_factory):
    path = tmp_path_factory.mktemp("hw") / "hw_demo.py"
    path.write_text(textwrap.dedent(STUDENT))
    spec = importlib.util.spec_from_file_location("hw_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(homework):
    @click.command(context_settings=CONTEXT_SETTINGS)
    @click.option("--x", type=int, required=True)
    @click.option("--bad_input", is_flag=True)
    @user_errors
    def main(x, bad_input):
        """Demo."""
        if bad_input:
            raise UserError("bad   input\nspread over lines")
        if x == 99:
            homework.helper("ninety-nine")  # our own code: a ValueError outside any region
        click.echo(f"y={homework.region_step(x)}")

    return main


def test_solution_spans_and_student_frame(homework):
    spans = solution_spans(homework.__file__)
    assert [(name, last - first) for name, first, last in spans] == [("demo-sqrt", 2)]
    with pytest.raises(ValueError) as info:
        homework.region_step(7)
    region, filename, line = student_frame(info.value.__traceback__)
    assert region == "demo-sqrt" and filename == homework.__file__ and spans[0][1] < line < spans[0][2]
    with pytest.raises(ValueError) as info:
        homework.region_step(-1)
    assert student_frame(info.value.__traceback__) is None  # raised outside the region


def test_domain_errors_stay_one_line(homework):
    main = command(homework)
    for args, message in ((["--x", "-1"], "Error: x must be >= 0"), (["--x", "99"], "Error: invalid literal"),
                          (["--x", "1", "--bad_input"], "Error: bad input spread over lines")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(message) and "Traceback" not in result.output
    ok = CliRunner().invoke(main, ["--x", "4"])
    assert ok.exit_code == 0 and ok.output == "y=2.0\n"


def test_error_in_student_code_keeps_its_traceback(homework):
    result = CliRunner().invoke(command(homework), ["--x", "7"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)  # not turned into "Error: ..."
    notes = getattr(result.exception, "__notes__", ["demo-sqrt"])  # add_note exists from Python 3.11
    assert any("demo-sqrt" in note for note in notes)


def test_debug_shows_every_traceback(homework):
    main = command(homework)
    result = CliRunner().invoke(main, ["--x", "-1", "--debug"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    result = CliRunner().invoke(main, ["--x", "1", "--bad_input", "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.output and "raise UserError" in result.output
    assert result.output.rstrip().splitlines()[-1] == "Error: bad input spread over lines"
    assert "--debug" in CliRunner().invoke(main, ["-h"]).output
