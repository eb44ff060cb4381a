"""common.panels: nearest-neighbour enlargement, labels in a band under each tile, word wrap, grid layout."""

import pytest
import torch

from common.images import load_image
from common.panels import (
    PADDING,
    display_upscale,
    enlarge,
    label_font,
    labelled_grid,
    save_labelled_grid,
    wrap_label,
)


def test_enlarge_repeats_every_pixel_exactly():
    tiny = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # [1, 2, 2]
    big = enlarge(tiny, 3)
    assert big.shape == (1, 6, 6)
    assert torch.equal(big[0, :3, :3], torch.zeros(3, 3)) and torch.equal(big[0, 3:, 3:], torch.full((3, 3), 3.0))
    assert torch.equal(big[0, 0], torch.tensor([0.0, 0, 0, 1, 1, 1]))
    assert enlarge(tiny, 1) is tiny
    with pytest.raises(ValueError, match="integer >= 1"):
        enlarge(tiny, 0)
    assert (display_upscale(16), display_upscale(64), display_upscale(65), display_upscale(512)) == (4, 4, 1, 1)


def test_grid_shape_tiles_pixel_exact_and_range():
    images = torch.stack([torch.full((3, 8, 8), v) for v in (-1.0, 0.0, 1.0)])
    images[1, :, 0, 0] = 1.0  # one white pixel in the grey tile
    grid = labelled_grid(images, ["a", "bb", "ccc"], upscale=3)  # [3, H', W'] in [-1, 1]
    assert grid.shape[0] == 3 and grid.shape[2] == 3 * (24 + PADDING) + PADDING
    band = grid.shape[1] - 2 * PADDING - 24
    assert 10 <= band <= 24  # one line of text under the tiles
    top, left = PADDING, 2 * PADDING + 24  # the grey tile (second): its 1 px became 3 x 3
    grey = grid[0, top : top + 24, left : left + 24]
    assert torch.equal(grey[:3, :3], torch.ones(3, 3)) and torch.allclose(grey[3:, 3:], torch.zeros(21, 21))
    assert torch.equal(grid[:, top : top + 24, PADDING : PADDING + 24], -torch.ones(3, 24, 24))  # the black tile
    assert grid.min() >= -1 and grid.max() == 1 and grid[:, :PADDING].eq(1).all()  # white padding
    unit = labelled_grid(images[:, :1] * 0.5 + 0.5, ["a", "bb", "ccc"], upscale=3, value_range=(0.0, 1.0))
    torch.testing.assert_close(unit * 2 - 1, grid, atol=1e-6, rtol=0)  # gray input, [0, 1] range: same pixels
    auto = labelled_grid(torch.zeros(4, 3, 16, 16), ["x"] * 4, nrow=2)  # 16 px -> x4, two rows
    assert auto.shape[2] == 2 * (64 + PADDING) + PADDING and auto.shape[1] > 2 * (64 + PADDING)


def test_a_label_changes_pixels_in_its_band_only():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    blank, labelled = labelled_grid(images, ["", ""]), labelled_grid(images, ["", "view 1"])
    assert blank.shape == labelled.shape
    changed = (blank != labelled).any(dim=0).nonzero()  # [k, 2] (row, col)
    assert len(changed) > 20  # dark text
    tile_bottom, second_left = PADDING + 64, 2 * PADDING + 64
    assert changed[:, 0].min() >= tile_bottom and changed[:, 0].max() < blank.shape[1] - PADDING
    assert changed[:, 1].min() >= second_left and changed[:, 1].max() < second_left + 64


def test_long_labels_wrap_to_the_tile_width_and_newlines_break():
    font = label_font(64)
    lines = wrap_label("a white circle on a black background", 60, font)
    assert len(lines) >= 3 and " ".join(lines) == "a white circle on a black background"
    assert wrap_label("CLIP 0.3\njudge: right", 200, font) == ["CLIP 0.3", "judge: right"]
    assert "".join(wrap_label("supercalifragilistic", 30, font)) == "supercalifragilistic"  # broken, not lost
    one = labelled_grid(torch.zeros(1, 3, 16, 16), ["circle"])
    many = labelled_grid(torch.zeros(1, 3, 16, 16), ["a white circle on a black background"])
    assert many.shape[2] == one.shape[2] and many.shape[1] > one.shape[1] + 20  # more lines, same width


def test_label_count_and_shape_errors(tmp_path):
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        labelled_grid(torch.zeros(2, 3, 4, 4), ["only one"])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        labelled_grid(torch.zeros(3, 4, 4), ["a", "b", "c"])
    path = save_labelled_grid(tmp_path / "g.png", [torch.zeros(3, 8, 8), torch.ones(3, 8, 8)], ["a", "b"])
    torch.testing.assert_close(load_image(path), labelled_grid(torch.stack([torch.zeros(3, 8, 8),
                                                                            torch.ones(3, 8, 8)]), ["a", "b"]),
                               atol=2 / 255, rtol=0)  # 8-bit PNG
