"""Gradescope ``results.json``: built and written only by the trusted parent, after every worker is dead.

Follows the Gradescope autograder specification (see shared/reference/grading.md, section b.1): the top-level
``score`` is always explicit (it overrides the sum of the tests), ``output_format`` is ``md``, the autograder's
stdout is ``hidden`` from students, hidden cases are ``after_published`` (a ``hidden`` test would hide the
student's total), and the file is written by ``common.runs.write_json_atomic`` (strict JSON, temporary file +
rename), so a crash never leaves half a file and a NaN score is an error here, not a malformed file on Gradescope.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from common.runs import write_json_atomic

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


@dataclass(frozen=True)
class TestResult:
    """One Gradescope test. ``status`` None: "passed" iff score >= max_score."""

    __test__ = False  # not a pytest test class

    name: str
    number: str = ""
    score: float = 0.0
    max_score: float = 0.0
    status: str | None = None
    output: str = ""
    tags: tuple[str, ...] = ()
    visibility: str = "after_published"

    def __post_init__(self) -> None:
        if self.visibility not in VISIBILITIES:
            raise ValueError(f"test {self.name!r}: visibility must be one of {VISIBILITIES}, got {self.visibility!r}")
        if self.status not in (None, "passed", "failed"):
            raise ValueError(f"test {self.name!r}: status must be 'passed' or 'failed', got {self.status!r}")
        for what in ("score", "max_score"):
            if not math.isfinite(getattr(self, what)):
                raise ValueError(f"test {self.name!r}: {what} must be finite, got {getattr(self, what)}")

    def to_json(self) -> dict:
        status = self.status or ("passed" if self.score >= self.max_score else "failed")
        out = {"name": self.name, "score": round(float(self.score), 6), "max_score": round(float(self.max_score), 6),
               "status": status, "output": self.output, "tags": list(self.tags), "visibility": self.visibility}
        if self.number:
            out["number"] = self.number
        return out


def md_code(text: str) -> str:
    """``text`` in a fenced code block whose fence is longer than any backtick run inside (student text is inert)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}\n{text}\n{fence}"


def _leaderboard(entries: list[dict] | None) -> list[dict]:
    out = []
    for e in entries or []:
        order = e.get("order", "desc")
        if order not in ("asc", "desc") or not isinstance(e.get("name"), str):
            raise ValueError(f"leaderboard entry needs a name and order asc/desc, got {e!r}")
        value = e.get("value")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"leaderboard value of {e['name']!r} must be finite, got {value}")
        out.append({"name": e["name"], "value": value, "order": order})
    return out


def results_payload(tests: list[TestResult], *, extra_data: dict | None = None, output: str = "",
                    execution_time: float = 0.0, score: float | None = None,
                    leaderboard: list[dict] | None = None) -> dict:
    """The results.json object. ``score`` None: the sum of the test scores, floored at 0."""
    total = max(0.0, sum(t.score for t in tests)) if score is None else float(score)
    if not math.isfinite(total):
        raise ValueError(f"results score must be finite, got {total}")
    payload = {"score": round(total, 6), "execution_time": round(float(execution_time), 2), "output": output,
               "output_format": "md", "test_output_format": "md", "stdout_visibility": "hidden",
               "extra_data": extra_data or {}, "tests": [t.to_json() for t in tests]}
    if leaderboard:
        payload["leaderboard"] = _leaderboard(leaderboard)
    return payload


def write_results(path: Path, tests: list[TestResult], *, extra_data: dict | None = None, output: str = "",
                  execution_time: float = 0.0, score: float | None = None,
                  leaderboard: list[dict] | None = None) -> dict:
    """Write ``results.json`` atomically and return the payload written."""
    payload = results_payload(tests, extra_data=extra_data, output=output, execution_time=execution_time,
                              score=score, leaderboard=leaderboard)
    write_json_atomic(path, payload)
    return payload


def error_results(message: str, detail: str = "") -> list[TestResult]:
    """The tests of a run that crashed: one visible "Autograder error" test with score 0 (``detail`` in a block)."""
    text = message + (f"\n\n{md_code(detail)}" if detail else "")
    return [TestResult(name="Autograder error", number="0", score=0.0, max_score=0.0, status="failed",
                       output=text, visibility="visible")]
