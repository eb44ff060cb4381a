"""Homework specifications: plain data that the release, check, submit, grade and similarity commands import.

One module per homework under ``grading/homeworks/`` builds a :class:`Homework`; ``grading.homeworks.HOMEWORKS``
lists them by import (no string registry beyond the id the CLI takes).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Band:
    """Scores s >= ``lower`` (and below the next band's lower edge) earn ``fraction`` of the points."""

    lower: float
    fraction: float


@dataclass(frozen=True)
class Bands:
    """Half-open, gap-free score bands of one metric; below the lowest band earns 0.

    ``metric`` names the scorer (``clip-vit-b-32`` raw cosine, ``toy-clip``, ...). Toy bands are calibrated at
    release from the reference solution (``calibrated=True`` marks bands whose edges the release fills in).
    """

    metric: str
    bands: tuple[Band, ...]
    calibrated: bool = False

    def __post_init__(self) -> None:
        edges = [b.lower for b in self.bands]
        if edges != sorted(edges, reverse=True) or len(set(edges)) != len(edges):
            raise ValueError(f"bands of {self.metric} must have strictly decreasing lower edges, got {edges}")

    def fraction(self, score: float) -> float:
        """Fraction of the points for ``score``; NaN or below every band gives 0."""
        for band in self.bands:
            if score >= band.lower:  # False for NaN
                return band.fraction
        return 0.0


@dataclass(frozen=True)
class Task:
    """One graded student task: its regions, points and how it is tested.

    ``cases`` are the dotted modules (under ``grading.cases``) whose seeded cases the sandboxed worker runs for
    this task (one worker per module); ``public_tests`` are repo test files shipped to students; ``fixed`` the
    hyperparameters a student must not change (the grader passes them explicitly).
    """

    id: str
    title: str
    regions: tuple[str, ...]
    points: float
    cases: tuple[str, ...] = ()
    public_tests: tuple[str, ...] = ()
    command: str = ""  # the entry point on the toy default
    real_command: str = ""  # the same on the real model
    fixed: dict[str, object] = field(default_factory=dict)
    bands: Bands | None = None  # end-to-end score bands (CLIP), if this task is scored by one
    toy_bands: Bands | None = None  # the same bands on the toy world (metric ``toy-clip``), calibrated at release
    optional: bool = False  # extra credit (counts above the total, as the handout says)


@dataclass(frozen=True)
class Item:
    """One deliverable of the submission: a path (glob) inside the submission and what it is."""

    pattern: str
    description: str
    required: bool = True
    max_mb: float | None = None


@dataclass(frozen=True)
class Homework:
    """One homework: handout, shipped packages, tasks, deliverables and integrity rules."""

    id: str
    title: str
    handout: str  # file name under shared/seeds (the handout text this spec follows)
    packages: tuple[str, ...]  # assignment packages shipped (``common`` always ships)
    tasks: tuple[Task, ...]
    items: tuple[Item, ...]
    zip_name: str  # e.g. "{name}_{sid}.zip" or "{sid}_lab3.zip"
    size_cap_mb: float | None = None  # cap on the submitted zip
    zip_root: str = ""  # folder inside the zip that holds the items (NYCU: "submission"); "" = the zip root
    strip_functions: tuple[str, ...] = ()  # ``module.function`` helpers that hand over an answer: stubbed in release
    forbidden_calls: tuple[str, ...] = ()  # dotted names a region must not call (flagged by check and grade)
    missing_item_penalty: float = 0.1  # fraction of the total lost per missing item

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"{self.id} has no task {task_id!r}; tasks: {', '.join(t.id for t in self.tasks)}")

    @property
    def region_ids(self) -> tuple[str, ...]:
        return tuple(r for t in self.tasks for r in t.regions)

    @property
    def total_points(self) -> float:
        return sum(t.points for t in self.tasks if not t.optional)
