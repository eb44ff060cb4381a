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


def _fail_at(step, value):
    """A dps_update that returns ``value`` everywhere at ``step`` (1-based) and a plain DDIM step otherwise;
    ``calls`` counts the steps run."""
    calls = []

    def update(prev_sample, *args, **kwargs):
        calls.append(1)
        out = torch.full_like(prev_sample, value) if len(calls) == step else prev_sample
        return out.detach(), torch.zeros(prev_sample.shape[0])

    return update, calls


@pytest.mark.parametrize("value, needle", [(float("nan"), "became NaN or infinite"), (1e4, "diverged (max |value|")])
@pytest.mark.parametrize("step", [2, 3])  # 3 = the last step: its check is only read by the final flush
def test_a_check_read_a_step_late_reports_the_same_step_and_message(tiny, monkeypatch, value, needle, step):
    """LazyChecks forced lazy on the CPU (as on a GPU): the same one-line error naming the step that failed,
    raised one step later (or at the end), never a returned image."""
    import dps.dps
    from common.divergence import Diverged, LazyChecks

    messages, runs = {}, {}
    for mode in ("eager", "lazy"):
        update, calls = _fail_at(step, value)
        monkeypatch.setattr(dps.dps, "dps_update", update)
        checks = LazyChecks(lazy_devices=("cpu",)) if mode == "lazy" else None
        with pytest.raises(Diverged) as info:
            dps_sample(tiny, sampling_config({}), torch.zeros(1, 3, 4, 4), SuperResolution(2, "avgpool"), 3, 1.0,
                       make_generators([0]), checks=checks)
        messages[mode], runs[mode] = str(info.value), len(calls)
        if mode == "lazy":
            assert checks.calls == min(step + 1, 3) and not checks.pending  # queued, then all read
    assert messages["lazy"] == messages["eager"] and "\n" not in messages["eager"]
    message = messages["eager"]
    assert f"at step {step} " in message and needle in message and "lower --scale (now 1)" in message
    assert runs == {"eager": step, "lazy": min(step + 1, 3)}  # the lazy check is read one step later


def test_dps_does_not_import_the_ddim_homework():
    """A stubbed or wrong ``ddpm_ddim`` must not break DPS: dps samples with ``common`` only."""
    import ast
    from pathlib import Path

    for path in (Path(__file__).resolve().parents[2] / "dps").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "ddpm_ddim" for n in names), (path.name, names)
