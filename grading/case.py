"""Graded cases and catalogued mistakes: the data a homework's case module (``grading/cases/*.py``) declares.

A case's ``run(seed)`` executes in the sandboxed worker, inside a tree holding the student's grafted region bodies;
it builds its inputs from ``seed`` alone, calls the student's function and returns named tensors. The trusted
parent runs the same case on the reference tree, compares the two, and never imports student code itself.
A :class:`Mistake` is a known wrong region body; the parent runs the cases on the reference with that body
grafted in, so a student whose outputs match the mistake's is told which mistake it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Outputs = dict[str, torch.Tensor]
DEFAULT_PARTIAL = ((1e-4, 1.0), (1e-2, 0.5))  # max relative error -> fraction of the points


@dataclass(frozen=True)
class Case:
    """One seeded comparison of a student function against the reference.

    ``partial``: (max relative error, fraction) pairs, tightest first; the error is
    max |got - expected| / (max |expected| + atol), taken over every returned tensor.
    """

    id: str  # unique within its module, e.g. "sds/b3-t-grid"
    points: float
    run: Callable[[int], Outputs]
    title: str = ""  # how the test reads on Gradescope, e.g. "SDS: gradient vs reference (B=3, t=20/500/980)"
    visibility: str = "after_published"  # public cases are "visible"
    rtol: float = 1e-4
    atol: float = 1e-6
    partial: tuple[tuple[float, float], ...] = DEFAULT_PARTIAL
    feedback: str = ""  # what the case checks, shown when it fails
    timeout_s: float = 120.0
    # Runs in the trusted parent on the loaded outputs of both sides before they are compared: verdicts (flags,
    # counts, properties) are computed here, never in the worker, where student code could fake them.
    derive: Callable[[Outputs], Outputs] | None = None
    end_to_end: EndToEnd | None = None  # set: scored by the toy bands in the parent (grading.e2e), not vs reference


@dataclass(frozen=True)
class Mistake:
    """A catalogued wrong answer: ``body`` replaces region ``region``; ``caught_by`` are the case ids that fail."""

    id: str
    region: str
    body: str  # region body text, indented as in the reference file
    feedback: str  # names the mistake, e.g. "PDS with the opposite sign (z_src - z_tgt)"
    caught_by: tuple[str, ...]


@dataclass(frozen=True)
class EndToEnd:
    """What makes a :class:`Case` end-to-end (``Case.end_to_end``): a short toy run of the student's method whose
    images the trusted parent scores itself (:mod:`grading.e2e`), instead of comparing them with the reference.

    ``run(seed)`` returns ``{"images": [K, 3, S, S]}`` in [-1, 1], image k made for ``captions[k]``; the parent
    scores them with ``metric`` against the captions it knows from here and maps the score through the task's
    calibrated toy bands. ``regions``: the regions the run exercises (the case belongs to the task grading them);
    ``results``: the submission folder with the student's own images and ``eval.json`` of the method (for the
    reported-score checks). A ``role="baseline"`` case is the blank method (no update: the starting images), run
    only when the toy bands are calibrated.
    """

    method: str  # e.g. "sds"
    captions: tuple[str, ...]
    regions: tuple[str, ...]
    results: str = ""  # e.g. "outputs/sds"
    metric: str = "toy-clip"
    image_size: int = 64
    role: str = "graded"  # "graded" or "baseline"
    app: str = "default"  # how eval.json names the result folder's images (common.eval: "wide_images" crops)
