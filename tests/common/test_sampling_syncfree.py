"""Sampling loops whose steps never make the CPU wait for the GPU (issue #19), checked with torch's CUDA sync debug
mode: a loop of 6 steps may not synchronize more often than the same loop of 2 steps (one-time copies before the
loop and the final NaN check after it are allowed; nothing per step). Skipped without CUDA.

Covered: the reference DDIM / DDPM loops (``common.sampling``), the homework's schedulers (``ddpm_ddim.sampling``),
DPS (``dps.dps``) and the synchronized sampler with its windows, views and CFG denoiser (``synchronization``).
"""

from __future__ import annotations

import types
import warnings
from collections import Counter
from collections.abc import Callable

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def syncs_of(fn: Callable[[], object]) -> Counter:
    """Where (file:line) ``fn()`` made the CPU wait for the GPU, from torch's sync debug warnings."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # not Event.synchronize (torch/cuda/streams.py), should the debug mode report it: a check read a step late
    # waits for its own copy only (common.gpu.HostCopy), not for the work queued after it
    return Counter(f"{w.filename}:{w.lineno}" for w in caught
                   if "synchroniz" in str(w.message) and not w.filename.endswith("streams.py"))


def assert_no_sync_per_step(run: Callable[[int], object]) -> None:
    run(2)  # warm-up: CUDA context, cuBLAS / cuDNN handles, cached constants
    few, many = syncs_of(lambda: run(2)), syncs_of(lambda: run(6))
    extra = many - few
    assert not extra, f"{sum(extra.values())} more CUDA syncs with 4 more steps, at {dict(extra)}"


@pytest.fixture(scope="module")
def tiny_unet():
    from common.toy.train_faces import build_tiny_unet

    torch.manual_seed(0)
    return build_tiny_unet(8).eval().requires_grad_(False).to("cuda")


@cuda
@pytest.mark.parametrize("sampler,eta", [("DDIM", 0.0), ("DDIM", 0.5), ("DDPM", 0.0)])
@pytest.mark.parametrize("generator_device", ["cuda", "cpu"])  # cpu: draws go through pinned memory
def test_reference_loops(tiny_unet, sampler, eta, generator_device):
    from common.gpu import make_generators
    from common.sampling import sample_unet, sampling_config

    config = sampling_config({})
    assert_no_sync_per_step(lambda steps: sample_unet(tiny_unet, config, sampler, steps,
                                                      make_generators([0, 1], generator_device), eta))


@cuda
@pytest.mark.parametrize("name,eta", [("DDIM", 0.0), ("DDIM", 0.5), ("DDPM", 0.0)])
def test_homework_schedulers(tiny_unet, name, eta):
    from common.gpu import make_generators
    from common.toy.train_faces import SCHEDULER_CONFIG
    from ddpm_ddim.sampling import sample_batch
    from ddpm_ddim.schedulers import make_scheduler

    def run(steps):
        scheduler = make_scheduler(name, SCHEDULER_CONFIG)
        scheduler.set_timesteps(steps, device="cpu")
        return sample_batch(tiny_unet, scheduler, make_generators([0, 1], "cuda"), eta)

    assert_no_sync_per_step(run)


@cuda
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("mode", ["avgpool", "bicubic"])  # bicubic: DPS's resizer matrices
def test_dps(tiny_unet, eta, mode):
    from common.gpu import make_generators
    from common.sampling import sampling_config
    from dps.dps import dps_sample
    from dps.operators import SuperResolution

    y = torch.zeros(2, 3, 4, 4, device="cuda")
    assert_no_sync_per_step(lambda steps: dps_sample(tiny_unet, sampling_config({}), y, SuperResolution(2, mode),
                                                     steps, 1.0, make_generators([0, 1], "cuda"), eta))


class _FakeUNet(torch.nn.Module):
    """A text-conditioned 'UNet' of plain tensor ops, out = x (0.1 + 0.01 mean(embeds)) + t / 1e4, as ``.sample``
    (mild enough that CFG at 7.5 stays far inside the divergence bound)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), device="cuda"))

    def forward(self, x, t, encoder_hidden_states, class_labels=None):
        scale = 0.1 + 0.01 * encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return types.SimpleNamespace(sample=x * scale + t.view(-1, 1, 1, 1) / 1e4)


@cuda
@pytest.mark.parametrize("app", ["wide", "views"])
@pytest.mark.parametrize("sync,canonical", [("x0", False), ("eps", True)])
def test_synchronized_sampler(app, sync, canonical):
    from synchronization.core import initial_noise, sample, schedule_from_config
    from synchronization.denoisers import TextDenoiser
    from synchronization.views import ViewMapping, get_view
    from synchronization.windows import WindowMapping

    if app == "wide":
        mapping, canvas, instance = WindowMapping(8, 24, 8, 4, circular=True), (1, 4, 8, 24), (4, 8, 8)
    else:
        mapping = ViewMapping([get_view("identity"), get_view("rotate_cw"), get_view("inner_rotate", 90.0)])
        canvas, instance = (1, 3, 16, 16), (3, 16, 16)
    n = len(mapping.views)
    cond, uncond = torch.randn(n, 5, 8, device="cuda"), torch.randn(n, 5, 8, device="cuda")

    def run(steps):
        schedule = schedule_from_config({"num_train_timesteps": 1000, "set_alpha_to_one": False}, steps)
        eps_fn = TextDenoiser(_FakeUNet(), cond, uncond, 7.5, schedule)
        x_T = initial_noise(mapping, canvas, n, instance, "canonical", torch.Generator().manual_seed(0)).cuda()
        return sample(mapping, eps_fn, schedule, x_T, sync, canonical, progress=False)

    assert_no_sync_per_step(run)
