"""kaist-a5 Task 3 (optional) cases: ``inner_rotation_index``, the inner-circle rotation of ambiguous images.

Handout Task 3 / Visual Anagrams' inner-circle view: the disc of radius 3/8 S centred on the true image centre
((S - 1) / 2, (S - 1) / 2) turns clockwise by the angle, nearest neighbour, and the border stays put. The index is
flat: ``out.flatten()[q] = x.flatten()[index[q]]``, the source of q being the nearest pixel of the inverse rotation.
Cases gather a random image through the index for sizes {8, 9, 64} x angles {90, 180, 45} and for a seeded even and
odd size. At 45 degrees (and 135, -45) on an even size the pixels on the two diagonals have a source exactly half-way
between two pixels, where any rounding is right, so those pixels are left out of the comparison.
"""

from __future__ import annotations

import torch

from grading.case import Case, Mistake
from grading.cases.sync_inputs import Outputs, generator, output, randint, randn


def _has_ties(size: int, angle: float) -> bool:
    return size % 2 == 0 and angle % 90 == 45


def _inner(case_id: str, angle: float | None = None, sizes: tuple[int, ...] = (8, 9, 64)):
    def run(seed: int) -> Outputs:
        from synchronization.views import inner_rotation_index

        g = generator(seed, case_id)
        turn, dims = angle, {f"s{s}": s for s in sizes}
        if angle is None:  # seeded: an even and an odd size, one of five angles
            turn = (90.0, 270.0, -90.0, 135.0, -45.0)[randint(g, 0, 4)]
            dims = {"even": 2 * randint(g, 5, 16), "odd": 2 * randint(g, 5, 16) + 1}
        out = {}
        for key, size in dims.items():
            x = randn(g, size * size)  # a random image, flat [S*S]
            rotated = x[inner_rotation_index(size, turn)].reshape(size, size)  # out.flatten()[q] = x[index[q]]
            if _has_ties(size, turn):
                i = torch.arange(size)
                diagonals = (i.view(-1, 1) == i.view(1, -1)) | (i.view(-1, 1) + i.view(1, -1) == size - 1)
                rotated = rotated.masked_fill(diagonals, 0.0)  # half-way sources: either neighbour is right
            out[key] = output(rotated)
        return out

    return run


_INNER = ("inner_rotation_index: inside circle_mask the source is the nearest pixel of the inverse (clockwise) "
          "rotation about ((S - 1) / 2, (S - 1) / 2); outside the disc every pixel is its own source")

CASES: tuple[Case, ...] = (
    Case("inner-rotation/90", 1.25, _inner("inner-rotation/90", 90.0), visibility="visible",
         title="inner_rotation_index at 90 degrees, sizes 8, 9 and 64 (an exact permutation, border fixed)",
         feedback=_INNER + "; at 90 degrees the disc turns exactly a quarter clockwise."),
    Case("inner-rotation/180", 1.0, _inner("inner-rotation/180", 180.0),
         title="inner_rotation_index at 180 degrees, sizes 8, 9 and 64",
         feedback=_INNER + "; at 180 degrees the disc is turned upside down, the border stays."),
    Case("inner-rotation/45", 1.5, _inner("inner-rotation/45", 45.0),
         title="inner_rotation_index at 45 degrees (nearest neighbour, many-to-one), sizes 8, 9 and 64",
         feedback=_INNER + "; at 45 degrees the nearest source pixel is rounded (pixels exactly half-way on even "
                           "sizes are not compared)."),
    Case("inner-rotation/seeded", 1.25, _inner("inner-rotation/seeded"),
         title="inner_rotation_index on a random even and odd size and angle (90, 270, -90, 135 or -45)",
         feedback=_INNER + "; negative angles turn counter-clockwise."),
)

_INNER_REF = (
    "    mask = circle_mask(size, radius)\n"
    "    c = {centre}\n"
    "    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),\n"
    "                            indexing=\"ij\")\n"
    "    theta = math.radians(angle_deg)\n"
    "    cos, sin = round(math.cos(theta), 12), round(math.sin(theta), 12)\n"
    "    dx, dy = xs - c, ys - c\n"
    "    src_x = (c + {src_x}).round().clamp(0, size - 1).long()\n"
    "    src_y = (c + {src_y}).round().clamp(0, size - 1).long()\n"
    "    identity = torch.arange(size * size).view(size, size)\n"
    "    return {ret}\n"
)
_INNER_OK = {"centre": "(size - 1) / 2", "src_x": "dx * cos + dy * sin", "src_y": "- dx * sin + dy * cos",
             "ret": "torch.where(mask, src_y * size + src_x, identity).flatten()"}
_ALL_INNER = ("inner-rotation/90", "inner-rotation/180", "inner-rotation/45", "inner-rotation/seeded")

MISTAKES: tuple[Mistake, ...] = (
    Mistake("inner-border-rotated", "inner-rotation-index",
            _INNER_REF.format(**{**_INNER_OK, "ret": "(src_y * size + src_x).flatten()"}),
            "the inner rotation also turns the border: outside circle_mask every pixel must stay where it is",
            _ALL_INNER),
    Mistake("inner-transposed", "inner-rotation-index",
            _INNER_REF.format(**{**_INNER_OK, "ret": "torch.where(mask, src_x * size + src_y, identity).flatten()"}),
            "the inner rotation index is transposed: the flat index of row y, column x is y * size + x", _ALL_INNER),
    Mistake("inner-ccw", "inner-rotation-index",
            _INNER_REF.format(**{**_INNER_OK, "src_x": "dx * cos - dy * sin", "src_y": "dx * sin + dy * cos"}),
            "the inner disc turns counter-clockwise: the source of a destination pixel is the inverse (clockwise) "
            "rotation's preimage", ("inner-rotation/90", "inner-rotation/45", "inner-rotation/seeded")),
    Mistake("inner-integer-centre", "inner-rotation-index",
            _INNER_REF.format(**{**_INNER_OK, "centre": "size // 2"}),
            "the inner rotation turns about pixel S // 2 instead of the true centre (S - 1) / 2 (wrong on even sizes)",
            _ALL_INNER),
)
