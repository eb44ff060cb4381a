"""The homework specs, one module per handout, listed by import: ``HOMEWORKS[id]`` or :func:`get_homework`.

Conventions every spec follows (the release, check, submit and grade commands rely on them):

* ``Task.regions`` are solution-region ids of the homework's ``packages``; a region belongs to at most one task.
  A task without regions is graded by hand (a report, a free-response answer) or from its results alone.
* ``Task.public_tests`` are pytest node ids (``tests/<pkg>/test_x.py::test_name[param]``) of fast repo tests that
  fail on the raw starter and pass on the reference; the release ships their files (with conftests and helpers)
  at the same paths, and ``check`` runs them from the tree's root.
* ``Item.pattern`` is a glob relative to the student's tree; in the zip the same path sits under
  ``Homework.zip_root``. ``zip_name`` has ``{name}`` / ``{sid}`` fields (see ``grading.submit.zip_file_name``).
* ``forbidden_calls`` entries are dotted names: an exact function, a module prefix (``common.ddpm`` covers every
  ``common.ddpm.*``) or an fnmatch pattern (``common.diffaugment.*cutout*``); see ``grading.scan``.
"""

from __future__ import annotations

from pathlib import Path

from common.cli import UserError
from grading.homeworks import kaist_a4, kaist_a5, nycu_lab3, umich_hw5_diffusion, umich_hw5_gan
from grading.spec import Homework, Task

HOMEWORKS: dict[str, Homework] = {hw.id: hw for hw in (kaist_a4.HOMEWORK, nycu_lab3.HOMEWORK, umich_hw5_gan.HOMEWORK,
                                                        umich_hw5_diffusion.HOMEWORK, kaist_a5.HOMEWORK)}


def get_homework(hw_id: str) -> Homework:
    """The spec of ``hw_id``; a one-line :class:`UserError` (exit 2) naming the valid ids otherwise."""
    try:
        return HOMEWORKS[hw_id]
    except KeyError:
        raise UserError(f"unknown homework {hw_id!r}; choose one of: {', '.join(HOMEWORKS)}") from None


def node_file(node_id: str) -> str:
    """``tests/x/test_y.py::test_z[a-b]`` -> ``tests/x/test_y.py``."""
    return node_id.split("::", 1)[0]


def public_test_files(hw: Homework) -> tuple[str, ...]:
    """The distinct test files of every task's public tests, sorted."""
    return tuple(sorted({node_file(n) for t in hw.tasks for n in t.public_tests}))


def task_of_region(hw: Homework, region_id: str) -> Task | None:
    """The task that grades ``region_id`` (None for a shipped region that is not part of the homework)."""
    return next((t for t in hw.tasks if region_id in t.regions), None)


def items_root(root: Path, hw: Homework) -> Path:
    """Where the items of an unpacked submission lie: ``root/<zip_root>`` when it has that folder, else ``root``."""
    inner = root / hw.zip_root.strip("/") if hw.zip_root.strip("/") else root
    return inner if inner.is_dir() else root
