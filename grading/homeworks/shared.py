"""Building blocks the homework specs share: CLIP-score bands, toy-band placeholders and submission items.

Bands are half-open and gap-free (``grading.spec.Bands``): a score s earns the fraction of the first band whose
lower edge s reaches, and 0 below the last one. The handouts' tables leave holes (KAIST's older "< 0.22 -> 0" next
to ">= 0.26 -> half"; see ``shared/reference/grading.md`` (e)); here every score falls in exactly one band.
"""

from __future__ import annotations

from grading.spec import Band, Bands, Item

CLIP = "clip-vit-b-32"  # OpenAI ViT-B/32, raw cosine, mean over prompts: the handouts' eval.py
TOY_CLIP = "toy-clip"  # the embedded toy world's CLIP
# Placeholder edges above the cosine's maximum (1): an uncalibrated toy band never awards points.
_UNREACHABLE = 2.0


def kaist_bands() -> Bands:
    """KAIST CS492D A4 / A5 README "Grading": >= 0.28 full, [0.26, 0.28) half, below 0.26 nothing."""
    return Bands(CLIP, (Band(0.28, 1.0), Band(0.26, 0.5)))


def nycu_bands(points: float) -> Bands:
    """NYCU Lab 3 "CLIP Score Thresholds": >= 0.28 full; [0.26, 0.28) 15/20 or 25/30; [0.24, 0.26) 10/20 or 20/30."""
    partial = {20: (15, 10), 30: (25, 20)}[int(points)]
    return Bands(CLIP, (Band(0.28, 1.0), Band(0.26, partial[0] / points), Band(0.24, partial[1] / points)))


def toy_bands(real: Bands) -> Bands:
    """The toy-world twin of ``real``: same fractions, metric ``toy-clip``, edges left for the release to calibrate.

    The placeholder edges (2, 2 - 1e-3, ...) lie above any cosine, so uncalibrated toy bands award nothing.
    """
    edges = [_UNREACHABLE - 1e-3 * k for k in range(len(real.bands))]
    return Bands(TOY_CLIP, tuple(Band(e, b.fraction) for e, b in zip(edges, real.bands)), calibrated=True)


def code_item(package: str, what: str = "") -> Item:
    """The student's code: every module of ``package`` (the region files among them)."""
    return Item(f"{package}/*.py", f"code: the {package} package{what}")


def result_items(folder: str, task: str, images: str = "*.png", required: bool = True,
                 eval_json: bool = True) -> tuple[Item, ...]:
    """A result folder: its images and (for CLIP-scored tasks) the ``eval.json`` the evaluation writes there."""
    items = (Item(f"{folder}/{images}", f"{task}: generated images in {folder}/", required),)
    if eval_json:
        items += (Item(f"{folder}/eval.json", f"{task}: CLIP evaluation {folder}/eval.json", required),)
    return items
