"""measure_toy: the seam metric in closed form, and both bars' plumbing on tiny random models."""

import pytest
import torch

from synchronization import measure_toy


def _background(width: int = 256, seed: int = 0) -> torch.Tensor:
    """A flat blue background with faint pixel noise and a red disc whose edge passes a border (x = 64 +- 3)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.tensor([-0.7, -0.35, 0.7]).view(3, 1, 1) + 0.01 * torch.randn(3, 64, width, generator=g)
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(width * 1.0), indexing="ij")
    disc = (x - 80) ** 2 + (y - 32) ** 2 < 19**2  # left edge near x = 61
    image[:, disc] = torch.tensor([0.8, -0.8, -0.8]).view(3, 1)
    return image


BORDERS = [0, 64, 128, 192, 256]


def test_seam_score_smooth_image_is_about_one():
    ramp = torch.linspace(-0.1, 0.1, 256).expand(3, 64, 256)  # constant horizontal gradient
    assert measure_toy.seam_score(ramp, BORDERS) == pytest.approx(1.0, rel=1e-4)
    scores = [measure_toy.seam_score(_background(seed=s), BORDERS) for s in range(3)]
    assert all(0.8 < v < 1.25 for v in scores), scores  # the disc edge at a border is not a seam


def test_seam_score_hard_seam_scores_clearly_higher():
    image = _background()
    seamed = image.clone()
    for border, step in ((64, 0.2), (128, -0.2), (192, 0.2)):  # full-height steps between tiles
        seamed[..., border:] += step
    assert measure_toy.seam_score(seamed, BORDERS) > 2.0 * measure_toy.seam_score(image, BORDERS)
    assert measure_toy.seam_score(seamed, BORDERS) > 2.0
    moved = image.clone()
    moved[..., 180:] += 0.2  # a step 12 px from the nearest border: in the reference ring, not a seam
    assert measure_toy.seam_score(moved, BORDERS) < 1.0
    midway = image.clone()
    midway[..., 160:] += 0.2  # halfway between borders: the off-border control sees it
    assert measure_toy.seam_score(midway, measure_toy.midpoints(BORDERS)) > 1.3  # 1 of 4 midpoints


def test_seam_score_needs_an_inner_border():
    with pytest.raises(ValueError, match="no window border"):
        measure_toy.seam_score(_background(), [0, 256])


def test_window_borders():
    from synchronization.windows import WindowMapping

    m = WindowMapping(4, 12, window=4, stride=4)
    assert measure_toy.window_borders(m, 2) == [0, 8, 16, 24]


def test_measure_ambiguous_plumbing(tiny_pixel_folder, tmp_path):
    from common.registry import load_clip, load_pixel
    from common.toy.clip_model import create_toy_clip, save_toy_clip

    torch.manual_seed(0)
    clip = load_clip(str(save_toy_clip(create_toy_clip(), tmp_path / "clip")))
    pairs = measure_toy.AMBIGUOUS_PAIRS[:1]
    rows = measure_toy.measure_ambiguous(load_pixel(str(tiny_pixel_folder)), clip, [0, 1], 2, 3.0, pairs)
    assert len(rows) == 1 and rows[0]["success"] in (0.0, 0.5, 1.0)


def test_measure_wide_plumbing(tiny_sd_folder):
    from common.registry import load_sd
    from common.toy.clip_model import DEFAULT_FOLDER

    if not (DEFAULT_FOLDER / "open_clip_model.safetensors").is_file():
        pytest.skip("shipped toy-clip weights (the judge) not present")
    pipe = load_sd(str(tiny_sd_folder))
    out = measure_toy.measure_wide(pipe, [0], 2, prompts=measure_toy.WIDE_PROMPTS[:1])
    assert out["crops"] == 8 and 0 <= out["crops_correct"] <= 1
    assert set(out["seam"]) == set(out["control"]) == {name for name, *_ in measure_toy.SEAM_RUNS}
    assert all(v >= 0 for v in out["seam"].values())  # random weights: maybe no flat background at all
