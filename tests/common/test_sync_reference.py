"""``common.sync`` (reference SyncTweedies math): closed forms, and equality with the ``synchronization`` exercises.

The comparisons import the homework inside the tests: they check that the repo's reference regions and
``common.sync`` compute the same thing (a stubbed homework fails only those, never the closed-form checks).
"""

import pytest
import torch

from common.ddim import ddim_step
from common.schedules import make_alphas_cumprod
from common.sync import (
    SYNC_CASES,
    WindowGrid,
    circle_mask,
    crop_windows,
    inner_rotation_index,
    inverse_permutation,
    paste_windows,
    permute_pixels,
    rotate_quarter_turns,
    sync_ddim_step,
    sync_denoise_step,
    sync_sample_loop,
    window_starts,
)
from common.tweedie import add_noise, eps_from_x0, x0_from_eps

SD_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "steps_offset": 1, "set_alpha_to_one": False}
AC = make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)
GRIDS = [(8, 20, 8, 4, False), (12, 40, 8, 2, False), (8, 24, 8, 8, False), (4, 12, 4, 2, True),
         (6, 18, (6, 4), 2, True), (10, 10, (4, 6), 2, False)]  # height, width, window, stride, circular


def fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic non-linear, position-dependent 'noise predictor' (so windows and views matter)."""
    h, w = x.shape[-2:]
    ramp = torch.linspace(-1, 1, w, dtype=x.dtype).view(1, 1, 1, w) + torch.linspace(0, 0.5, h, dtype=x.dtype).view(
        1, 1, h, 1)
    return torch.tanh(0.7 * x + ramp * (t / 1000.0)) + 0.1 * x.roll(1, dims=1)


def _loop_average(x, views, h, w, window):
    """Paste and average with Python loops and explicit wrap-around (value / count buffers), float64."""
    value, count = torch.zeros(x.shape[1], h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
    cols = torch.arange(window[1])
    for xi, (h0, w0) in zip(x, views):
        idx = (w0 + cols) % w
        value[:, h0 : h0 + window[0], idx] += xi.double()
        count[h0 : h0 + window[0], idx] += 1
    return value / count


# ----------------------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("grid", GRIDS)
def test_g_of_f_is_the_identity_and_g_averages(grid):
    h, w, window, stride, circular = grid
    m = WindowGrid(h, w, window, stride, circular)
    z = torch.randn(1, 3, h, w, dtype=torch.float64)
    torch.testing.assert_close(m.inverse_mapping(m.forward_mapping(z)), z, rtol=0, atol=1e-12)
    x = torch.randn(len(m), 3, *m.window, dtype=torch.float64)
    torch.testing.assert_close(m.inverse_mapping(x)[0], _loop_average(x, m.views, h, w, m.window), rtol=0, atol=1e-12)
    assert m.count.sum() == len(m) * m.window[0] * m.window[1] and m.count.min() >= 1  # every pixel covered


def test_window_geometry():
    assert len(WindowGrid(64, 384, 64, 8)) == 41  # SD 2 base panorama: 41 views
    assert window_starts(40, 8, 2) == list(range(0, 33, 2)) and window_starts(12, 4, 2, circular=True)[-1] == 10
    m = WindowGrid(4, 12, 4, 2, circular=True)
    assert torch.all(m.count == 2)  # window / stride windows over every column
    z = torch.arange(48.0).view(1, 1, 4, 12)
    assert torch.equal(m.forward_mapping(z)[-1, 0], z[0, 0][:, [10, 11, 0, 1]])  # the last window wraps
    x = torch.randn(3, 2, 8, 8)  # non-overlapping windows: f(g(x)) = x exactly
    assert torch.equal(WindowGrid(8, 24, 8, 8).forward_mapping(WindowGrid(8, 24, 8, 8).inverse_mapping(x)), x)
    assert m.scaled(4).count.view(16, 48)[0, 0] == 2 and len(m.scaled(4)) == len(m)
    for bad in ((8, 45, 8, 2, False), (8, 3, 8, 2, False), (8, 13, 8, 2, True)):
        with pytest.raises(ValueError, match="width"):
            WindowGrid(*bad)


def test_half_precision_paste_accumulates_in_fp32():
    m = WindowGrid(8, 40, 8, 2)
    x = torch.full((len(m), 1, 8, 8), 1000.0, dtype=torch.float16) + torch.randn(len(m), 1, 8, 8).half()
    out = paste_windows(x, m.index, m.count, 8, 40)
    assert out.dtype == torch.float16
    ref = _loop_average(x, m.views, 8, 40, m.window)[None].half()  # exact mean, rounded once
    torch.testing.assert_close(out, ref, rtol=0, atol=0.5)  # within one fp16 ulp at 1000 (fp16 sums are off by ~2)
    assert torch.equal(crop_windows(x[:1], WindowGrid(8, 8, 8, 1).index, (8, 8)), x[:1])  # one window: z itself


def test_quarter_turns():
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(rotate_quarter_turns(x, 4), x) and torch.equal(rotate_quarter_turns(x, 0), x)
    assert torch.equal(rotate_quarter_turns(rotate_quarter_turns(x, 1), -1), x)
    assert torch.equal(rotate_quarter_turns(rotate_quarter_turns(x, 1), 3), x)
    assert torch.equal(rotate_quarter_turns(x, 2), torch.flip(x, dims=(-2, -1)))
    marker = torch.zeros(4, 4)
    marker[0, 0] = 1
    assert rotate_quarter_turns(marker, 1)[0, 3] == 1  # clockwise as displayed: top-left -> top-right
    assert rotate_quarter_turns(marker, -1)[3, 0] == 1


@pytest.mark.parametrize("size", [16, 64])
def test_inner_rotation_closed_forms(size):
    x = torch.randn(1, 3, size, size)
    mask = circle_mask(size)
    assert torch.equal(mask, torch.rot90(mask, 1)) and mask.sum() > 0
    quarter = inner_rotation_index(size, 90)
    y = x
    for k in range(1, 5):
        y = permute_pixels(y, quarter)
        assert torch.equal(y[..., mask], rotate_quarter_turns(x, k)[..., mask])  # k quarter turns inside the disc
        assert torch.equal(y[..., ~mask], x[..., ~mask])  # the border stays put
    assert torch.equal(y, x)  # four quarter turns are the identity
    assert torch.equal(inner_rotation_index(size, 360), torch.arange(size * size))
    assert torch.equal(permute_pixels(permute_pixels(x, quarter), inverse_permutation(quarter)), x)
    assert torch.equal(inner_rotation_index(size, -90), inverse_permutation(quarter))
    assert inner_rotation_index(size, 45).unique().numel() < size * size  # 45 degrees is many-to-one (1-to-n)


def _step_inputs(n, c, h, w, dtype, g):
    x_t = torch.randn(n, c, h, w, generator=g).to(dtype)
    eps = torch.randn(n, 2 * c, h, w, generator=g).to(dtype)  # IF-like: eps + variance channels
    return x_t, eps, AC[741], AC[721]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_unsynchronized_step_is_plain_ddim(dtype):
    g = torch.Generator().manual_seed(0)
    m = WindowGrid(8, 20, 8, 4)
    x_t, eps, a_t, a_prev = _step_inputs(len(m), 3, 8, 8, dtype, g)
    x_prev, x0_hat = sync_ddim_step(m, x_t, eps, a_t, a_prev, "none")
    ref_prev, ref_x0 = ddim_step(x_t, eps[:, :3], a_t, a_prev)  # DDIM Eq. 12, eta = 0
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(x_prev, ref_prev, rtol=0, atol=tol)
    torch.testing.assert_close(x0_hat, ref_x0, rtol=0, atol=tol)
    assert torch.equal(x0_hat, x0_from_eps(x_t, eps[:, :3], a_t))
    assert torch.equal(x_prev, add_noise(x0_hat, eps_from_x0(x_t, x0_hat, a_t), a_prev))
    torch.testing.assert_close(sync_ddim_step(m, x_t, eps, a_t, a_t, "none")[0], x_t, rtol=0, atol=10 * tol)  # no-op


def test_consistent_instances_give_one_step_for_every_case():
    """x_t = f(z_t) and g(f(.)) = id: averaging eps, x0_hat or x_prev is the same step (phi, psi are affine)."""
    g = torch.Generator().manual_seed(1)
    m = WindowGrid(8, 20, 8, 4)
    x_t = m.forward_mapping(torch.randn(1, 3, 8, 20, generator=g, dtype=torch.float64))
    eps = fake_eps(x_t, 741)
    steps = {s: sync_ddim_step(m, x_t, eps, AC[741], AC[721], s) for s in ("eps", "x0", "xt")}
    for s, (x_prev, _) in steps.items():
        torch.testing.assert_close(x_prev, steps["x0"][0], rtol=0, atol=1e-12, msg=s)
        torch.testing.assert_close(m.forward_mapping(m.inverse_mapping(x_prev)), x_prev, rtol=0, atol=1e-12)
    assert (sync_ddim_step(m, x_t, eps, AC[741], AC[721], "none")[0] - steps["x0"][0]).abs().max() > 1e-3


def test_oracle_eps_lands_on_the_data_point():
    """With the exact eps of a one-point dataset the x0 step returns f(z0) after any grid (closed form)."""
    m = WindowGrid(8, 16, 8, 4)
    z0 = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    x0 = m.forward_mapping(z0)
    ac = AC.double()

    def oracle(x, t):
        return (x - ac[t].sqrt() * x0) / (1 - ac[t]).sqrt()

    x_T = add_noise(x0, torch.randn_like(x0), ac[981])
    steps = [(981, ac[981], ac[661]), (661, ac[661], ac[301]), (301, ac[301], torch.tensor(1.0, dtype=torch.float64))]
    out = sync_sample_loop(m, oracle, steps, x_T, "x0")
    torch.testing.assert_close(m.inverse_mapping(out), z0, rtol=0, atol=1e-10)


def test_unknown_case_is_one_clear_error():
    m = WindowGrid(8, 8, 8, 8)
    with pytest.raises(ValueError, match="unknown sync variable"):
        sync_ddim_step(m, torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), 0.5, 0.6, "z0")
    assert set(SYNC_CASES) == {"none", "eps", "x0", "xt"}


def test_loop_checks_every_step():
    m = WindowGrid(8, 8, 8, 8)
    seen = []
    steps = [(10, AC[10], AC[5]), (5, AC[5], AC[0])]
    sync_sample_loop(m, fake_eps, steps, torch.zeros(1, 3, 8, 8), "x0", check=lambda x, i, t: seen.append((i, t)))
    assert seen == [(0, 10), (1, 5)]


# ---------------------------------------------------------------- equal to the synchronization reference


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_window_maps_equal_the_homework_reference(grid, dtype):
    from synchronization.windows import WindowMapping

    ours, theirs = WindowGrid(*grid), WindowMapping(*grid)
    assert ours.views == theirs.views and torch.equal(ours.index, theirs.index)
    assert torch.equal(ours.count, theirs.count)
    g = torch.Generator().manual_seed(len(ours))
    z = torch.randn(1, 4, ours.height, ours.width, generator=g).to(dtype)
    assert torch.equal(ours.forward_mapping(z), theirs.forward_mapping(z))
    x = torch.randn(len(ours), 4, *ours.window, generator=g).to(dtype)
    a, b = ours.inverse_mapping(x), theirs.inverse_mapping(x)
    assert a.dtype == b.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, -1])
def test_rotations_equal_the_homework_views(k):
    from synchronization.views import InnerRotate, Rotate
    from synchronization.views import inner_rotation_index as homework_index

    x = torch.randn(2, 3, 6, 6)
    view = Rotate(k, "r")
    assert torch.equal(rotate_quarter_turns(x, k), view.view(x))
    assert torch.equal(rotate_quarter_turns(x, -k), view.inverse_view(x))
    for size in (16, 64):
        for angle in (90.0 * k, 45.0, 30.0, 137.0):
            assert torch.equal(inner_rotation_index(size, angle), homework_index(size, angle)), (size, angle)
    y = torch.randn(1, 3, 16, 16)
    inner = InnerRotate(90.0 * k)
    assert torch.equal(permute_pixels(y, inner_rotation_index(16, 90.0 * k)), inner.view(y))


def _homework_mappings():
    from synchronization.views import ViewMapping, get_view
    from synchronization.windows import WindowMapping

    views = ViewMapping([get_view("identity"), get_view("rotate_cw"), get_view("negate"), get_view("inner_rotate")])
    return {"windows": (WindowMapping(8, 20, 8, 4), (8, 8)), "circular": (WindowMapping(8, 16, 8, 4, True), (8, 8)),
            "views": (views, (16, 16))}


@pytest.mark.parametrize("sync", SYNC_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_step_equals_the_homework_one_step_process(sync, dtype):
    from synchronization.core import one_step_process

    g = torch.Generator().manual_seed(2)
    for name, (mapping, (h, w)) in _homework_mappings().items():
        x_t = torch.randn(len(mapping.views), 3, h, w, generator=g).to(dtype)  # independent: the cases differ

        def eps_fn(x, t):
            return torch.cat([fake_eps(x, t), -x], dim=1)  # IF-like 2C channels

        ours = sync_denoise_step(mapping, eps_fn, x_t, 741, AC[741], AC[721], sync)
        theirs = one_step_process(mapping, eps_fn, x_t, 741, AC[741], AC[721], sync)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype == dtype and torch.equal(a, b), (name, sync)


@pytest.mark.parametrize("sync", ["x0", "eps", "xt"])
def test_loop_on_the_reference_grid_equals_the_homework_sample(sync):
    """What ``benchmarks/bench_sync.py`` runs (WindowGrid + common loop) is the homework's panorama sampler."""
    from synchronization.core import initial_noise, sample, schedule_from_config
    from synchronization.windows import WindowMapping

    schedule = schedule_from_config(SD_CONFIG, 6)
    ours, theirs = WindowGrid(8, 24, 8, 4), WindowMapping(8, 24, 8, 4)
    x_T = initial_noise(theirs, (1, 4, 8, 24), len(theirs), (4, 8, 8), "independent", torch.Generator().manual_seed(3))
    z_ref, x_ref = sample(theirs, fake_eps, schedule, x_T, sync, progress=False)
    x = sync_sample_loop(ours, fake_eps, schedule.steps(), x_T, sync)
    torch.testing.assert_close(x, x_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.inverse_mapping(x), z_ref, rtol=1e-5, atol=1e-5)
