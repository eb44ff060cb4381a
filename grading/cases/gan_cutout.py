"""Hidden cases for umich-hw5-gan Task 4 (Sec. 6): region ``diffaugment-cutout`` (``gan.augment.rand_cutout``).

Two kinds of case. The ``exact-*`` cases compare the output with the reference for the draws the docstring fixes
(four ``torch.rand(B, generator=..., dtype=float64)`` for h, w, top, left), B = 1 (several calls), 3 and 8, on
odd and non-square images. The property cases hold for any correct random-size cutout, whatever its draws. Their
``run`` (in the sandboxed worker) returns only raw tensors: the input images, the cutouts, the gradient. Their
``derive`` (in the trusted parent, :func:`grading.compare.score_case`) reads each image's zeroed box back from the
output (on images > 0) and computes 0/1 flags there, 1 where the property holds, never in the worker, where a
student region that patches ``torch`` could fake them; it also passes the input images on, so they are compared
with the reference's and cannot be swapped for images that make a wrong cutout look right. The flags: the
zeros form one box per image (every channel, nothing else touched), box sides within
[min_ratio, max_ratio] of H and W, sizes that vary, boxes that differ inside a batch, a gradient of ones outside
the box and zeros inside, the same generator state giving the same boxes, and the ratio arguments honoured.
Property cases use even H and W (16..32) and a few hundred boxes, so a correct cutout passes them with
overwhelming probability.

Handout: UMich EECS 498-014 F24 HW5 part A, Sec. 6 Task 4 ("randomly chosen in 25%-50% of the height and the
width, and the top left corner position is random"); DiffAugment (Zhao et al. 2020) needs T differentiable.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, Mistake, Outputs
from grading.cases.gan_inputs import (
    choice,
    flag,
    generator,
    output,
    positive_images,
    randint,
    scale_points,
    zero_boxes,
)

TASK_POINTS = 8.0  # grading.homeworks.umich_hw5_gan, task "task4-cutout"
MIN_RATIO, MAX_RATIO = 0.25, 0.5  # the handout's 25%-50%
EVEN_SIDES = (16, 18, 20, 22, 24, 26, 28, 30, 32)
EPS = 1e-9


def _exact(seed: int, batch: int, calls: int) -> dict[str, torch.Tensor]:
    """``calls`` successive cutouts of [B, C, H, W] images (H, W in 5..33) from one generator, concatenated."""
    from gan.augment import rand_cutout

    g = generator(seed, f"cutout-exact/{batch}/{calls}")
    c, h, w = choice(g, (1, 3)), randint(g, 5, 33), randint(g, 5, 33)
    x = torch.randn(batch * calls, c, h, w, generator=g, dtype=torch.float64)
    draws = generator(seed, "cutout-exact/draws")
    out = [rand_cutout(x[k * batch:(k + 1) * batch], generator=draws, min_ratio=MIN_RATIO, max_ratio=MAX_RATIO)
           for k in range(calls)]
    return {"out": output(torch.cat(out))}


def _check(outputs: Outputs, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``outputs[name]``, which must be a float64 tensor of ``shape`` (raises otherwise: the case scores 0)."""
    value = outputs[name]
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float64 or tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name}: expected a float64 tensor of shape {tuple(shape)}")
    return value


def _images(outputs: Outputs, batch: int) -> torch.Tensor:
    """The input images ``x`` [batch, 3, H, W] (H, W even in 16..32) the worker returned."""
    x = outputs["x"]
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[2] not in EVEN_SIDES or x.shape[3] not in EVEN_SIDES:
        raise ValueError("x: expected [B, 3, H, W] images with H and W in 16..32")
    return _check(outputs, "x", (batch, 3, x.shape[2], x.shape[3]))


