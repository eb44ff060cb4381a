"""The DPS correction is -zeta * grad_{x_t} sum_i ||y_i - A(x0_hat(x_t))_i||, checked by finite differences."""

import pytest
import torch

from common.ddim import ddim_step
from common.gpu import make_generators
from common.sampling import sample_unet, sampling_config, unet_eps
from common.toy.train_faces import build_tiny_unet
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
    config = sampling_config({"clip_sample": False})
    timesteps = config.timesteps(10)
    t, t_prev = int(timesteps[7]), int(timesteps[8])
    alpha_bar_t, alpha_bar_prev = config.alphas_cumprod[t], config.alphas_cumprod[t_prev]

    def ddim(x):  # (x'_{t-1}, x0_hat(x))
        return ddim_step(x, unet_eps(tiny, x, t), alpha_bar_t, alpha_bar_prev)

    def objective(x):  # sum over images of ||y - A(x0_hat(x))||_2
        return torch.linalg.vector_norm((y - op.forward(ddim(x)[1])).flatten(1), dim=1).sum()

    x = (0.5 * torch.randn(2, 3, 8, 8, generator=g)).requires_grad_(True)
    with torch.enable_grad():
        prev_sample, x0_hat = ddim(x)
        new_prev, norms = dps_update(prev_sample, x, x0_hat, y, op, scale=1.0)
    grad = (prev_sample.detach() - new_prev)  # = 1.0 * grad of the objective
    assert not new_prev.requires_grad and norms.shape == (2,)
    with torch.no_grad():
        torch.testing.assert_close(norms.sum(), objective(x))
        for _ in range(3):
            v = torch.randn(x.shape, generator=g)
            h = 1e-2
            fd = (objective(x + h * v) - objective(x - h * v)) / (2 * h)
            assert abs(fd - (grad * v).sum()) < 0.02 * abs(fd) + 1e-3


def test_dps_with_scale_zero_is_plain_ddim(tiny):
    config = sampling_config({})
    plain = sample_unet(tiny, config, "DDIM", 3, make_generators([4, 5]))
    op = SuperResolution(2, "avgpool")
    out = dps_sample(tiny, config, torch.zeros(2, 3, 4, 4), op, 3, 0.0, make_generators([4, 5]))
    torch.testing.assert_close(out, plain)
    guided = dps_sample(tiny, config, torch.zeros(2, 3, 4, 4), op, 3, 1.0, make_generators([4, 5]))
    assert not torch.allclose(guided, plain)
    # pulling toward y = 0 moves the low-resolution image toward 0
    assert op.forward(guided).norm() < op.forward(plain).norm()
    with pytest.raises(ValueError):
        dps_sample(tiny, config, torch.zeros(2, 3, 4, 4), op, 3, -1.0, make_generators([4, 5]))


def test_a_nan_update_is_a_clear_error_not_a_clamped_image(tiny, monkeypatch):
    import dps.dps

    def nan_update(prev_sample, *args, **kwargs):
        return torch.full_like(prev_sample, float("nan")).detach(), torch.zeros(prev_sample.shape[0])

    monkeypatch.setattr(dps.dps, "dps_update", nan_update)
    with pytest.raises(ValueError, match="NaN"):
        dps_sample(tiny, sampling_config({}), torch.zeros(2, 3, 4, 4), SuperResolution(2, "avgpool"), 2, 1.0,
                   make_generators([0, 1]))


def test_dps_does_not_import_the_ddim_homework():
    """A stubbed or wrong ``ddpm_ddim`` must not break DPS: dps samples with ``common`` only."""
    import ast
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[2] / "dps").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "ddpm_ddim" for n in names), (path.name, names)
