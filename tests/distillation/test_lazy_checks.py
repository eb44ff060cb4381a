"""The runner's checks read a step late (issue #19): with ``LazyChecks`` forced lazy on the CPU, a NaN update g, a
NaN loss and diverging latents still stop the run with the eager run's one line naming the step, before any
snapshot or output is written; a healthy run is unchanged. The ``gpu`` test runs SDS steps in CUDA's sync-debug
mode, where any device-to-host read or pageable copy in a step is an error."""

from __future__ import annotations

import pytest
import torch

from common.cli import UserError
from common.divergence import LazyChecks
from distillation import runner
from distillation.guidance import Guidance
from distillation.runner import Item, Run, RunConfig


def cpu_lazy(made: list) -> type[LazyChecks]:
    """A LazyChecks that queues CPU checks too, appending every instance to ``made`` (to see they queued)."""

    class CpuLazy(LazyChecks):
        def __init__(self, lag: int = 1):
            super().__init__(lag, lazy_devices=("cpu",))
            made.append(self)

    return CpuLazy


@pytest.fixture
def forced_lazy(monkeypatch):
    """The runner's checks forced lazy on the CPU; returns the list of the LazyChecks it made."""
    made = []
    monkeypatch.setattr(runner, "LazyChecks", cpu_lazy(made))
    return made


def config(tmp_path, **kwargs) -> RunConfig:
    base = dict(items=[Item("a red circle")], steps=3, log_step=1, warmup_steps=0, save_dir=str(tmp_path),
                model="unused")
    return RunConfig(**{**base, **kwargs})


def error_of(cfg: RunConfig, pipe) -> str:
    with pytest.raises(UserError) as err:
        runner.run(cfg, progress=False, pipe=pipe)
    assert "\n" not in str(err.value)
    return str(err.value)


def assert_nothing_written(root) -> None:
    assert not list(root.rglob("*.png")) and not list(root.rglob("*.gif")) and not (root / "progress").exists()


def eager_then_lazy(tmp_path, monkeypatch, pipe, **kwargs) -> tuple[str, str, list[LazyChecks]]:
    """The one-line error of the same run with eager checks, then with checks forced lazy (nothing written)."""
    eager = error_of(config(tmp_path / "eager", **kwargs), pipe)
    made = []
    with monkeypatch.context() as m:
        m.setattr(runner, "LazyChecks", cpu_lazy(made))
        lazy = error_of(config(tmp_path / "lazy", **kwargs), pipe)
    assert made and made[0].calls > 0 and not made[0].pending  # the checks were queued, and all were read
    assert_nothing_written(tmp_path / "eager")
    assert_nothing_written(tmp_path / "lazy")
    return eager, lazy, made


def test_a_nan_update_names_method_step_and_t(tmp_path, monkeypatch, load_tiny_sd):
    monkeypatch.setattr(Guidance, "unet_eps", lambda self, x_t, t, emb: torch.full_like(x_t, float("nan")))
    eager, lazy, _ = eager_then_lazy(tmp_path, monkeypatch, load_tiny_sd())
    assert lazy == eager
    assert eager.startswith("the sds gradient g became NaN or infinite at step 0 (t = [")
    assert eager.endswith("]); try a lower learning rate or --precision fp32")


def test_a_nan_loss_at_the_last_step_is_read_before_the_result(tmp_path, monkeypatch, load_tiny_sd):
    real = Guidance.get_sds_loss

    def nan_at_step_2(self, latents, *args, **kwargs):
        loss = real(self, latents, *args, **kwargs)
        return loss * float("nan") if self.check_step == 2 else loss

    monkeypatch.setattr(Guidance, "get_sds_loss", nan_at_step_2)
    eager, lazy, _ = eager_then_lazy(tmp_path, monkeypatch, load_tiny_sd(), log_step=0)
    expected = "the sds loss at step 2 became NaN or infinite; try a lower learning rate or --precision fp32"
    assert lazy == eager == expected


@pytest.mark.parametrize("log_step", [1, 0])
def test_diverging_latents_stop_at_their_step(tmp_path, monkeypatch, load_tiny_sd, log_step):
    eager, lazy, _ = eager_then_lazy(tmp_path, monkeypatch, load_tiny_sd(), lr=1e6, log_step=log_step)
    assert lazy == eager and eager.startswith("the optimised latents at step 0 diverged (max |value| ")
    assert "too large --lr (1e+06)" in eager


def test_a_healthy_run_is_unchanged_by_lazy_checks(forced_lazy, load_tiny_sd, monkeypatch):
    pipe = load_tiny_sd()
    cfg = RunConfig(items=[Item("a red circle"), Item("a blue square")], steps=3, log_step=0, warmup_steps=0)
    lazy_job = Run(cfg, pipe, torch.device("cpu"))
    lazy_images = lazy_job.optimise(progress=True)  # the progress bar reads the losses through HostCopy
    assert forced_lazy[0].calls == 3 * 3 and not forced_lazy[0].pending  # g, loss, latents each step
    assert lazy_job.guidance.checks is None  # direct calls after the run check at once again
    monkeypatch.setattr(runner, "LazyChecks", LazyChecks)
    eager_job = Run(cfg, pipe, torch.device("cpu"))
    assert torch.equal(eager_job.optimise(progress=False), lazy_images)
    assert torch.equal(eager_job.rep.param, lazy_job.rep.param)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss_type", ["sds", "pds", "vsd", "ism"])
def test_gpu_steps_never_wait_for_the_gpu(load_tiny_sd, loss_type):
    """Sync-debug mode "error": a read (.item(), bool(t), .tolist()) or a pageable copy inside a step raises.
    ISM runs two prompts, so its inversion chain calls the UNet on the rows still inverting (host t)."""
    device = torch.device("cuda")
    src = torch.rand(3, 16, 16) * 2 - 1
    items = [Item("a red circle", "a blue circle", src_image=src)]
    if loss_type == "ism":
        items.append(Item("a green square", "a blue circle", src_image=src))
    cfg = RunConfig(loss_type=loss_type, items=items, steps=4, log_step=0, warmup_steps=0)
    job = Run(cfg, load_tiny_sd().to(device), device)
    checks = LazyChecks()
    job.guidance.checks = checks
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        job._steps(checks, progress=False)  # ends with flush(): waits on events only
    finally:
        torch.cuda.set_sync_debug_mode("default")
    per_step = 4 if loss_type == "vsd" else 3  # g, loss, latents (+ VSD's LoRA loss)
    assert checks.calls == per_step * cfg.steps and not checks.pending
