"""Samplers with an exact-eps oracle (single-point data set) land on the data point; seeds are batch-independent."""

import types

import pytest
import torch

from ddpm_ddim.sampling import sample_images
from ddpm_ddim.schedulers import DDIMScheduler, DDPMScheduler


class OracleUNet(torch.nn.Module):
    """eps_theta(x_t, t) = (x_t - sqrt(alpha_bar_t) x*) / sqrt(1 - alpha_bar_t): the exact noise for data = {x*}."""

    def __init__(self, x_star, alphas_cumprod):
        super().__init__()
        self.x_star = torch.nn.Parameter(x_star, requires_grad=False)
        self.alphas_cumprod = alphas_cumprod
        c, h, _ = x_star.shape
        self.config = types.SimpleNamespace(in_channels=c, sample_size=h)

    def forward(self, x, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(x)
        return types.SimpleNamespace(sample=(x - a.sqrt() * self.x_star) / (1 - a).sqrt())


@pytest.fixture
def x_star():
    return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8


@pytest.mark.parametrize("name,steps,eta", [("DDIM", 10, 0.0), ("DDIM", 7, 1.0), ("DDPM", 1000, 0.0),
                                            ("DDPM", 13, 0.0)])
def test_oracle_sampling_recovers_the_data_point(x_star, name, steps, eta):
    cls = DDIMScheduler if name == "DDIM" else DDPMScheduler
    sched = cls(timestep_spacing="trailing" if steps == 7 else "leading")
    unet = OracleUNet(x_star, sched.alphas_cumprod)
    out = sample_images(unet, sched, 3, steps, seed=5, batch_size=2, eta=eta, progress=False)
    torch.testing.assert_close(out, x_star.expand_as(out), rtol=0, atol=2e-4)


def test_ddim_oracle_trajectory_follows_the_closed_form(x_star):
    # with eta = 0 and an exact oracle, x_t = sqrt(a_t) x* + sqrt(1 - a_t) eps_T at every grid level
    sched = DDIMScheduler()
    sched.set_timesteps(10)
    unet = OracleUNet(x_star, sched.alphas_cumprod)
    eps_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a_T = sched.alphas_cumprod[sched.timesteps[0]]
    x = a_T.sqrt() * x_star + (1 - a_T).sqrt() * eps_T
    for t in sched.timesteps.tolist():
        out = sched.step(unet(x, torch.tensor([t])).sample, t, x)
        torch.testing.assert_close(out.pred_original_sample[0], x_star, rtol=0, atol=1e-5)
        prev = sched.previous_timestep(t)
        a_prev = sched.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
        torch.testing.assert_close(out.prev_sample, a_prev.sqrt() * x_star + (1 - a_prev).sqrt() * eps_T,
                                   rtol=0, atol=1e-5)
        x = out.prev_sample


def test_samples_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    from common.toy.train_faces import build_tiny_unet

    unet = build_tiny_unet(8)
    sched = DDPMScheduler()
    a = sample_images(unet.eval(), sched, 3, 4, seed=2, batch_size=3, progress=False)
    b = sample_images(unet, sched, 3, 4, seed=2, batch_size=1, progress=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    c = sample_images(unet, sched, 3, 4, seed=3, batch_size=3, progress=False)
    assert not torch.allclose(a, c)
