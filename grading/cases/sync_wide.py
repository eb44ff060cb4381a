"""kaist-a5 ``task1-wide``: the case module the spec's Task 1 names (``grading.cases.sync_wide``).

The spec (``grading/homeworks/kaist_a5.py``) grades Task 0's phi / psi, the wide-image maps f / g and the one region
of ``one_step_process`` together as Task 1 (10 points), so this module joins their case modules: ``sync_core``
(phi, psi: 4 points), ``sync_windows`` (f, g: 4.5) and ``sync_step`` (the synchronized variable: 1.5). Each part
runs on oracles for the others, so one wrong region fails its own cases only.
"""

from __future__ import annotations

from grading.case import Case, Mistake
from grading.cases import sync_core, sync_step, sync_windows

CASES: tuple[Case, ...] = sync_core.CASES + sync_windows.CASES + sync_step.CASES
MISTAKES: tuple[Mistake, ...] = sync_core.MISTAKES + sync_windows.MISTAKES + sync_step.MISTAKES
