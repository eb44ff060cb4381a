"""The procedural toy faces: deterministic, in range, varied, split-disjoint."""

import pytest
import torch

from common.toy.faces import heldout_faces, render_faces, split_seed, train_batch


def test_shape_range_and_determinism():
    a = render_faces(6, seed=3)
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, render_faces(6, seed=3), rtol=0, atol=0)
    assert not torch.allclose(a, render_faces(6, seed=4))
    assert render_faces(2, seed=0, size=32).shape == (2, 3, 32, 32)


def test_faces_are_varied_and_anti_aliased():
    x = render_faces(32, seed=0)
    # every image differs clearly from every other one
    d = torch.cdist(x.flatten(1), x.flatten(1))
    assert d[~torch.eye(32, dtype=torch.bool)].min() > 5.0
    # per-pixel std over the batch is large in the face region (varied content), and edges have partial coverage
    assert x.std(0).mean() > 0.2
    levels = ((x + 1) / 2 * 255).round().unique().numel()
    assert levels > 200


def test_splits_are_disjoint_and_heldout_is_fixed():
    assert len({split_seed("train"), split_seed("val"), split_seed("test")}) == 3
    held = heldout_faces(4)
    torch.testing.assert_close(held, render_faces(4, split_seed("test")))
    assert not torch.allclose(held, train_batch(0, 4))
    with pytest.raises(ValueError):
        split_seed("nope")
    with pytest.raises(ValueError):
        render_faces(0)
