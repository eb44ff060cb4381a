"""dps.panels.labelled_row: torchvision grid, nearest-neighbour enlargement and a label strip."""

import numpy as np
import pytest
import torch

from dps.panels import LABEL_HEIGHT, display_upscale, labelled_row


def test_labelled_row_layout_labels_and_pixels():
    images = [torch.full((3, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    images[1][:, 0, 0] = 1.0  # one white pixel in the grey tile
    row = np.asarray(labelled_row(images, ["a", "bb", "ccc"], upscale=3))
    assert row.shape == (LABEL_HEIGHT + 2 + 24 + 2, 3 * (24 + 2) + 2, 3)
    top = LABEL_HEIGHT + 2
    assert (row[top : top + 24, 2:26] == 0).all()  # the black tile
    grey = row[top : top + 24, 28:52, 0]
    assert (grey[:3, :3] == 255).all() and grey[3, 3] == 128 and (grey[3:, 3:] == 128).all()  # 1 px -> 3 x 3
    strip = row[:LABEL_HEIGHT, :, 0]
    assert (strip < 128).sum() > 10 and (strip[:, 2:26] < 128).sum() < (strip[:, 54:78] < 128).sum()  # a < ccc


def test_labelled_row_gray_images_and_errors():
    row = labelled_row(torch.zeros(2, 1, 4, 4), ["x", "y"], value_range=(0.0, 1.0))
    assert row.size == (2 * 6 + 2, LABEL_HEIGHT + 8) and row.mode == "RGB"
    with pytest.raises(ValueError, match="labels"):
        labelled_row(torch.zeros(2, 3, 4, 4), ["only one"])
    assert (display_upscale(16), display_upscale(64), display_upscale(256)) == (4, 4, 1)
