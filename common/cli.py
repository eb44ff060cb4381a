"""click helpers shared by every entry point.

Bad input must end in one clear line and exit code 2, never a traceback. Domain code raises
:class:`UserError` (or a plain ``ValueError`` / ``FileNotFoundError``) and the command is wrapped in
:func:`user_errors`, which prints ``Error: <message>`` and exits with status 2.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import click
import torch


class UserError(click.ClickException):
    """A problem with the user's input: printed as ``Error: <message>``, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command body so domain exceptions become one-line usage errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except FileNotFoundError as err:
            message = f"file not found: {err.filename}" if err.filename else str(err) or "file not found"
            raise UserError(message) from err
        except (ValueError, OSError) as err:
            raise UserError(str(err) or type(err).__name__) from err

    return wrapper


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


def check_finite(x: torch.Tensor | float, what: str) -> None:
    """Raise a one-line error when optimisation or sampling produced NaN or inf."""
    ok = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else math.isfinite(x)
    if not ok:
        raise UserError(f"{what} became NaN or infinite; try a lower learning rate or --precision fp32")
