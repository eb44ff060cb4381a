"""common.sampling's DDIM / DDPM loops equal diffusers' schedulers (an independent oracle) on a tiny random eps_fn."""

import diffusers
import pytest
import torch

from common.gpu import make_generators
from common.sampling import (
    ddim_sample_loop,
    ddpm_sample_loop,
    grid_alpha_bars,
    sample_images,
    sampling_config,
)

CONFIG = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
          "clip_sample": True, "variance_type": "fixed_small"}
SHAPE = (2, 3, 8, 8)


def _eps_fn():
    """A fixed random nonlinear 'model' eps(x_t, t), so that x0_hat hits the clip range at some steps."""
    g = torch.Generator().manual_seed(11)
    w, b = torch.randn(3, 3, generator=g), torch.randn(3, 1, 1, generator=g)

    def eps_fn(x, t):
        return torch.tanh(torch.einsum("oc,bchw->bohw", w, x) + b * (t / 1000)) * 1.3

    return eps_fn


def _x_T(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def _diffusers_chain(sched, steps, x, eps_fn, seeds, **step_kwargs):
    sched.set_timesteps(steps)
    gens = make_generators(seeds)
    for t in sched.timesteps:
        x = sched.step(eps_fn(x, int(t)), t, x, generator=gens, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("spacing,steps,offset", [("leading", 50, 0), ("leading", 10, 1), ("trailing", 8, 0)])
@pytest.mark.parametrize("eta", [0.0, 0.6, 1.0])
def test_ddim_loop_equals_diffusers(spacing, steps, offset, eta):
    # diffusers steps to t - T//N: on the grid for 'leading' and for 'trailing' with T % N == 0
    cfg = dict(CONFIG, timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=offset == 0)
    eps_fn, x_T = _eps_fn(), _x_T()
    ref = _diffusers_chain(diffusers.DDIMScheduler.from_config(cfg), steps, x_T, eps_fn, [5, 6], eta=eta)
    sc = sampling_config(cfg)
    out = ddim_sample_loop(eps_fn, x_T, sc.timesteps(steps), sc.alphas_cumprod, eta, make_generators([5, 6]),
                           sc.clip_sample, sc.final_alpha_cumprod)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_ddim_loop_without_clipping_equals_diffusers_and_is_differentiable():
    cfg = dict(CONFIG, clip_sample=False)
    eps_fn, x_T = _eps_fn(), _x_T(1)
    ref = _diffusers_chain(diffusers.DDIMScheduler.from_config(cfg), 20, x_T, eps_fn, [0, 1])
    sc = sampling_config(cfg)
    assert sc.clip_sample is None and sc.final_alpha_cumprod == 1.0
    x_T = x_T.clone().requires_grad_(True)
    out = ddim_sample_loop(eps_fn, x_T, sc.timesteps(20), sc.alphas_cumprod)  # eta = 0 needs no generators
    torch.testing.assert_close(out.detach(), ref, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x_T)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("spacing,steps", [("leading", 1000), ("leading", 50), ("trailing", 37), ("linspace", 20)])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_loop_equals_diffusers(spacing, steps, variance_type):
    cfg = dict(CONFIG, timestep_spacing=spacing, variance_type=variance_type)
    eps_fn, x_T = _eps_fn(), _x_T(2)
    ref = _diffusers_chain(diffusers.DDPMScheduler.from_config(cfg), steps, x_T, eps_fn, [7, 8])
    sc = sampling_config(cfg)
    out = ddpm_sample_loop(eps_fn, x_T, sc.timesteps(steps), sc.alphas_cumprod, make_generators([7, 8]),
                           sc.variance_type, sc.clip_sample)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_config_defaults_grid_and_errors():
    cfg = {"set_alpha_to_one": False, "beta_schedule": "squaredcos_cap_v2"}
    sc = sampling_config(cfg, timestep_spacing="trailing")
    ref = diffusers.DDIMScheduler(beta_schedule="squaredcos_cap_v2", set_alpha_to_one=False)
    torch.testing.assert_close(sc.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    assert sc.final_alpha_cumprod == float(ref.alphas_cumprod[0]) and sc.clip_sample == 1.0
    assert sc.num_train_timesteps == 1000 and sc.timesteps(4).tolist() == [999, 749, 499, 249]
    steps = list(grid_alpha_bars([999, 500, 0], sc.alphas_cumprod, 0.5))
    assert [t for t, _, _ in steps] == [999, 500, 0] and float(steps[-1][2]) == 0.5
    assert float(steps[0][2]) == float(sc.alphas_cumprod[500])
    eps_fn, x_T = _eps_fn(), _x_T()
    with pytest.raises(ValueError, match="descending"):
        ddim_sample_loop(eps_fn, x_T, [10, 20], sc.alphas_cumprod)
    with pytest.raises(ValueError, match="generators"):
        ddim_sample_loop(eps_fn, x_T, [10, 0], sc.alphas_cumprod, eta=0.5)
    with pytest.raises(ValueError, match="generators"):
        ddpm_sample_loop(eps_fn, x_T, [10, 0], sc.alphas_cumprod, make_generators([0]))
    with pytest.raises(ValueError, match="epsilon"):
        sampling_config({"prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="spacing"):
        sampling_config({}, timestep_spacing="nope")


class _OracleUNet(torch.nn.Module):
    """eps_theta(x_t, t) = (x_t - sqrt(alpha_bar_t) x*) / sqrt(1 - alpha_bar_t): exact noise for data = {x*}."""

    def __init__(self, x_star, alphas_cumprod):
        super().__init__()
        import types

        self.x_star = torch.nn.Parameter(x_star, requires_grad=False)
        self.alphas_cumprod = alphas_cumprod
        self.config = types.SimpleNamespace(in_channels=x_star.shape[0], sample_size=x_star.shape[1])

    def forward(self, x, t):
        import types

        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(x)
        return types.SimpleNamespace(sample=(x - a.sqrt() * self.x_star) / (1 - a).sqrt())


@pytest.mark.parametrize("sampler,steps,eta", [("DDIM", 10, 0.0), ("DDIM", 7, 1.0), ("DDPM", 13, 0.0)])
def test_sample_images_lands_on_the_data_point_independently_of_the_batch(sampler, steps, eta):
    x_star = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    sc = sampling_config(CONFIG)
    unet = _OracleUNet(x_star, sc.alphas_cumprod)
    out = sample_images(unet, sc, sampler, 3, steps, seed=5, batch_size=2, eta=eta, progress=False)
    torch.testing.assert_close(out, x_star.expand_as(out), rtol=0, atol=2e-4)
    again = sample_images(unet, sc, sampler, 3, steps, seed=5, batch_size=3, eta=eta, progress=False)
    torch.testing.assert_close(again, out, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        sample_images(unet, sc, "PNDM", 1, steps, progress=False)


def test_grid_alpha_bars_are_the_schedule_values_on_the_samples_device():
    """(t, alpha_bar_t, alpha_bar_prev) = (t, alphas_cumprod[t], alphas_cumprod[next t] or the final value), placed
    on ``device`` once for the grid (the meta device stands in for a GPU: only placement is checked there)."""
    sc = sampling_config(CONFIG)
    grid = [900, 600, 300, 0]
    steps = list(grid_alpha_bars(grid, sc.alphas_cumprod, 0.25, "cpu"))
    expected = [sc.alphas_cumprod[t] for t in grid] + [torch.tensor(0.25)]
    for i, (t, a_t, a_prev) in enumerate(steps):
        assert t == grid[i] and a_t.ndim == 0 and a_t.dtype == torch.float32
        assert torch.equal(a_t, expected[i]) and torch.equal(a_prev, expected[i + 1])
    meta = list(grid_alpha_bars(grid, sc.alphas_cumprod, 0.25, "meta"))
    assert [t for t, _, _ in meta] == grid
    assert all(a.device.type == "meta" and a.shape == () for _, a_t, a_prev in meta for a in (a_t, a_prev))
    assert all(a.device.type == "cpu" for _, a, _ in grid_alpha_bars(grid, sc.alphas_cumprod))  # default: theirs
