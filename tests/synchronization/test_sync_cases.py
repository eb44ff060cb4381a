"""The reverse step against diffusers' DDIMScheduler, and the eps / x0 / x_t synchronization cases."""

import pytest
import torch
from diffusers import DDIMScheduler

from synchronization.core import (
    compute_prev_state,
    compute_tweedie,
    initial_noise,
    one_step_process,
    sample,
    schedule_from_config,
)
from synchronization.views import ViewMapping, get_view
from synchronization.windows import WindowMapping

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon"}
IF_LIKE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "steps_offset": 0,
           "clip_sample": False, "prediction_type": "epsilon"}


@pytest.mark.parametrize("config,steps,first,last", [(SD, 50, 981, 1), (IF_LIKE, 30, 957, 0)])
def test_schedule_matches_diffusers(config, steps, first, last):
    sched = DDIMScheduler(**config)
    sched.set_timesteps(steps)
    ours = schedule_from_config(config, steps)
    assert torch.equal(ours.timesteps, sched.timesteps) and ours.timesteps[0] == first and ours.timesteps[-1] == last
    torch.testing.assert_close(ours.alphas_cumprod, sched.alphas_cumprod)
    assert ours.final_alpha_cumprod == pytest.approx(float(sched.final_alpha_cumprod))


@pytest.mark.parametrize("config", [SD, IF_LIKE])
def test_reverse_step_equals_ddim_scheduler_step(config):
    sched = DDIMScheduler(**config)
    sched.set_timesteps(10)
    ours = schedule_from_config(config, 10)
    g = torch.Generator().manual_seed(0)
    for i in (0, 5, 9):  # includes the last step (alpha_bar_prev = final_alpha_cumprod)
        t = int(sched.timesteps[i])
        x_t, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 6, 8, 8, generator=g)  # IF: eps + variance
        a_t, a_prev = ours.alpha_bars(i)
        x0 = compute_tweedie(x_t, eps, a_t)
        ref = sched.step(eps[:, :3], t, x_t, eta=0.0)
        torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(compute_prev_state(x_t, x0, a_t, a_prev), ref.prev_sample, rtol=1e-4, atol=1e-4)


def test_fp16_last_step_is_finite():
    ours = schedule_from_config(SD, 50)
    a_t, a_prev = ours.alpha_bars(49)
    x_t = torch.randn(1, 4, 8, 8).half()
    x0 = compute_tweedie(x_t, torch.randn(1, 4, 8, 8).half(), a_t)
    out = compute_prev_state(x_t, x0, a_t, a_prev)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def fake_eps(x, t):
    """A deterministic non-linear 'noise predictor' (position-dependent, so views matter)."""
    h, w = x.shape[-2:]
    ramp = torch.linspace(-1, 1, w, dtype=x.dtype).view(1, 1, 1, w) + torch.linspace(0, 0.5, h, dtype=x.dtype).view(
        1, 1, h, 1)
    return torch.tanh(0.7 * x + ramp * (t / 1000.0)) + 0.1 * x.roll(1, dims=1)


MAPPINGS = {
    "windows": (WindowMapping(8, 20, window=8, stride=4), (1, 3, 8, 20), (3, 8, 8)),
    "views": (ViewMapping([get_view("identity"), get_view("rotate_cw"), get_view("inner_rotate")]),
              (1, 3, 16, 16), (3, 16, 16)),
}


def _run(mapping, x_T, sync, canonical, steps=8):
    schedule = schedule_from_config(SD, steps)
    return sample(mapping, fake_eps, schedule, x_T.double(), sync, canonical, progress=False)


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_cases_coincide_from_one_canonical_noise(name):
    mapping, canonical_shape, instance_shape = MAPPINGS[name]
    n = len(mapping.forward_mapping(torch.zeros(canonical_shape)))
    x_T = initial_noise(mapping, canonical_shape, n, instance_shape, "canonical", torch.Generator().manual_seed(0))
    results = {(s, c): _run(mapping, x_T, s, c)[0] for s in ("eps", "x0", "xt") for c in (False, True)}
    ref = results[("x0", False)]
    for key, z in results.items():
        torch.testing.assert_close(z, ref, rtol=0, atol=1e-9, msg=f"case {key} differs")
    # not trivially equal: the unsynchronized run differs
    z_none, _ = _run(mapping, x_T, "none", False)
    assert (z_none - ref).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_cases_differ_from_independent_noise(name):
    mapping, canonical_shape, instance_shape = MAPPINGS[name]
    n = len(mapping.forward_mapping(torch.zeros(canonical_shape)))
    x_T = initial_noise(mapping, canonical_shape, n, instance_shape, "independent", torch.Generator().manual_seed(0))
    z = {s: _run(mapping, x_T, s, False)[0] for s in ("eps", "x0", "xt")}
    for a, b in (("eps", "x0"), ("x0", "xt"), ("eps", "xt")):
        assert (z[a] - z[b]).abs().max() > 1e-3, f"{a} and {b} coincide with independent starts"


def test_single_identity_view_is_plain_ddim():
    """With one identity view every case is ordinary DDIM: compare with DDIMScheduler's loop."""
    sched = DDIMScheduler(**SD)
    sched.set_timesteps(6)
    mapping = ViewMapping([get_view("identity")])
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(fake_eps(x, int(t)), t, x, eta=0.0).prev_sample
    z, _ = sample(mapping, fake_eps, schedule_from_config(SD, 6), x_T, "x0", progress=False)
    torch.testing.assert_close(z, x, rtol=1e-4, atol=1e-4)


def test_one_step_rejects_unknown_sync():
    mapping = ViewMapping([get_view("identity")])
    with pytest.raises(ValueError, match="sync"):
        one_step_process(mapping, fake_eps, torch.zeros(1, 3, 4, 4), 10, torch.tensor(0.5), torch.tensor(0.6), "z")
