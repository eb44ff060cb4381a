"""What an ISM step must cost, given what one UNet call costs: the floor behind issue #19's "ISM <= 2.5x SDS".

ISM (LucidDreamer, Liang et al. 2024, Eq. 16) needs, per sample, n DDIM inversion calls from t_start to
s = t - delta_t, one call at s (its eps(x_s, s, 0) is also the target) and one CFG call of 2 rows at t: n + 2 calls
that depend on each other, against SDS's one CFG call. With B prompts the calls of one step carry the samples
still inverting, so a step is n_max + 2 sequential calls. This script draws t like the runner (uniform on
[t_min, t_max], one per prompt), builds ISM's grid with ``distillation.ism.inversion_start``, counts the rows of
every call and prices each call with a measured ms-per-call curve (``bench_unet_knobs.py --knobs graphs``, rows =
batch sizes; sizes in between are interpolated, sizes below the first are priced at it). The CUDA-graph rows pad
each call with idle rows (``common.graphs.graph_rows``), the exact rows do not; SDS's step is priced as its one
call of 2B rows.

It needs no GPU: the default curve is SD 2.1 base (fp16, CUDA graphs) on one H200, measured 2026-12-03.

    python benchmarks/ism_call_model.py
    python benchmarks/ism_call_model.py --batches 1,4,10 --call_ms 1:6.1,2:6.9,20:41.2
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _cli as bench  # noqa: E402
from common.cli import user_errors  # noqa: E402
from common.graphs import graph_rows  # noqa: E402
from distillation.ism import GRIDS, inversion_start  # noqa: E402
from distillation.runner import RunConfig  # noqa: E402

# SD 2.1 base UNet, fp16, one CUDA-graph replay, no grad (bench_unet_knobs.py --knobs graphs --calls 20, H200)
H200_GRAPHS_MS = "1:9.16,2:11.28,3:13.84,4:15.38,6:20.46,8:24.50,10:30.08,12:34.04,16:43.68,20:55.52"
RUN = RunConfig()  # the runner's defaults: its t range and ISM's grid


def parse_curve(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``rows:ms,...`` -> (rows, ms) sorted by rows; a malformed or non-positive pair is a one-line error."""
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        rows_text, _, ms_text = item.partition(":")
        try:
            rows, ms = int(rows_text), float(ms_text)
        except ValueError:
            raise bench.UserError(f"--call_ms: {item!r} is not rows:ms") from None
        if rows < 1 or not np.isfinite(ms) or ms <= 0:
            raise bench.UserError(f"--call_ms: {item!r} needs rows >= 1 and a finite ms > 0")
        pairs[rows] = ms
    if len(pairs) < 2:
        raise bench.UserError("--call_ms: give at least two rows:ms pairs")
    sizes = np.array(sorted(pairs))
    return sizes, np.array([pairs[r] for r in sizes])


def call_rows(t: torch.Tensor, delta_t: int, delta_s: int, inv_steps: int, grid: str) -> list[int]:
    """Rows of each sequential UNet call of one ISM step for the prompts' t [B]: the inversion calls (samples whose
    next grid level is above the current one), the call at s, then the CFG call (2B). The grid's stepping is
    written here again on purpose: ``distillation.ism.ism_gradient`` is a solution region, which nothing else uses."""
    s = (t - delta_t).clamp(min=0)
    t_start = inversion_start(t, delta_t, delta_s, inv_steps, grid)
    rows, k = [], 0
    while True:  # tau_k = min(t_start + k delta_s, s): a sample moves while tau_{k+1} > tau_k
        moving = int((torch.minimum(t_start + (k + 1) * delta_s, s) > torch.minimum(t_start + k * delta_s, s)).sum())
        if moving == 0:
            return rows + [len(t), 2 * len(t)]
        rows.append(moving)
        k += 1


def price(rows: list[int], curve: tuple[np.ndarray, np.ndarray], padded: bool) -> float:
    """ms of one step's calls (rows from :func:`call_rows`; the last, the CFG call, has 2B): sizes between
    the curve's rows interpolated, below its first row priced at it. ``padded``: B-row calls padded as under graphs."""
    prompts = rows[-1] // 2
    sizes = [graph_rows(m, prompts) if padded and m <= prompts else m for m in rows]
    return float(np.interp(sizes, *curve).sum())


@bench.bench_command()
@click.option("--batches", type=bench.CommaInts(), default="1,10", show_default=True, help="Prompts per step.")
@click.option("--call_ms", default=H200_GRAPHS_MS, show_default=True,
              help="Comma-separated rows:ms of one UNet call (from bench_unet_knobs.py).")
@click.option("--draws", type=click.IntRange(100, 10**6), default=20000, show_default=True,
              help="Steps drawn per batch size.")
@click.option("--delta_t", type=click.IntRange(1, 999), default=RUN.ism_delta_t, show_default=True,
              help="ISM's t - s.")
@click.option("--delta_s", type=click.IntRange(1, 999), default=RUN.ism_delta_s, show_default=True,
              help="Inversion stride.")
@click.option("--inv_steps", type=click.IntRange(0, 50), default=RUN.ism_inv_steps, show_default=True,
              help="Most inversion steps.")
@click.option("--grid", type=click.Choice(GRIDS), default=RUN.ism_grid, show_default=True,
              help="ISM's inversion grid.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the t draws.")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@user_errors
def main(batches: list[int], call_ms: str, draws: int, delta_t: int, delta_s: int, inv_steps: int, grid: str,
         seed: int, json_path: str | None) -> None:
    """Predicted ISM / SDS step ratio from a UNet call-cost curve (CPU only; no model is run).

    \b
    Examples:
      python benchmarks/ism_call_model.py
      python benchmarks/ism_call_model.py --batches 1,4,10 --call_ms 1:6.1,2:6.9,20:41.2
    """
    curve = parse_curve(call_ms)
    if 2 * max(batches) > curve[0][-1]:
        raise bench.UserError(f"--call_ms: the CFG call of {2 * max(batches)} rows is beyond the curve's last "
                              f"{curve[0][-1]} rows")
    generator = torch.Generator().manual_seed(seed)
    print("| prompts | calls / step | rows / step | ISM ms (graph-padded) | ISM ms (exact rows) | SDS ms | "
          "ratio padded | ratio exact | rows-only floor |\n|---|---|---|---|---|---|---|---|---|")
    out = []
    for b in batches:
        steps = [call_rows(torch.randint(RUN.t_min, RUN.t_max + 1, (b,), generator=generator), delta_t, delta_s,
                           inv_steps, grid) for _ in range(draws)]
        sds = price([2 * b], curve, padded=False)
        row = {"prompts": b, "calls": np.mean([len(r) for r in steps]), "rows": np.mean([sum(r) for r in steps]),
               "ism_padded_ms": np.mean([price(r, curve, True) for r in steps]),
               "ism_exact_ms": np.mean([price(r, curve, False) for r in steps]), "sds_ms": sds}
        out.append({key: float(value) for key, value in row.items()})
        r = out[-1]
        print(f"| {b} | {r['calls']:.2f} | {r['rows']:.1f} | {r['ism_padded_ms']:.1f} | {r['ism_exact_ms']:.1f} | "
              f"{sds:.1f} | {r['ism_padded_ms'] / sds:.2f}x | {r['ism_exact_ms'] / sds:.2f}x | "
              f"{r['rows'] / (2 * b):.2f}x |")
    bench.write_rows(json_path, {"call_ms": call_ms, "grid": grid, "rows": out})


if __name__ == "__main__":
    main()
