"""Reads that never make the CPU wait for the GPU (issue #19): ``common.divergence.LazyChecks`` (check_bounded a
step late), ``common.gpu.HostCopy`` and the pinned host-to-device copies of ``randn_per_sample``.

The queue is exercised on the CPU with ``lazy_devices=("cpu",)``; the ``gpu`` tests (skipped without CUDA) check
the real pinned copies and that :meth:`LazyChecks.poll` does not wait for work queued after the checks it reads.
"""

from __future__ import annotations

import math

import pytest
import torch

from common.divergence import Diverged, LazyChecks, check_bounded
from common.gpu import HostCopy, host_to_device, make_generators, randn_per_sample

NAN, INF = float("nan"), float("inf")
HINT = "lower --lr"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def lazy(lag: int = 1) -> LazyChecks:
    return LazyChecks(lag=lag, lazy_devices=("cpu",))


def eager_message(x: torch.Tensor, bound: float, what: str, step: int | None) -> str | None:
    try:
        check_bounded(x, bound, what, step, HINT)
    except Diverged as err:
        return str(err)
    return None


def lazy_message(x: torch.Tensor, bound: float, what: str, step: int | None, device: str = "cpu") -> str | None:
    checks = LazyChecks(lazy_devices=(device,))
    checks.add(x, what, step, bound, HINT)
    assert len(checks.pending) == 1  # queued, not checked yet
    try:
        checks.flush()
    except Diverged as err:
        return str(err)
    return None


CASES = [  # (x, bound): NaN, +-inf, beyond the bound, at the bound, healthy, empty, finiteness only
    (torch.tensor([1.0, NAN, 3.0]), 1e3), (torch.tensor([INF, 1.0]), 1e3), (torch.tensor([[-INF]]), 1e3),
    (torch.tensor([1.0, -2000.0]), 1e3), (torch.tensor([1e3, -1e3]), 1e3), (torch.tensor([0.5, -4.0]), 10.0),
    (torch.zeros(0), 1.0), (torch.tensor([1e30]), math.inf), (torch.tensor([NAN]), math.inf),
    (torch.tensor([NAN, 5e3]).half(), 1e3), (torch.tensor([7e4]).double(), 1e3),
]


@pytest.mark.parametrize("x,bound", CASES)
def test_lazy_verdict_and_message_equal_check_bounded(x, bound):
    expected = eager_message(x, bound, "the latents", 4)
    assert lazy_message(x, bound, "the latents", 4) == expected
    assert lazy_message(x, bound, "the latents", None) == eager_message(x, bound, "the latents", None)
    if expected is not None:  # the closed form of the message, written out
        peak = x.double().abs().max().item()
        if math.isfinite(peak):
            assert expected == f"the latents at step 4 diverged (max |value| {peak:.3g} > {bound:g}); {HINT}"
        else:
            assert expected == f"the latents at step 4 became NaN or infinite; {HINT}"


def test_poll_reads_all_but_the_newest_lag_steps():
    checks = lazy(lag=1)
    checks.add(torch.ones(2), "x", 0)
    checks.add(torch.tensor([NAN]), "x", 1)
    checks.poll()  # step 0 read (healthy); step 1 is the newest: not read yet
    assert [p.step for p in checks.pending] == [1]
    checks.add(torch.ones(2), "y", 2)
    with pytest.raises(Diverged, match=r"^x at step 1 became NaN or infinite; lower the learning rate"):
        checks.poll()
    assert not checks.pending  # a failure drops the rest of the queue

    checks = lazy(lag=2)
    for step in range(3):
        checks.add(torch.tensor([float(step)]), "x", step)
        checks.add(torch.tensor([float(step)]), "z", step)
    checks.poll()
    assert [p.step for p in checks.pending] == [1, 1, 2, 2] and checks.calls == 6
    checks.flush()
    assert not checks.pending


def test_lag_zero_and_flush_read_everything():
    checks = lazy(lag=0)
    checks.add(torch.ones(1), "x", 0)
    checks.poll()
    assert not checks.pending
    checks.add(torch.tensor([2e3]), "x", 1, 1e3)
    with pytest.raises(Diverged, match=r"^x at step 1 diverged \(max \|value\| 2e\+03 > 1000\)"):
        checks.poll()
    checks = lazy(lag=5)
    checks.add(torch.tensor([INF]), "x", None)
    with pytest.raises(Diverged, match="^x became NaN or infinite"):
        checks.flush()


def test_the_first_queued_failure_wins():
    checks = lazy()
    checks.add(torch.ones(1), "ok", 3)
    checks.add(torch.tensor([5e3]), "latents", 3, 1e3)  # first failure: beyond the bound at step 3
    checks.add(torch.tensor([NAN]), "loss", 3)
    checks.add(torch.tensor([NAN]), "g", 4)
    with pytest.raises(Diverged, match="^latents at step 3 diverged"):
        checks.flush()
    checks.flush()  # the queue was dropped: nothing left to raise


