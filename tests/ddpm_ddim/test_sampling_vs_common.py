"""The homework's schedulers sample exactly what the reference loops of ``common.sampling`` sample (same seeds)."""

import pytest
import torch

from common.sampling import sample_images as reference_sample_images
from common.sampling import sampling_config
from common.toy.train_faces import SCHEDULER_CONFIG, build_tiny_unet
from ddpm_ddim.sampling import sample_images
from ddpm_ddim.schedulers import make_scheduler


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny_unet(8).eval().requires_grad_(False)


@pytest.mark.parametrize("name,steps,eta,overrides", [
    ("DDIM", 10, 0.0, {}), ("DDIM", 7, 0.5, {"timestep_spacing": "trailing", "set_alpha_to_one": False}),
    ("DDIM", 6, 1.0, {"clip_sample": False, "timestep_spacing": "linspace"}), ("DDPM", 9, 0.0, {}),
    ("DDPM", 5, 0.0, {"variance_type": "fixed_large", "timestep_spacing": "trailing"})])
def test_homework_schedulers_equal_the_reference_loops(tiny, name, steps, eta, overrides):
    config = {**SCHEDULER_CONFIG, **overrides}
    ours = sample_images(tiny, make_scheduler(name, config), 3, steps, seed=4, batch_size=2, eta=eta, progress=False)
    ref = reference_sample_images(tiny, sampling_config(config), name, 3, steps, seed=4, batch_size=2, eta=eta,
                                  progress=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)  # bit for bit


def test_a_nan_step_is_a_clear_error(tiny, monkeypatch):
    from ddpm_ddim.schedulers import DDIMScheduler, SchedulerOutput

    def nan_step(self, model_output, timestep, sample, **kwargs):
        nan = torch.full_like(sample, float("nan"))
        return SchedulerOutput(nan, nan)

    monkeypatch.setattr(DDIMScheduler, "step", nan_step)
    with pytest.raises(ValueError, match="NaN"):
        sample_images(tiny, make_scheduler("DDIM", SCHEDULER_CONFIG), 1, 2, progress=False)


@pytest.mark.parametrize("name,eta,draws", [("DDIM", 0.0, 0), ("DDIM", 0.5, 4), ("DDPM", 0.0, 3)])
def test_noise_is_drawn_only_where_a_step_adds_it_and_nothing_changes(tiny, monkeypatch, name, eta, draws):
    """DDIM eta = 0 adds no noise and DDPM none at t = 0: skipping those draws leaves every image bit for bit what
    a loop drawing z at every step (written out here) samples."""
    import ddpm_ddim.sampling
    from common.gpu import make_generators, randn_per_sample
    from common.sampling import model_shape, unet_eps
    from ddpm_ddim.sampling import sample_batch

    scheduler = make_scheduler(name, SCHEDULER_CONFIG)
    scheduler.set_timesteps(4)  # DDPM: 750, 500, 250, 0
    gens = make_generators([7, 8])
    x = randn_per_sample(model_shape(tiny), gens, dtype=torch.float32)
    with torch.no_grad():
        for t in scheduler.timesteps.tolist():  # the previous loop: one z per step, used or not
            z = randn_per_sample(tuple(x.shape[1:]), gens, dtype=torch.float32)
            kwargs = {"eta": eta} if name == "DDIM" else {}
            x = scheduler.step(unet_eps(tiny, x, t), t, x, noise=z, **kwargs).prev_sample
    calls = []

    def counted(shape, generators, **kwargs):
        calls.append(shape)
        return randn_per_sample(shape, generators, **kwargs)

    monkeypatch.setattr(ddpm_ddim.sampling, "randn_per_sample", counted)
    out = sample_batch(tiny, scheduler, make_generators([7, 8]), eta)
    assert len(calls) == 1 + draws  # x_T, then z for the steps that add it
    torch.testing.assert_close(out, x.clamp(-1, 1), rtol=0, atol=0)
