"""The toy bar: continue the shipped starting checkpoint in the handout's three configurations and compare FIDs.

Configurations (HW5 tasks 1, 3, 5): plain (no R1, no augmentation), +R1, +R1+DiffAugment. Each run resumes the
same checkpoint with the same seed and budget, then FID of G_ema is measured against the 100 toy faces with the
same fixed latents. Prints a table, writes ``toy_bar.json`` and ``toy_bar.png`` (one sample grid per row).
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, UserError, finite, user_errors
from common.images import load_image, save_grid
from common.runs import json_number, write_json_atomic
from gan.make_toy_checkpoint import SHIPPED, toy_run_options
from gan.ops import set_default_impl
from gan.train import run_training
from gan.training import TrainConfig

CONFIGS = (("plain", False, False), ("+R1", True, False), ("+R1+DiffAugment", True, True))


def run_toy_bar(checkpoint: Path, outdir: Path, kimg: float, batch: int, device: str, seed: int, fid_n: int,
                precision: str = "fp32", resolution: int = 64, fid_every: int = 0) -> list[dict]:
    rows = []
    for name, use_r1, use_diffaug in CONFIGS:
        cfg = TrainConfig(data="toy", use_r1=use_r1, use_diffaug=use_diffaug, checkpoint_path=str(checkpoint),
                          kimg=kimg, batch=batch, ema_kimg=kimg / 5, resolution=resolution, seed=seed,
                          device=device, precision=precision)
        result = run_training(cfg, outdir, snap=cfg.total_steps, fid_n=fid_n, fid_every=fid_every)
        grid = sorted(Path(result["run_dir"]).glob("fakes*.png"))[-1]
        rows.append({"config": name, "fid": result["fid"], "features": result["fid_label"], "grid": str(grid),
                     "run_dir": result["run_dir"], "steps": cfg.total_steps})
        click.echo(f"{name}: FID {result['fid']:.3f}")
    return rows


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=str(SHIPPED), help="Start checkpoint.")
@click.option("--outdir", type=click.Path(file_okay=False), default="runs/toy_bar", help="Output folder.")
@click.option("--kimg", type=finite(min=0, min_open=True), default=2.4, help="Budget per configuration.")
@click.option("--batch", type=click.IntRange(min=4), default=8, help="Batch size.")
@toy_run_options
@click.option("--fid_every", type=click.IntRange(min=0), default=0, help="Also log FID every N steps (0: end only).")
@user_errors
def main(checkpoint, outdir, kimg, batch, fid_n, resolution, device, precision, seed, fid_every):
    """Reproduce the handout's three runs on the toy few-shot set and print their FIDs.

    The CPU default (3 x 300 steps at batch 8, 64 px, plus 3 FIDs of 500 fakes) takes about 20 minutes on one
    CPU thread: measured 1.2 s per step and 15 s per FID on a busy 2-core machine (OMP_NUM_THREADS=1, a
    --kimg 0.08 run of 106 s, extrapolated to 900 steps). It checks the pipeline; compare FIDs on a GPU.

    \b
    Examples:
      python -m gan.toy_bar                       # CPU: about 20 minutes (see above)
      python -m gan.toy_bar --kimg 0.08           # CPU smoke test: about 2 minutes
      python -m gan.toy_bar --device cuda --kimg 32 --batch 32
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"start checkpoint {checkpoint} not found; create it with: python -m gan.make_toy_checkpoint")
    set_default_impl("auto")
    outdir = Path(outdir)
    rows = run_toy_bar(checkpoint, outdir, kimg, batch, device, seed, fid_n, precision, resolution, fid_every)
    click.echo(f"\n{'configuration':<18}{'FID[' + rows[0]['features'] + ']':>40}  grid")
    for row in rows:
        click.echo(f"{row['config']:<18}{row['fid']:>40.3f}  {row['grid']}")
    grids = torch.stack([load_image(row["grid"]) for row in rows])
    save_grid(grids, outdir / "toy_bar.png", nrow=len(rows))
    runs = [row | {"fid": json_number(row["fid"])} for row in rows]
    write_json_atomic(outdir / "toy_bar.json", {"checkpoint": str(checkpoint), "kimg": kimg, "batch": batch,
                                                "seed": seed, "fid_n": fid_n, "runs": runs})
    better = rows[2]["fid"] < rows[0]["fid"]
    click.echo(f"+R1+DiffAugment {'beats' if better else 'does NOT beat'} plain "
               f"({rows[2]['fid']:.3f} vs {rows[0]['fid']:.3f}); wrote {outdir / 'toy_bar.png'}")


if __name__ == "__main__":
    main()
