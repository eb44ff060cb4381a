"""CPU benchmark of the toy-faces defaults (issue #19): UNet call times and the extrapolated default runs.

For each OpenMP wait policy (each in a fresh process: libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads)
and each torch thread count it measures, on the CPU:

- ``fwd@10``: the median of ``--reps`` toy-faces UNet calls at batch 10 without grad (one step of
  ``python -m ddpm_ddim.main``, whose defaults sample 10 faces in one batch of 10);
- ``fwd+bwd@4``: the median at batch 4 with the backward pass to x_t (one step of ``python -m dps.main``, whose
  defaults reconstruct 4 images in one batch of 4);
- the mean step of the reference loops (``common.sampling`` DDPM and DDIM at batch 10, ``dps.dps.dps_sample``
  inpainting at batch 4) over ``--steps`` steps, which adds the scheduler math, the noise and the operator;

and extrapolates the defaults: DDPM 1000 steps x 10 faces, DDIM 50 x 10 and DPS inpainting 1000 x 4, plus the
start-up (imports and model loading), against the issue's targets for an idle 2-core CPU (300 s, 30 s, 300 s).
Each row states the 1-minute load average before and after it: on a shared machine the times are upper bounds.

    python benchmarks/bench_cpu_toy.py                         # both wait policies, 1 and 2 threads: ~1 min idle
    python benchmarks/bench_cpu_toy.py --wait_policies PASSIVE --threads 2 --reps 9
    python benchmarks/bench_cpu_toy.py --random --widths 32,32,64,96   # random weights (same cost), other widths
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()  # the start-up column counts from here (imports included)

import click  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import CONTEXT_SETTINGS, CommaChoice, IntListType, UserError, user_errors  # noqa: E402

TARGETS_S = {"DDPM": 300.0, "DDIM": 30.0, "DPS": 300.0}  # issue #19, idle 2-core CPU
DEFAULT_RUNS = {"DDPM": (1000, 10), "DDIM": (50, 10), "DPS": (1000, 4)}  # (steps, batch) of the CLI defaults
POLICIES = ("default", "PASSIVE", "ACTIVE")


def load_unet(model: str, random: bool, widths: list[int] | None) -> torch.nn.Module:
    """The toy-faces UNet (eval, no grads): shipped weights, or random ones (``--random``) of the same shape."""
    if random or widths:
        from common.toy.train_faces import build_unet

        torch.manual_seed(0)
        unet = build_unet(**({"block_out_channels": tuple(widths)} if widths else {}))
        return unet.eval().requires_grad_(False)
    from common.sampling import load_model

    return load_model(model, "cpu")[0]


def median_call(unet: torch.nn.Module, batch: int, grad: bool, reps: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one UNet call at ``batch`` (after a warm-up call); ``grad`` adds the backward
    pass d(sum eps)/d(x_t). CPU time counts every thread of the process."""
    from common.sampling import model_shape, unet_eps

    x = torch.randn(batch, *model_shape(unet), generator=torch.Generator().manual_seed(0))  # [B, C, H, W]
    times, cpu = [], []
    for _ in range(reps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        if grad:
            x_t = x.clone().requires_grad_(True)
            torch.autograd.grad(unet_eps(unet, x_t, 500).sum(), x_t)
        else:
            with torch.no_grad():
                unet_eps(unet, x, 500)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return _median(times[1:]), _median(cpu[1:])


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def mean_step(unet: torch.nn.Module, sampler: str, steps: int) -> tuple[float, float]:
    """Mean (wall, CPU) seconds per step of a ``steps``-step reference loop at the default batch of ``sampler``."""
    from common.gpu import make_generators
    from common.sampling import model_shape, sample_unet, sampling_config
    from common.toy.train_faces import SCHEDULER_CONFIG

    config = sampling_config(SCHEDULER_CONFIG)
    batch = DEFAULT_RUNS[sampler][1]
    gens = make_generators(range(batch), "cpu")
    if sampler == "DPS":
        from dps.dps import dps_sample
        from dps.operators import DEFAULT_SCALES, add_measurement_noise, build_operator

        _, size, _ = model_shape(unet)
        operator = build_operator("inpainting", batch, size)
        y = add_measurement_noise(operator.forward(torch.zeros(batch, 3, size, size)), 0.05,
                                  torch.Generator().manual_seed(0))
        start, cpu_start = time.perf_counter(), time.process_time()
        dps_sample(unet, config, y, operator, steps, DEFAULT_SCALES["inpainting"], gens)
    else:
        start, cpu_start = time.perf_counter(), time.process_time()
        sample_unet(unet, config, sampler, steps, gens)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def measure(model: str, random: bool, widths: list[int] | None, threads: int, reps: int, steps: int,
            startup: tuple[float, float]) -> dict:
    """One row: call and step times at ``threads`` intra-op threads, and the extrapolated default runs.
    ``startup``: (wall, CPU) seconds of the imports and the first model loading."""
    torch.set_num_threads(threads)
    load_before, (wall0, cpu0) = os.getloadavg()[0], startup
    unet = load_unet(model, random, widths)
    row = {"policy": os.environ.get("OMP_WAIT_POLICY") or "default", "threads": threads, "startup_s": wall0,
           "startup_cpu_s": cpu0}
    row["fwd10_s"], row["fwd10_cpu_s"] = median_call(unet, 10, False, reps)
    row["fwdbwd4_s"], row["fwdbwd4_cpu_s"] = median_call(unet, 4, True, reps)
    for sampler, (full_steps, _) in DEFAULT_RUNS.items():
        row[f"{sampler}_step_s"], row[f"{sampler}_step_cpu_s"] = mean_step(unet, sampler, steps)
        row[f"{sampler}_default_s"] = wall0 + full_steps * row[f"{sampler}_step_s"]
        # one thread's CPU time is about its wall time on an idle core (a shared core adds waiting, not work)
        row[f"{sampler}_idle_1thread_s"] = cpu0 + full_steps * row[f"{sampler}_step_cpu_s"] if threads == 1 else None
    row.update({"load_before": load_before, "load_after": os.getloadavg()[0],
                "params": sum(p.numel() for p in unet.parameters()), "size": unet.config.sample_size})
    return row


def run_policy(policy: str, argv: list[str]) -> list[dict]:
    """Rows of a worker process that runs under ``policy`` (``default``: libgomp's, whatever the parent set)."""
    env = dict(os.environ, OMP_WAIT_POLICY="" if policy == "default" else policy)  # "" = unset, not overridable
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1].removeprefix("Error: ")
        raise UserError(f"the {policy} worker failed: {last}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def print_table(rows: list[dict]) -> None:
    first = rows[0]
    print(f"toy-faces UNet ({first['params'] / 1e6:.2f}M params, {first['size']} px) on {_cpu_name()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print("wall seconds (cpu: CPU seconds of all threads); dflt = start-up + steps x step: DDPM 1000 x 10, "
          "DDIM 50 x 10, DPS inpainting 1000 x 4; idle1 = the same from one thread's CPU time")
    print(f"{'policy':<8}{'thr':>4}{'fwd@10':>8}{'cpu':>7}{'f+b@4':>7}{'cpu':>7}{'DDPM st':>8}{'DDIM st':>8}"
          f"{'DPS st':>7}{'start':>6}{'DDPM dflt':>10}{'DDIM dflt':>10}{'DPS dflt':>9}{'idle1 DDPM/DDIM/DPS':>21}"
          f"{'load':>12}")
    for r in rows:
        idle = "/".join(f"{r[f'{s}_idle_1thread_s']:.0f}" for s in DEFAULT_RUNS) if r["threads"] == 1 else "-"
        print(f"{r['policy']:<8}{r['threads']:>4}{r['fwd10_s']:>8.3f}{r['fwd10_cpu_s']:>7.3f}{r['fwdbwd4_s']:>7.3f}"
              f"{r['fwdbwd4_cpu_s']:>7.3f}{r['DDPM_step_s']:>8.3f}{r['DDIM_step_s']:>8.3f}{r['DPS_step_s']:>7.3f}"
              f"{r['startup_s']:>6.1f}{r['DDPM_default_s']:>10.0f}{r['DDIM_default_s']:>10.1f}"
              f"{r['DPS_default_s']:>9.0f}{idle:>21} {r['load_before']:>5.2f}-{r['load_after']:<5.2f}")
    print(f"targets (idle 2-core CPU): DDPM <= {TARGETS_S['DDPM']:.0f} s, DDIM <= {TARGETS_S['DDIM']:.0f} s, "
          f"DPS <= {TARGETS_S['DPS']:.0f} s; load: 1-minute load average before-after the row")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", default="toy-faces", show_default=True, help="Registry name or local DDPM folder.")
@click.option("--random", is_flag=True, help="Random weights of the toy-faces architecture (the cost is the same).")
@click.option("--widths", type=IntListType(), default=None,
              help="Random weights with these four block widths (common.toy.train_faces.build_unet).")
@click.option("--threads", type=IntListType(), default="1,2", show_default=True, help="torch intra-op threads.")
@click.option("--wait_policies", "policies", type=CommaChoice(POLICIES), default="default,PASSIVE", show_default=True,
              help="Comma-separated OMP_WAIT_POLICY values, each in its own process: default, PASSIVE, ACTIVE.")
@click.option("--reps", type=click.IntRange(min=1), default=5, show_default=True, help="UNet calls per median.")
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True, help="Loop steps per mean.")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@click.option("--worker", is_flag=True, hidden=True, help="Measure in this process and print JSON rows.")
@user_errors
def main(model, random, widths, threads, policies, reps, steps, json_path, worker):
    """CPU benchmark of the toy-faces defaults: UNet call times, extrapolated DDPM / DDIM / DPS runs, load.

    \b
    Examples:
      python benchmarks/bench_cpu_toy.py
      python benchmarks/bench_cpu_toy.py --wait_policies PASSIVE --threads 2 --reps 9
      python benchmarks/bench_cpu_toy.py --random --widths 32,32,64,96
    """
    if any(t < 1 for t in threads) or (widths and len(widths) != 4):
        raise UserError("--threads must be >= 1 and --widths needs four numbers")
    if worker:
        load_unet(model, random, widths)  # the first loading imports diffusers: part of every command's start-up
        startup = (time.perf_counter() - START, time.process_time())  # wall, CPU since the process started
        for n in threads:
            print(json.dumps(measure(model, random, widths, n, reps, steps, startup)), flush=True)
        return
    argv = ["--model", model, "--threads", ",".join(map(str, threads)), "--reps", str(reps), "--steps", str(steps)]
    argv += (["--random"] if random else []) + (["--widths", ",".join(map(str, widths))] if widths else [])
    rows = [row for policy in policies for row in run_policy(policy, argv)]
    print_table(rows)
    if json_path:
        from common.runs import write_json_atomic

        write_json_atomic(json_path, {"cpu": _cpu_name(), "cpus": os.cpu_count(), "rows": rows})


if __name__ == "__main__":
    main()
