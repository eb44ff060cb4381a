"""Sampling loops that never wait for the GPU (issue #19): checks read a step late report exactly what the
immediate ones do, and the step-invariant tensors of a step are built once, with the same values."""

import math
import types

import pytest
import torch

from common.divergence import Diverged
from synchronization.core import NonFiniteSampleError, StepChecks, sample, schedule_from_config
from synchronization.denoisers import TextDenoiser
from synchronization.views import ViewMapping, get_view
from synchronization.windows import WindowMapping

SCHEDULE = {"num_train_timesteps": 1000, "set_alpha_to_one": False}


def _failing_eps(step, value):
    """eps_fn returning ``value`` at grid step ``step`` (0-based) and 0.1 x_t otherwise; ``calls`` counts steps."""
    calls = []

    def eps_fn(x, t):
        calls.append(t)
        return torch.full_like(x, value) if len(calls) == step + 1 else 0.1 * x

    return eps_fn, calls


def _run(mapping, eps_fn, x_T, checks, canonical=False):
    schedule = schedule_from_config(SCHEDULE, 4)
    return sample(mapping, eps_fn, schedule, x_T, "x0", canonical, progress=False, checks=checks)


NAN = (float("nan"), NonFiniteSampleError, "produced NaN or inf")
HUGE = (1e7, Diverged, "diverged (max |value|")  # not at the last step: there alpha_bar_prev = alpha_bar_t


@pytest.mark.parametrize("value, error, needle, step", [(*NAN, 1), (*NAN, 3), (*HUGE, 1), (*HUGE, 2)])
@pytest.mark.parametrize("canonical", [False, True])  # step 3 = the last: only the final flush reads its check
def test_a_late_check_names_the_same_step_with_the_same_message(value, error, needle, step, canonical):
    mapping = WindowMapping(4, 8, 4, 2)  # 3 overlapping windows on a [1, 3, 4, 8] canvas
    x_T = mapping.forward_mapping(torch.randn(1, 3, 4, 8, generator=torch.Generator().manual_seed(0)))
    messages, runs = {}, {}
    for mode in ("eager", "lazy"):
        eps_fn, calls = _failing_eps(step, value)
        checks = StepChecks(lazy_devices=("cpu",) if mode == "lazy" else ())
        with pytest.raises(error) as info:
            _run(mapping, eps_fn, x_T, checks, canonical)
        messages[mode], runs[mode] = str(info.value), len(calls)
        assert not checks.pending and checks.calls == (runs[mode] if mode == "lazy" else 0)
    t = schedule_from_config(SCHEDULE, 4).timesteps.tolist()[step]
    assert messages["lazy"] == messages["eager"] and "\n" not in messages["eager"]
    assert f"at step {step}" in messages["eager"] and f"t = {t}" in messages["eager"] and needle in messages["eager"]
    assert runs == {"eager": step + 1, "lazy": min(step + 2, 4)}  # read when the next step is queued, or at the end
    if error is NonFiniteSampleError:  # the message of check_step_finite, word for word
        assert messages["eager"] == (f"sampling produced NaN or inf at step {step} (t = {t}); check compute_tweedie, "
                                     "compute_prev_state and one_step_process, or use --precision fp32")
    else:
        assert messages["eager"].startswith(f"the sample x_t (t = {t}) at step {step} diverged (max |value| ")


def test_lazy_checks_leave_a_sane_run_bit_identical():
    mapping = ViewMapping([get_view("identity"), get_view("rotate_cw"), get_view("inner_rotate")])
    x_T = mapping.forward_mapping(torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    eager = _run(mapping, lambda x, t: 0.1 * x + t / 1000, x_T, StepChecks(lazy_devices=()))
    checks = StepChecks(lazy_devices=("cpu",))
    lazy = _run(mapping, lambda x, t: 0.1 * x + t / 1000, x_T, checks)
    assert checks.calls == 4 and not checks.pending
    assert all(torch.equal(a, b) for a, b in zip(eager, lazy))


def test_window_and_view_tables_are_copied_to_a_device_once():
    mapping = WindowMapping(4, 8, 4, 2, circular=True)
    index, count = mapping.tables("meta")
    assert index.device.type == "meta" and count.device.type == "meta"
    assert mapping.tables(torch.device("meta"))[0] is index  # cached: no copy at the next step
    cpu_index, cpu_count = mapping.tables("cpu")
    assert torch.equal(cpu_index, mapping.index) and torch.equal(cpu_count, mapping.count)
    view = get_view("inner_rotate", 90.0)
    z = torch.arange(64.0).view(1, 1, 8, 8)
    assert torch.equal(view.inverse_view(view.view(z)), z) and torch.equal(view.view(z), view.view(z))
    assert len(view._cache) == 2  # the index and its inverse, each built once for this (size, device)


class _FakeUNet(torch.nn.Module):
    """out = x[:, :out_ch] * (1 + mean(embeds)) + t / 1000 (+ class_label / 100), as ``.sample``."""

    def __init__(self, out_channels):
        super().__init__()
        self.out_channels = out_channels
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, encoder_hidden_states, class_labels=None):
        scale = 1 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        out = x[:, : self.out_channels] * scale + t.view(-1, 1, 1, 1) / 1000
        out = out if class_labels is None else out + class_labels.view(-1, 1, 1, 1) / 100
        return types.SimpleNamespace(sample=out)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_text_denoiser_is_cfg_of_the_unet_call_after_call(prediction):
    """eps = eps_u + s (eps_c - eps_u) (Ho & Salimans 2022, Eq. 6); v-prediction: eps = sqrt(1-a) x + sqrt(a) v;
    IF stage II: the condition is concatenated to x_t and only the first C output channels are eps."""
    g = torch.Generator().manual_seed(2)
    n, c, s = 2, 3, 7.5
    cond, uncond = torch.randn(n, 5, 4, generator=g), torch.randn(n, 5, 4, generator=g)
    condition = torch.randn(n, 3, 4, 4, generator=g)
    schedule = schedule_from_config({**SCHEDULE, "prediction_type": prediction}, 4)
    denoiser = TextDenoiser(_FakeUNet(2 * c), cond, uncond, s, schedule, max_batch=3, condition=condition,
                            class_labels=20)
    for t in schedule.timesteps.tolist()[:2]:  # the second call uses the cached constants
        x_t = torch.randn(n, c, 4, 4, generator=g)
        x_in = torch.cat([x_t, condition], dim=1)  # [N, 2C, H, W]: the fake UNet's first 2C input channels
        eps_u, eps_c = (x_in * (1 + e.mean(dim=(1, 2)).view(-1, 1, 1, 1)) + t / 1000 + 0.2 for e in (uncond, cond))
        out = (eps_u + s * (eps_c - eps_u))[:, :c]  # IF: the first C of the 2C output channels are eps
        if prediction == "v_prediction":
            a = float(schedule.alphas_cumprod[t])
            out = math.sqrt(1 - a) * x_t + math.sqrt(a) * out
        torch.testing.assert_close(denoiser(x_t, t), out, rtol=1e-5, atol=1e-6)
    assert denoiser.calls == 4  # 2 steps x 2 chunks of the [2N = 4] batch (max_batch 3)
