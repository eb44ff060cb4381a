"""Canonical <-> instance maps: crops with averaging, and the ambiguous-image views."""

import pytest
import torch

from synchronization.views import VIEW_NAMES, InnerRotate, ViewMapping, circle_mask, get_view
from synchronization.windows import WindowMapping


def test_non_overlapping_windows_are_an_exact_round_trip():
    m = WindowMapping(8, 24, window=8, stride=8)
    z = torch.randn(1, 4, 8, 24)
    x = m.forward_mapping(z)
    assert x.shape == (3, 4, 8, 8)
    assert torch.equal(x[1], z[0, :, :, 8:16])
    assert torch.equal(m.inverse_mapping(x), z)
    x2 = torch.randn(3, 4, 8, 8)
    assert torch.equal(m.forward_mapping(m.inverse_mapping(x2)), x2)


def _loop_average(x, views, h, w, window):
    """Reference paste-and-average with Python loops (the skeleton's value / count buffers)."""
    value, count = torch.zeros(x.shape[1], h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
    for xi, (h0, w0) in zip(x, views):
        value[:, h0 : h0 + window, w0 : w0 + window] += xi.double()
        count[h0 : h0 + window, w0 : w0 + window] += 1
    return value / count


def test_overlapping_windows_average_with_the_right_weights():
    m = WindowMapping(12, 40, window=8, stride=2)
    assert len(m) == 3 * 17  # (12-8)/2+1 rows, (40-8)/2+1 columns
    x = torch.randn(len(m), 3, 8, 8, dtype=torch.float64)
    ref = _loop_average(x, m.views, 12, 40, 8)
    torch.testing.assert_close(m.inverse_mapping(x)[0], ref, rtol=0, atol=1e-12)
    # weights: column 0 is covered by one window per row start, the middle columns by window / stride = 4
    count = m.count.view(12, 40)
    assert count[0, 0] == 1 and count[6, 20] == 4 * 3
    # averaging a consistent set of crops returns the canonical sample
    z = torch.randn(1, 3, 12, 40, dtype=torch.float64)
    torch.testing.assert_close(m.inverse_mapping(m.forward_mapping(z)), z, rtol=0, atol=1e-12)


def test_sd_default_geometry_has_41_views_and_circular_wraps():
    assert len(WindowMapping(64, 384, 64, 8)) == 41
    m = WindowMapping(4, 12, window=4, stride=2, circular=True)
    assert len(m) == 6 and torch.all(m.count == 2)  # every column covered window / stride times
    z = torch.arange(48.0).view(1, 1, 4, 12)
    last = m.forward_mapping(z)[-1, 0]  # starts at column 10 and wraps to columns 0, 1
    assert torch.equal(last, z[0, 0][:, [10, 11, 0, 1]])


@pytest.mark.parametrize("width,circular", [(45, False), (3, False), (13, True)])
def test_unreachable_width_is_refused(width, circular):
    with pytest.raises(ValueError, match="width"):
        WindowMapping(8, width, 8, 2, circular)


@pytest.mark.parametrize("name", VIEW_NAMES)
@pytest.mark.parametrize("size", [16, 64])
def test_views_invert_exactly_and_keep_gaussian_statistics(name, size):
    view = get_view(name, rotate_angle=90)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    y = view.view(x)
    assert torch.equal(view.inverse_view(y), x)
    assert torch.equal(view.view(view.inverse_view(x)), x)
    assert view.is_permutation
    # a signed permutation: the multiset of |values| is unchanged, so mean^2 and variance are preserved exactly
    assert torch.equal(y.abs().flatten().sort().values, x.abs().flatten().sort().values)
    torch.testing.assert_close(y.var(), x.var())
    torch.testing.assert_close(y.mean().abs(), x.mean().abs())


def test_rotation_directions():
    x = torch.zeros(1, 1, 4, 4)
    x[..., 0, 0] = 1  # top-left marker
    assert get_view("rotate_cw").view(x)[0, 0, 0, 3] == 1  # clockwise: top-left -> top-right
    assert get_view("rotate_ccw").view(x)[0, 0, 3, 0] == 1
    assert get_view("rotate_180").view(x)[0, 0, 3, 3] == 1
    assert get_view("flip").view(x)[0, 0, 3, 0] == 1


@pytest.mark.parametrize("angle,k", [(90, 1), (180, 2), (270, 3)])
def test_inner_rotate_is_rot90_inside_the_centred_disc(angle, k):
    x = torch.randn(1, 3, 64, 64)
    y = InnerRotate(angle).view(x)
    mask = circle_mask(64)
    assert mask.sum() > 0 and torch.equal(mask, torch.rot90(mask, 1))  # centred on the true centre (31.5, 31.5)
    rotated = torch.rot90(x, -k, dims=(-2, -1))
    assert torch.equal(y[..., mask], rotated[..., mask])
    assert torch.equal(y[..., ~mask], x[..., ~mask])
    assert circle_mask(64)[32, 8] and not circle_mask(64)[32, 7]  # r = 24 at 64 px


def test_inner_rotate_45_is_not_a_permutation():
    view = InnerRotate(45)
    assert not view.is_permutation
    y = view.view(torch.arange(64.0 * 64).view(1, 1, 64, 64))
    assert y.unique().numel() < 64 * 64  # nearest-neighbour 45 degrees repeats some pixels (1-to-n)


def test_view_mapping_averages_inverse_views():
    views = [get_view("identity"), get_view("rotate_cw"), get_view("negate")]
    m = ViewMapping(views)
    x = torch.randn(3, 3, 8, 8)
    expected = (x[0] + torch.rot90(x[1], 1, dims=(-2, -1)) - x[2]) / 3
    torch.testing.assert_close(m.inverse_mapping(x)[0], expected)
    z = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(m.inverse_mapping(m.forward_mapping(z)), z)
