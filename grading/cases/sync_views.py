"""kaist-a5 Task 2 cases: the rotation views of ambiguous images (Visual Anagrams, Geng et al. 2024, Sec. 3.2).

Handout Task 2: ``view()`` returns the image rotated 90 degrees clockwise and ``inverse_view()`` rotates it back
counter-clockwise. Here ``Rotate(k)`` turns by k quarter turns clockwise (as displayed, y down), exactly: a view is
a pixel permutation of x_t, eps and x0_hat, never an interpolation. Cases: the handout's rotate_cw, every k on
integer images (any exact rotation passes, an interpolating one does not), round trips, float16 batches.
"""

from __future__ import annotations

import torch

from grading.case import Case, Mistake
from grading.cases.sync_inputs import Outputs, generator, output, randint, randn

_NAMES = {0: "identity", 1: "rotate_cw", 2: "rotate_180", 3: "rotate_ccw"}


def _rotate(k: int):
    from synchronization.views import Rotate

    return Rotate(k, _NAMES[k])


def _image(case_id: str, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = generator(seed, case_id)
    size = randint(g, 5, 12)
    return randn(g, randint(g, 1, 3), randint(g, 1, 4), size, size, dtype=dtype)  # [B, C, S, S]


def _cw_view(seed: int) -> Outputs:
    return {"view": output(_rotate(1).view(_image("rotate/cw-view", seed)))}


def _cw_inverse(seed: int) -> Outputs:
    return {"inverse_view": output(_rotate(1).inverse_view(_image("rotate/cw-inverse", seed)))}


def _quarter_turns(seed: int) -> Outputs:
    g = generator(seed, "rotate/quarter-turns")
    size = randint(g, 4, 9)
    x = torch.randperm(3 * size * size, generator=g).view(3, size, size)  # int64 [C, S, S]: shows the permutation
    out = {}
    for k in range(4):
        out[f"view_k{k}"] = output(_rotate(k).view(x))
        out[f"inverse_view_k{k}"] = output(_rotate(k).inverse_view(x))
    return out


def _round_trip(seed: int) -> Outputs:
    x = _image("rotate/round-trip", seed)
    out = {}
    for k in (1, 2, 3):
        rotate = _rotate(k)
        out[f"inverse_of_view_k{k}"] = output(rotate.inverse_view(rotate.view(x)))  # = x
        out[f"view_of_inverse_k{k}"] = output(rotate.view(rotate.inverse_view(x)))  # = x
    cw = _rotate(1)
    out["cw_twice_vs_180"] = output(cw.view(cw.view(x)) - _rotate(2).view(x))  # = 0
    return out


def _fp16(seed: int) -> Outputs:
    x = _image("rotate/fp16-batch", seed, torch.float16)
    return {f"{kind}_k{k}": output(getattr(_rotate(k), kind)(x)) for k in (1, 3) for kind in ("view", "inverse_view")}


_CW = "Rotate.view turns x [..., H, W] by k quarter turns clockwise (as displayed, y pointing down), exactly"
_CCW = "Rotate.inverse_view undoes view: k quarter turns counter-clockwise"

CASES: tuple[Case, ...] = (
    Case("rotate/cw-view", 2.0, _cw_view, visibility="visible",
         title="rotate_cw view: 90 degrees clockwise vs reference",
         feedback=_CW + "; the handout's rotate_cw is one quarter turn clockwise."),
    Case("rotate/cw-inverse", 2.0, _cw_inverse, visibility="visible",
         title="rotate_cw inverse_view: 90 degrees counter-clockwise vs reference",
         feedback=_CCW + "; for rotate_cw that is one quarter turn counter-clockwise."),
    Case("rotate/quarter-turns", 2.5, _quarter_turns,
         title="Rotate views for k = 0, 1, 2, 3 quarter turns on an integer image (exact permutations)",
         feedback=_CW + "; " + _CCW + ". Integer inputs check every k exactly (no interpolation)."),
    Case("rotate/round-trip", 2.0, _round_trip,
         title="Rotate round trips: inverse_view(view(x)) = view(inverse_view(x)) = x, two cw turns = 180",
         feedback="inverse_view must undo view exactly for every k; two clockwise quarter turns make a half turn."),
    Case("rotate/fp16-batch", 1.5, _fp16,
         title="Rotate views on a float16 batch (k = 1 and 3)",
         feedback=_CW + "; views act on any dtype and batch shape without a round trip through PIL."),
)

_VIEWED = ("rotate/cw-view", "rotate/quarter-turns", "rotate/round-trip", "rotate/fp16-batch")
_INVERTED = ("rotate/cw-inverse", "rotate/quarter-turns", "rotate/round-trip", "rotate/fp16-batch")

MISTAKES: tuple[Mistake, ...] = (
    Mistake("view-ccw", "rotate-view", "        return torch.rot90(x, k=self.k, dims=(-2, -1))\n",
            "view rotates counter-clockwise: torch.rot90 with a positive k turns counter-clockwise, so clockwise "
            "is k = -self.k", _VIEWED),
    Mistake("inverse-equals-view", "rotate-inverse-view", "        return torch.rot90(x, k=-self.k, dims=(-2, -1))\n",
            "inverse_view equals view (rotates clockwise again) instead of undoing it", _INVERTED),
    Mistake("view-transpose", "rotate-view", "        return x.transpose(-2, -1)\n",
            "view transposes the image: a transpose is a reflection; a quarter turn is a transpose plus a flip",
            _VIEWED),
    Mistake("view-ignores-k", "rotate-view", "        return torch.rot90(x, k=-1, dims=(-2, -1))\n",
            "view always turns one quarter clockwise, ignoring self.k (rotate_180 and rotate_ccw use k = 2 and 3)",
            ("rotate/quarter-turns", "rotate/round-trip", "rotate/fp16-batch")),
)