def _read_boxes(outputs: Outputs, calls: int, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(x, zero_boxes of the ``calls`` cutouts ``out`` [calls B, 3, H, W] of x [B, 3, H, W])."""
    x = _images(outputs, batch)
    out = _check(outputs, "out", (calls * batch, *x.shape[1:]))
    return x, zero_boxes(x.repeat(calls, 1, 1, 1), out)


def _known(x: torch.Tensor) -> Outputs:
    """What every property case compares as is: its input images (so they cannot be swapped for others that make
    a wrong cutout look right) and their size."""
    return {"x": output(x), "image_size": output(torch.tensor(x.shape[2:]))}


def _sides_in_range(boxes: dict, H: int, W: int, min_ratio: float, max_ratio: float) -> bool:
    h, w = boxes["h"].double(), boxes["w"].double()
    return bool(((h >= min_ratio * H - EPS) & (h <= max_ratio * H + EPS)
                 & (w >= min_ratio * W - EPS) & (w <= max_ratio * W + EPS)).all())


def _cutouts(seed: int, salt: str, calls: int, batch: int, min_ratio: float, max_ratio: float) -> Outputs:
    """Raw outputs: positive images x [B, 3, H, W] and ``calls`` cutouts of fresh copies of them, concatenated."""
    from gan.augment import rand_cutout

    g = generator(seed, salt)
    H, W = choice(g, EVEN_SIDES), choice(g, EVEN_SIDES)
    x = positive_images(g, batch, 3, H, W)
    draws = generator(seed, salt + "/draws")
    outs = [rand_cutout(x.clone(), generator=draws, min_ratio=min_ratio, max_ratio=max_ratio) for _ in range(calls)]
    return {"x": output(x), "out": output(torch.cat(outs))}


def _box_sides(seed: int) -> Outputs:
    """Raw outputs: 64 calls of B=4 on the same x (not a copy), x before and after them."""
    from gan.augment import rand_cutout

    g = generator(seed, "cutout-sides")
    H, W = choice(g, EVEN_SIDES), choice(g, EVEN_SIDES)
    x = positive_images(g, 4, 3, H, W)
    x_before, draws = x.clone(), generator(seed, "cutout-sides/draws")
    outs = [rand_cutout(x, generator=draws, min_ratio=MIN_RATIO, max_ratio=MAX_RATIO).detach().clone()
            for _ in range(64)]
    return {"x": output(x_before), "x_after": output(x), "out": output(torch.cat(outs))}


def _box_sides_flags(outputs: Outputs) -> Outputs:
    """One filled box per image, sides in 25-50% of H and W, the input left unchanged."""
    x, boxes = _read_boxes(outputs, 64, 4)
    H, W = x.shape[2:]
    return {"zeros_form_one_box": flag(boxes["is_box"].all()),
            "sides_in_range": flag(_sides_in_range(boxes, H, W, MIN_RATIO, MAX_RATIO)),
            "input_unchanged": flag(torch.equal(_check(outputs, "x_after", x.shape), x)), **_known(x)}


_random_sizes = partial(_cutouts, salt="cutout-sizes", calls=64, batch=4, min_ratio=MIN_RATIO, max_ratio=MAX_RATIO)
_per_sample = partial(_cutouts, salt="cutout-per-sample", calls=4, batch=16, min_ratio=MIN_RATIO, max_ratio=MAX_RATIO)
_ratios = partial(_cutouts, salt="cutout-ratios", calls=64, batch=4, min_ratio=0.125, max_ratio=0.375)


def _random_sizes_flags(outputs: Outputs) -> Outputs:
    """Among boxes that touch no border (so no clipping hides the size), heights and widths take several values."""
    x, boxes = _read_boxes(outputs, 64, 4)
    H, W = x.shape[2:]
    top, left, h, w = boxes["top"], boxes["left"], boxes["h"], boxes["w"]
    inner = (top > 0) & (left > 0) & (top + h < H) & (left + w < W)
    return {"heights_vary": flag(len(set(h[inner].tolist())) >= 2),
            "widths_vary": flag(len(set(w[inner].tolist())) >= 2), **_known(x)}


def _per_sample_flags(outputs: Outputs) -> Outputs:
    """In each of 4 batches of 16, the images do not all share one box."""
    x, boxes = _read_boxes(outputs, 4, 16)
    key = torch.stack([boxes[k] for k in ("top", "left", "h", "w")], dim=1).view(4, 16, 4)  # [calls, B, 4]
    differ = [(key[k] != key[k, :1]).any() for k in range(4)]
    return {"boxes_differ_in_batch": flag(all(differ)), **_known(x)}


def _gradient(seed: int) -> Outputs:
    """Raw outputs: x [4, 3, H, W], its cutout and d(sum of the output)/dx."""
    from gan.augment import rand_cutout

    g = generator(seed, "cutout-gradient")
    H, W = choice(g, EVEN_SIDES), choice(g, EVEN_SIDES)
    x = positive_images(g, 4, 3, H, W).requires_grad_(True)
    out = rand_cutout(x, generator=generator(seed, "cutout-gradient/draws"), min_ratio=MIN_RATIO, max_ratio=MAX_RATIO)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return {"x": output(x), "out": output(out), "grad": output(grad)}


def _gradient_flags(outputs: Outputs) -> Outputs:
    """d(sum of the output)/dx is 1 outside each image's box and 0 inside (the cutout is a mask, Fig. 5)."""
    x = _images(outputs, 4)
    out, grad = _check(outputs, "out", x.shape), _check(outputs, "grad", x.shape)
    inside = out == 0  # x > 0, so the zeros are the box
    return {"ones_outside": flag((grad[~inside] == 1).all()), "zeros_inside": flag((grad[inside] == 0).all()),
            "has_box": flag(inside.flatten(1).any(dim=1).all()), **_known(x)}


def _same_generator(seed: int) -> Outputs:
    """Raw outputs: x [8, 3, H, W] and its cutouts from generators seeded a, a again and b."""
    from gan.augment import rand_cutout

    g = generator(seed, "cutout-same-generator")
    H, W = choice(g, EVEN_SIDES), choice(g, EVEN_SIDES)
    x = positive_images(g, 8, 3, H, W)
    a, b = (generator(seed, f"cutout-same-generator/{k}").initial_seed() for k in ("a", "b"))
    outs = [rand_cutout(x.clone(), generator=torch.Generator().manual_seed(s), min_ratio=MIN_RATIO,
                        max_ratio=MAX_RATIO) for s in (a, a, b)]
    return {"x": output(x), **{k: output(o) for k, o in zip(("out_a", "out_a_again", "out_b"), outs)}}


def _same_generator_flags(outputs: Outputs) -> Outputs:
    """Equal generator seeds give equal boxes; another seed gives other boxes (all randomness from ``generator``)."""
    x = _images(outputs, 8)
    a, a_again, b = (_check(outputs, k, x.shape) for k in ("out_a", "out_a_again", "out_b"))
    return {"same_seed_same_boxes": flag(torch.equal(a, a_again)),
            "other_seed_other_boxes": flag(not torch.equal(a, b)), **_known(x)}


def _ratios_flags(outputs: Outputs) -> Outputs:
    """min_ratio=0.125, max_ratio=0.375: the box sides follow the arguments, not the defaults."""
    x, boxes = _read_boxes(outputs, 64, 4)
    H, W = x.shape[2:]
    return {"zeros_form_one_box": flag(boxes["is_box"].all()),
            "sides_in_range": flag(_sides_in_range(boxes, H, W, 0.125, 0.375)), **_known(x)}


_EXACT = ("rand_cutout must draw exactly as its docstring says: four torch.rand(B, generator=generator, "
          "device=x.device, dtype=torch.float64) in the order h, w, top, left, each mapped to floor(low + u (high - "
          "low)) with h in [ceil(min_ratio H), floor(max_ratio H)] and top in [0, H - h].")
_BOX = ("Each image must get exactly one zero box, in every channel, with sides within 25%-50% of H and W and "
        "inside the image (random top-left corner with top + h <= H), every other pixel unchanged, and the input "
        "tensor not modified in place.")

CASES = scale_points((
    Case("cutout/exact-b3", 1.0, partial(_exact, batch=3, calls=1), visibility="visible",
         title="Random cutout: output for the documented draws, B=3", feedback=_EXACT),
    Case("cutout/exact-b1", 1.0, partial(_exact, batch=1, calls=8),
         title="Random cutout: output for the documented draws, B=1 (8 calls)", feedback=_EXACT),
    Case("cutout/exact-b8", 2.0, partial(_exact, batch=8, calls=1),
         title="Random cutout: output for the documented draws, B=8", feedback=_EXACT),
    Case("cutout/box-sides", 2.0, _box_sides, visibility="visible", derive=_box_sides_flags,
         title="Random cutout: one box per image, sides in 25-50% of H and W, inside the image", feedback=_BOX),
    Case("cutout/random-sizes", 2.0, _random_sizes, derive=_random_sizes_flags,
         title="Random cutout: the box size is random (not a fixed half of the image)",
         feedback="The box height and width must be drawn per image in 25%-50% of H and W, not fixed."),
    Case("cutout/per-sample", 2.0, _per_sample, derive=_per_sample_flags,
         title="Random cutout: every image of the batch gets its own box",
         feedback="Draw a box per image (tensors of shape [B]), not one box for the whole batch."),
    Case("cutout/gradient", 2.0, _gradient, derive=_gradient_flags,
         title="Random cutout: gradient 1 outside the box, 0 inside",
         feedback="The cutout must be differentiable w.r.t. x (multiply by a mask, do not write into a detached "
                  "copy or into x in place): DiffAugment back-propagates through it to G."),
    Case("cutout/same-generator", 2.0, _same_generator, derive=_same_generator_flags,
         title="Random cutout: all randomness from the given generator",
         feedback="Draw every random number from the generator argument (generator=generator), never from the "
                  "global RNG, so a run is reproducible."),
    Case("cutout/ratios", 2.0, _ratios, derive=_ratios_flags,
         title="Random cutout: min_ratio and max_ratio are honoured",
         feedback="Use the min_ratio and max_ratio arguments for the box sides instead of hard-coded 25% and 50%."),
), TASK_POINTS)

_EXACT_ALL = ("cutout/exact-b3", "cutout/exact-b1", "cutout/exact-b8")

_HEAD = """\
    B, _, H, W = x.shape
    h_lo, w_lo = max(1, math.ceil(H * min_ratio)), max(1, math.ceil(W * min_ratio))
    h_hi, w_hi = max(h_lo, int(H * max_ratio)), max(w_lo, int(W * max_ratio))
"""
_DRAWS = """\
    u_h, u_w, u_top, u_left = (torch.rand(B, generator=generator, device=x.device, dtype=torch.float64)
                               for _ in range(4))
"""
_SIZES = """\
    h = (h_lo + u_h * (h_hi + 1 - h_lo)).floor().long().clamp(max=h_hi)
    w = (w_lo + u_w * (w_hi + 1 - w_lo)).floor().long().clamp(max=w_hi)
"""
_CORNER = """\
    top = (u_top * (H - h + 1)).floor().long()
    left = (u_left * (W - w + 1)).floor().long()
"""
_MASK = """\
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    in_box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)))
    return x * ~in_box.unsqueeze(1)
"""
_FIXED = """\
    B, _, H, W = x.shape
    h, w = int(H * 0.5 + 0.5), int(W * 0.5 + 0.5)  # half the image, as in the original DiffAugment
    u_y, u_x = (torch.rand(B, generator=generator, device=x.device, dtype=torch.float64) for _ in range(2))
    top = (u_y * (H + 1 - h % 2)).floor().long() - h // 2  # random centre, box clipped to the image
    left = (u_x * (W + 1 - w % 2)).floor().long() - w // 2
"""
_GLOBAL_RNG = """\
    u_h, u_w, u_top, u_left = (torch.rand(B, device=x.device, dtype=torch.float64) for _ in range(4))
"""
_SHARED = """\
    u_h, u_w, u_top, u_left = (torch.rand(1, generator=generator, device=x.device, dtype=torch.float64)
                               for _ in range(4))
"""
_LEAVES = """\
    top = (u_top * H).floor().long()
    left = (u_left * W).floor().long()
"""
_LOOP = """\
    for b in range(B):
        t, l = int(top[b]), int(left[b])
        out[b, :, t:t + int(h[b]), l:l + int(w[b])] = 0
    return out
"""
_HARD_CODED = """\
    B, _, H, W = x.shape
    h_lo, w_lo = max(1, math.ceil(H * 0.25)), max(1, math.ceil(W * 0.25))
    h_hi, w_hi = max(h_lo, int(H * 0.5)), max(w_lo, int(W * 0.5))
"""
_REST = _DRAWS + _SIZES + _CORNER + _MASK

MISTAKES = (
    Mistake("cutout-fixed-size", "diffaugment-cutout", _FIXED + _MASK,
            "A fixed box of half the image (the original DiffAugment cutout): the handout's box has a random "
            "size, 25%-50% of H and W, per image.", (*_EXACT_ALL, "cutout/random-sizes", "cutout/ratios")),
    Mistake("cutout-shared-box", "diffaugment-cutout", _HEAD + _SHARED + _SIZES + _CORNER + _MASK,
            "One box for the whole batch: draw h, w, top and left per image (shape [B]).",
            ("cutout/exact-b3", "cutout/exact-b8", "cutout/per-sample")),
    Mistake("cutout-box-leaves-image", "diffaugment-cutout", _HEAD + _DRAWS + _SIZES + _LEAVES + _MASK,
            "The top-left corner is drawn over the whole image, so boxes are cut off at the border; draw top in "
            "[0, H - h] and left in [0, W - w] so the box lies inside.",
            (*_EXACT_ALL, "cutout/box-sides", "cutout/ratios")),
    Mistake("cutout-global-rng", "diffaugment-cutout", _HEAD + _GLOBAL_RNG + _SIZES + _CORNER + _MASK,
            "The box is drawn from the global RNG instead of the generator argument: runs are not reproducible.",
            (*_EXACT_ALL, "cutout/same-generator")),
    Mistake("cutout-detached", "diffaugment-cutout",
            _HEAD + _DRAWS + _SIZES + _CORNER + "    out = x.detach().clone()\n" + _LOOP,
            "The box is written into a detached copy of x: the output has no gradient, so G gets none through "
            "DiffAugment; multiply x by a mask instead.", ("cutout/gradient",)),
    Mistake("cutout-in-place", "diffaugment-cutout", _HEAD + _DRAWS + _SIZES + _CORNER + "    out = x\n" + _LOOP,
            "The box is zeroed in x itself (in place): the caller's images change and autograd fails on a leaf "
            "that requires grad; return x * mask instead.", ("cutout/box-sides", "cutout/gradient")),
    Mistake("cutout-hard-coded-ratios", "diffaugment-cutout", _HARD_CODED + _REST,
            "The box sides use hard-coded 25% and 50% instead of the min_ratio and max_ratio arguments.",
            ("cutout/ratios",)),
)