def test_the_verdict_is_of_the_value_when_queued():
    checks = lazy()
    x = torch.ones(3)
    checks.add(x, "x", 0)
    x.mul_(NAN)  # an in-place update after the check was queued (the optimizer's step)
    checks.flush()
    checks.add(x, "x", 1)
    with pytest.raises(Diverged, match="x at step 1"):
        checks.flush()


def test_a_custom_message_is_built_only_on_failure():
    built = []

    def message():
        built.append(1)
        return "the sds gradient g became NaN or infinite at step 7 (t = [500]); try a lower learning rate"

    checks = lazy()
    checks.add(torch.ones(2), "g", 6, message=message)
    checks.flush()
    assert not built
    checks.add(torch.tensor([NAN]), "g", 7, message=message)
    with pytest.raises(Diverged) as err:
        checks.flush()
    assert str(err.value) == message() and len(built) == 2
    with pytest.raises(Diverged, match=r"^the sds gradient g became NaN or infinite at step 7 \(t = \[500\]\)"):
        LazyChecks().add(torch.tensor([INF]), "g", 7, message=message)  # a CPU tensor: checked at once


def test_a_device_outside_lazy_devices_is_checked_at_once():
    checks = LazyChecks()  # lazy on CUDA only
    checks.add(torch.ones(2), "x", 0, 1e3)
    assert not checks.pending and checks.calls == 0
    with pytest.raises(Diverged, match=r"^x at step 1 diverged \(max \|value\| 2e\+03 > 1000\); lower"):
        checks.add(torch.tensor([2e3]), "x", 1, 1e3)


def test_host_copy_off_cuda_is_the_tensor():
    x = torch.tensor([1.5, -2.0])
    copy = HostCopy(x)
    assert copy.ready() and copy.get() is not None and torch.equal(copy.get(), x)


def reference_draws(shape, seeds, dtype=torch.float32):
    """The per-sample draws written out: one CPU generator per seed, one randn each, stacked."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s), dtype=dtype) for s in seeds])


@pytest.mark.parametrize("pin", [None, False, True])
def test_randn_per_sample_values_do_not_depend_on_the_copy_path(pin):
    if pin and not torch.cuda.is_available():
        pytest.skip("pinning memory needs CUDA")
    seeds, shape = [3, 11, 3], (2, 4, 4)
    expected = reference_draws(shape, seeds)
    got = randn_per_sample(shape, make_generators(seeds), device="cpu", dtype=torch.float32, pin=pin)
    assert got.device.type == "cpu" and torch.equal(got, expected)
    assert torch.equal(randn_per_sample(shape, make_generators(seeds)), expected)  # device None: stays put
    x = torch.arange(6.0).view(2, 3)
    assert torch.equal(host_to_device(x, "cpu", pin=pin), x) and host_to_device(x, None) is x


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("pin", [None, False, True])
def test_gpu_randn_per_sample_is_bit_identical_through_pinned_memory(pin):
    seeds, shape = [0, 7], (4, 8, 8)
    got = randn_per_sample(shape, make_generators(seeds), device="cuda", dtype=torch.float32, pin=pin)
    assert got.device.type == "cuda" and torch.equal(got.cpu(), reference_draws(shape, seeds))
    ints = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(host_to_device(ints, "cuda", pin=pin).cpu(), ints)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("x,bound", CASES)
def test_gpu_lazy_verdict_equals_check_bounded(x, bound):
    big = torch.zeros(3_000_001, dtype=x.dtype)  # a multi-block reduction, the odd element last
    if x.numel():
        big[-x.numel():] = x.flatten()
    for t in (x, big):
        assert lazy_message(t.cuda(), bound, "the latents", 2, "cuda") == eager_message(t, bound, "the latents", 2)


@pytest.mark.gpu
@cuda
def test_gpu_poll_waits_only_for_the_checks_it_reads():
    torch.cuda.synchronize()
    checks = LazyChecks(lag=1)
    checks.add(torch.full((1000,), NAN, device="cuda"), "x", 0)
    copy = HostCopy(torch.tensor(3.0, device="cuda"))
    torch.cuda._sleep(2_000_000_000)  # about a second of GPU work queued after step 0's check
    checks.add(torch.ones(10, device="cuda"), "x", 1)
    with pytest.raises(Diverged, match="x at step 0 became NaN"):
        checks.poll()
    assert not torch.cuda.current_stream().query()  # the GPU is still busy: poll did not wait for all of it
    assert float(copy.get()) == 3.0 and not torch.cuda.current_stream().query()
    torch.cuda.synchronize()
