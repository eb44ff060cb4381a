"""The shapes domain: determinism, captions, geometry and exact palette colours (checked against
independent pixel masks computed here from the spec, not from the renderer's SDFs)."""

import math

import numpy as np
import pytest
import torch

from common.toy import shapes


def _pixel_grid(size):
    c = np.arange(size) + 0.5
    return np.meshgrid(c, c)  # x, y pixel centres


def _inside(spec, size, margin):
    """Pixels whose centre is at least ``margin`` px inside the shape (margin < 0: within -margin px of it)."""
    x, y = _pixel_grid(size)
    cx, cy, s = spec.center[0] * size, spec.center[1] * size, spec.size * size
    if spec.shape == "circle":
        return np.hypot(x - cx, y - cy) <= s / 2 - margin
    if spec.shape == "square":
        return np.maximum(abs(x - cx), abs(y - cy)) <= s / 2 - margin
    h = s * math.sqrt(3) / 2
    apex, left, right = (cx, cy - h / 2), (cx - s / 2, cy + h / 2), (cx + s / 2, cy + h / 2)
    dists = []
    for (ax, ay), (bx, by) in ((left, apex), (apex, right), (right, left)):  # clockwise on screen: inside is > 0
        ex, ey = bx - ax, by - ay
        dists.append(((x - ax) * ey - (y - ay) * ex) / -math.hypot(ex, ey))
    return np.minimum.reduce(dists) >= margin


def _uint8(images):
    return shapes.to_uint8(images).numpy().astype(int)  # [B, H, W, 3]


def test_sampling_and_rendering_are_deterministic():
    a, b = shapes.sample_specs(32, 7), shapes.sample_specs(32, torch.Generator().manual_seed(7))
    assert a == b
    assert a != shapes.sample_specs(32, 8)
    assert torch.equal(shapes.render(a), shapes.render(b))
    # batch rendering equals one-by-one rendering (no cross-talk inside a batch)
    single = torch.cat([shapes.render([s]) for s in a[:4]])
    assert torch.allclose(single, shapes.render(a[:4]), atol=1e-6)
    images, params = shapes.sample_batch(32, 7)
    assert shapes.params_to_specs(params) == a and torch.equal(images, shapes.render(a))


def test_splits_use_disjoint_seeds():
    seeds = {split: shapes.split_seed(split) for split in ("train", "val", "test")}
    ranges = sorted((s, s + 10**6) for s in seeds.values())
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(ranges, ranges[1:]))
    assert shapes.sample_specs(8, seeds["train"]) != shapes.sample_specs(8, seeds["test"])
    with pytest.raises(ValueError):
        shapes.split_seed("holdout")


def test_captions_exact_and_invertible():
    spec = shapes.ShapeSpec("red", "circle", "blue", (0.5, 0.5), 0.5)
    assert shapes.caption(spec) == "a red circle on a blue background"
    assert shapes.parse_caption("a red circle on a blue background") == ("red", "circle", "blue")
    orange = shapes.ShapeSpec("orange", "square", "orange", (0.5, 0.5), 0.5)
    assert shapes.caption(orange) == "an orange square on an orange background"  # not "a orange"
    captions = shapes.all_captions()
    assert not any("a orange" in c for c in captions) and sum("an orange" in c for c in captions) == 2 * 3 * 7
    assert len(captions) == len(set(captions)) == 8 * 3 * 7
    for i, (c, s, b) in enumerate(shapes.all_attributes()):
        assert shapes.caption_index(c, s, b) == i and shapes.parse_caption(captions[i]) == (c, s, b)
    for bad in ("a red circle", "a pink circle on a blue background", "a red hexagon on a blue background"):
        with pytest.raises(ValueError):
            shapes.parse_caption(bad)


def test_palette_is_exact():
    assert shapes.PALETTE == {
        "red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220), "yellow": (235, 210, 40),
        "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (240, 240, 240), "black": (25, 25, 25)}
    assert shapes.SHAPES == ("circle", "square", "triangle")


def test_attribute_distribution_and_bbox_bounds():
    specs = shapes.sample_specs(3000, 1)
    assert all(s.background != s.color for s in specs)
    assert {s.color for s in specs} == set(shapes.COLORS) == {s.background for s in specs}
    assert {s.shape for s in specs} == set(shapes.SHAPES)
    for s in specs:
        h = s.size * (math.sqrt(3) / 2 if s.shape == "triangle" else 1.0)
        assert shapes.MIN_SIZE <= s.size <= shapes.MAX_SIZE
        assert s.size / 2 <= s.center[0] <= 1 - s.size / 2 and h / 2 <= s.center[1] <= 1 - h / 2


def test_interior_and_background_have_palette_colours():
    specs = shapes.sample_specs(48, 3)
    pixels = _uint8(shapes.render(specs))
    for spec, img in zip(specs, pixels):
        interior, near = _inside(spec, 64, 1.0), _inside(spec, 64, -1.0)
        assert interior.sum() > 30
        mean = img[interior].mean(axis=0)
        assert np.abs(np.round(mean) - shapes.PALETTE[spec.color]).max() <= 1, (spec, mean)
        assert np.abs(img[interior] - shapes.PALETTE[spec.color]).max() <= 1  # every pixel, not just the mean
        assert np.abs(img[~near] - shapes.PALETTE[spec.background]).max() <= 1, spec
        edge = near & ~interior  # the anti-aliased band holds blends strictly between the two colours
        blends = np.any(img[edge] != shapes.PALETTE[spec.color], axis=1) & \
            np.any(img[edge] != shapes.PALETTE[spec.background], axis=1)
        assert blends.mean() > 0.3, spec


def _alpha(spec, image):
    """Object coverage per pixel recovered from the colours: [H, W] in [0, 1]."""
    fg, bg = np.array(shapes.PALETTE[spec.color], float), np.array(shapes.PALETTE[spec.background], float)
    ch = np.argmax(np.abs(fg - bg))
    rgb = (image.permute(1, 2, 0).numpy() + 1) * 127.5
    return (rgb[..., ch] - bg[ch]) / (fg[ch] - bg[ch])


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_area_and_bbox_match_geometry(shape):
    base = shapes.sample_specs(12, 5)
    specs = [shapes.ShapeSpec(s.color, shape, s.background, s.center, s.size) for s in base]
    for spec, image in zip(specs, shapes.render(specs, size=128)):
        alpha, side = _alpha(spec, image), spec.size * 128
        area = {"circle": math.pi * side**2 / 4, "square": side**2, "triangle": math.sqrt(3) / 4 * side**2}[shape]
        assert abs(alpha.sum() - area) / area < 0.01, (spec, alpha.sum(), area)
        rows, cols = np.nonzero(alpha > 0.5)
        height = side * (math.sqrt(3) / 2 if shape == "triangle" else 1)
        assert abs(cols.max() - cols.min() + 1 - side) <= 1.5 and abs(rows.max() - rows.min() + 1 - height) <= 1.5
        if shape == "triangle":  # upright: narrow at the top, wide at the bottom
            widths = (alpha > 0.5).sum(axis=1)
            assert widths[rows.min() + 2] < widths[rows.max() - 2] / 4


def test_render_is_fast_enough_for_training():
    images, params = shapes.sample_batch(512, 0)
    assert images.shape == (512, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert params["color"].shape == (512,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    specs = shapes.sample_specs(64, 11)
    assert torch.allclose(shapes.render(specs, device="cuda").cpu(), shapes.render(specs), atol=1e-4)
