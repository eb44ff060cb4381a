"""The DPS correction is -zeta * grad_{x_t} sum_i ||y_i - A(x0_hat(x_t))_i||, checked by finite differences."""

import pytest
import torch

from common.toy.train_faces import build_tiny_unet
from ddpm_ddim.sampling import unet_eps
from ddpm_ddim.schedulers import DDIMScheduler
from dps.dps import dps_sample, dps_update
from dps.operators import Inpainting, SuperResolution, random_mask


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_tiny_unet(8).eval().requires_grad_(False)


@pytest.mark.parametrize("op_name", ["inpainting", "sr"])
def test_dps_gradient_matches_finite_differences(tiny, op_name):
    g = torch.Generator().manual_seed(1)
    op = Inpainting(random_mask(2, 8, generator=g)) if op_name == "inpainting" else SuperResolution(2, "avgpool")
    y = op.forward(torch.rand(2, 3, 8, 8, generator=g) * 2 - 1)
    sched = DDIMScheduler(clip_sample=False)
    sched.set_timesteps(10)
    t = int(sched.timesteps[7])

    def objective(x):  # sum over images of ||y - A(x0_hat(x))||_2
        x0_hat = sched.step(unet_eps(tiny, x, t), t, x).pred_original_sample
        return torch.linalg.vector_norm((y - op.forward(x0_hat)).flatten(1), dim=1).sum()

    x = (0.5 * torch.randn(2, 3, 8, 8, generator=g)).requires_grad_(True)
    with torch.enable_grad():
        out = sched.step(unet_eps(tiny, x, t), t, x)
        new_prev, norms = dps_update(out.prev_sample, x, out.pred_original_sample, y, op, scale=1.0)
    grad = (out.prev_sample.detach() - new_prev)  # = 1.0 * grad of the objective
    assert not new_prev.requires_grad and norms.shape == (2,)
    with torch.no_grad():
        torch.testing.assert_close(norms.sum(), objective(x))
        for _ in range(3):
            v = torch.randn(x.shape, generator=g)
            h = 1e-2
            fd = (objective(x + h * v) - objective(x - h * v)) / (2 * h)
            assert abs(fd - (grad * v).sum()) < 0.02 * abs(fd) + 1e-3


def test_dps_with_scale_zero_is_plain_ddim(tiny):
    from common.gpu import make_generators
    from ddpm_ddim.sampling import sample_batch

    sched = DDIMScheduler()
    sched.set_timesteps(3)
    plain = sample_batch(tiny, sched, make_generators([4, 5]))
    op = SuperResolution(2, "avgpool")
    out = dps_sample(tiny, DDIMScheduler(), torch.zeros(2, 3, 4, 4), op, 3, 0.0, make_generators([4, 5]))
    torch.testing.assert_close(out, plain)
    guided = dps_sample(tiny, DDIMScheduler(), torch.zeros(2, 3, 4, 4), op, 3, 1.0, make_generators([4, 5]))
    assert not torch.allclose(guided, plain)
    # pulling toward y = 0 moves the low-resolution image toward 0
    assert op.forward(guided).norm() < op.forward(plain).norm()
    with pytest.raises(ValueError):
        dps_sample(tiny, DDIMScheduler(), torch.zeros(2, 3, 4, 4), op, 3, -1.0, make_generators([4, 5]))
