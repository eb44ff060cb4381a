"""click helpers shared by every entry point.

Bad input must end in one clear line and exit code 2, never a traceback. Domain code raises
:class:`UserError` (or a plain ``ValueError`` / ``FileNotFoundError``) and the command is wrapped in
:func:`user_errors`, which prints ``Error: <message>`` and exits with status 2. Two exceptions keep their
traceback, because the one line would hide a bug: an error raised while a student's solution region runs
(a line between ``# BEGIN SOLUTION`` and ``# END SOLUTION``), and any error when the command runs with ``--debug``.
Every command takes ``-h`` as well as ``--help`` (:data:`CONTEXT_SETTINGS`).
"""

from __future__ import annotations

import functools
import linecache
import math
import re
import traceback
import types
from collections.abc import Callable
from typing import Any

import click
import torch

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 119}
_BEGIN = re.compile(r"^\s*# BEGIN SOLUTION\s+(\S+)")
_END = re.compile(r"^\s*# END SOLUTION\b")


class UserError(click.ClickException):
    """A problem with the user's input: printed as ``Error: <message>``, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


@functools.lru_cache(maxsize=256)
def solution_spans(filename: str) -> tuple[tuple[str, int, int], ...]:
    """``(region id, first line, last line)`` of each ``# BEGIN SOLUTION <id>`` ... ``# END SOLUTION`` in a file."""
    spans, open_id, start = [], None, 0
    for number, line in enumerate(linecache.getlines(filename), start=1):
        if (begin := _BEGIN.match(line)) and open_id is None:
            open_id, start = begin.group(1), number
        elif _END.match(line) and open_id is not None:
            spans.append((open_id, start, number))
            open_id = None
    return tuple(spans)


def student_frame(tb: types.TracebackType | None) -> tuple[str, str, int] | None:
    """``(region id, file, line)`` of the innermost traceback frame that runs a line of a solution region."""
    found = None
    while tb is not None:
        filename, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        for region, first, last in solution_spans(filename):
            if first < line < last:
                found = (region, filename, line)
        tb = tb.tb_next
    return found


def _keep_traceback(err: BaseException, debug: bool) -> bool:
    """Whether ``err`` must reach the user with its traceback (``--debug`` or raised by student code)."""
    if debug:
        return True
    where = student_frame(err.__traceback__)
    if where is not None and hasattr(err, "add_note"):  # Python >= 3.11
        err.add_note(f"(raised inside solution region {where[0]!r}, {where[1]}:{where[2]}: the traceback is shown "
                     "because this is probably a bug in that region, not a bad input)")
    return where is not None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command body so domain exceptions become one-line usage errors.

    Also adds ``--debug`` to the command: with it every error keeps its traceback. An error raised by a line
    of a solution region keeps its traceback too (it is the student's bug, not a bad input).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            if debug:  # still the one line (and exit code 2), after the traceback that led to it
                click.echo(traceback.format_exc(), err=True, nl=False)
            raise
        except (ValueError, OSError) as err:
            if _keep_traceback(err, debug):
                raise
            if isinstance(err, FileNotFoundError):
                raise UserError(f"file not found: {err.filename}" if err.filename else str(err) or "file not found"
                                ) from err
            raise UserError(str(err) or type(err).__name__) from err

    return click.option("--debug", is_flag=True, default=False,
                        help="Show the full traceback of an error instead of one line.")(wrapper)


def parse_int_list(text: str) -> list[int]:
    """Parse ``"0-3,7"`` into ``[0, 1, 2, 3, 7]`` (StyleGAN's seed syntax)."""
    values: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f"bad range {part!r}: end is before start")
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            values.append(int(part))
        else:
            raise ValueError(f"cannot parse {part!r} as an integer or a range like 0-15")
    if not values:
        raise ValueError("expected at least one integer, e.g. 0-15 or 1,2,3")
    return values


class IntListType(click.ParamType):
    """click type for ``--seeds 0-15,20``."""

    name = "INTS"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return parse_int_list(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


class CommaChoice(click.ParamType):
    """``a,b,c`` where every item is one of ``choices`` (case-insensitive, like ``click.Choice``); a list."""

    name = "LIST"

    def __init__(self, choices: tuple[str, ...] | list[str]):
        self.choice = click.Choice(list(choices), case_sensitive=False)

    def get_metavar(self, param, ctx=None) -> str:  # click >= 8.2 passes ctx
        return "[" + ",".join(self.choice.choices) + "]"

    def convert(self, value: Any, param, ctx) -> list[str]:
        if isinstance(value, list):
            return value
        items = [item.strip() for item in str(value).split(",") if item.strip()]
        if not items:
            self.fail("expected a comma-separated list", param, ctx)
        try:
            values = [self.choice.convert(item, param, ctx) for item in items]
        except click.BadParameter:
            bad = [i for i in items if i.lower() not in {c.lower() for c in self.choice.choices}]
            self.fail(f"{', '.join(map(repr, bad))}: choose from {', '.join(self.choice.choices)}", param, ctx)
        return list(dict.fromkeys(values))  # order kept, duplicates dropped


class CommaInts(click.ParamType):
    """``1,10``: comma-separated integers >= ``min``; a list."""

    name = "INTS"

    def __init__(self, min: int = 1):
        self.min = min

    def convert(self, value: Any, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        items = [item.strip() for item in str(value).split(",") if item.strip()]
        try:
            numbers = [int(item) for item in items]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not numbers or min(numbers) < self.min:
            self.fail(f"{value!r}: expected integers >= {self.min}", param, ctx)
        return list(dict.fromkeys(numbers))


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and +-inf (a plain ``FloatRange`` lets NaN through any bound).

    >>> @click.option("--lr", type=finite(min=0, min_open=True))
    """

    name = "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def finite(min: float | None = None, max: float | None = None, min_open: bool = False,
           max_open: bool = False) -> FiniteFloat:
    """A finite, range-checked float option type; every float option of every CLI uses one."""
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)


class OneLineCommand(click.Command):
    """A click command whose bad option values print as one ``Error:`` line, exit code 2 (no usage block).

    >>> @click.command(cls=OneLineCommand, context_settings=CONTEXT_SETTINGS)
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:
            raise UserError(err.format_message()) from err


def check_finite(x: torch.Tensor | float, what: str) -> None:
    """Raise a one-line error when optimisation or sampling produced NaN or inf."""
    ok = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else math.isfinite(x)
    if not ok:
        raise UserError(f"{what} became NaN or infinite; try a lower learning rate or --precision fp32")
