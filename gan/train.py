"""Train StyleGAN2 with the non-saturating loss, optional lazy R1 and optional DiffAugment (HW5 part A).

Each run gets a new numbered folder under --outdir (``00003-toy-r1-diffaug``) with ``log.txt`` (the flags on
line 1), ``config.json``, ``fakesXXXXXX.png`` grids (XXXXXX = training step), FID lines and atomic
``checkpoint-XXXXXX.safetensors`` files that ``--checkpoint_path`` resumes exactly.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import click
from tqdm import tqdm

from common.cli import CONTEXT_SETTINGS, finite, user_errors
from common.gpu import seed_everything
from common.images import save_grid
from common.runs import write_config
from gan.metrics import load_feature_net
from gan.ops import set_default_impl
from gan.training import TrainConfig, Trainer


def next_run_dir(outdir: Path, desc: str) -> Path:
    """outdir/<NNNNN>-<desc> with NNNNN one more than the largest existing number."""
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
    run_id = max(ids, default=-1) + 1
    while True:  # another run may take the same number concurrently: try the next one
        run_dir = outdir / f"{run_id:05d}-{desc}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            run_id += 1


class RunLog:
    """Append lines to log.txt and echo them above the progress bar."""

    def __init__(self, path: Path, quiet: bool = False):
        self.path, self.quiet = path, quiet

    def __call__(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if not self.quiet:
            tqdm.write(line)


def run_training(cfg: TrainConfig, outdir: str | Path, snap: int = 500, fid_every: int = 0, fid_n: int = 500,
                 quiet: bool = False) -> dict:
    """Train for cfg.kimg thousand images; returns {'run_dir', 'fid', 'fid_label', 'step', 'checkpoint'}."""
    seed_everything(cfg.seed)
    trainer = Trainer(cfg)
    desc = f"{trainer.data_name}-{'r1' if cfg.use_r1 else 'nor1'}-{'diffaug' if cfg.use_diffaug else 'noaug'}"
    run_dir = next_run_dir(Path(outdir), desc)
    log = RunLog(run_dir / "log.txt", quiet)
    log("flags: " + json.dumps(dataclasses.asdict(cfg) | {"snap": snap, "fid_every": fid_every, "fid_n": fid_n}))
    write_config(run_dir, dataclasses.asdict(cfg) | {"snap": snap, "fid_every": fid_every, "fid_n": fid_n})
    resumed = f" (resumed from {trainer.resumed_from})" if trainer.resumed_from else ""
    log(f"data: {len(trainer.images)} images {tuple(trainer.images.shape[1:])}; device {trainer.device}; "
        f"G {_count(trainer.G):.2f}M params, D {_count(trainer.D):.2f}M params; start step {trainer.step}, "
        f"kimg {trainer.nimg / 1000:.3f}{resumed}")  # kimg: images seen by the saved run(s), at their batch size
    features = load_feature_net(trainer.device) if fid_n > 0 else None
    end_step = trainer.step + cfg.total_steps
    result = {"run_dir": str(run_dir), "fid": None, "fid_label": None}
    t0 = time.perf_counter()
    for _ in tqdm(range(cfg.total_steps), desc=desc, disable=quiet, leave=False):
        stats = trainer.train_step()
        last = trainer.step == end_step
        if trainer.step % snap == 0 or last:
            elapsed = time.perf_counter() - t0
            log(f"step {trainer.step:06d} kimg {trainer.nimg / 1000:.3f} sec/step "
                f"{elapsed / max(trainer.step - end_step + cfg.total_steps, 1):.3f} "
                + " ".join(f"{k} {v:.4f}" for k, v in sorted(stats.items())))
            save_grid(trainer.grid_images(), run_dir / f"fakes{trainer.step:06d}.png", nrow=4)
            result["checkpoint"] = str(trainer.save(run_dir / f"checkpoint-{trainer.step:06d}.safetensors"))
        if features is not None and ((fid_every and trainer.step % fid_every == 0) or last):
            fid, label = trainer.fid(fid_n, features)
            log(f"FID[{label}, {fid_n} fakes vs {len(trainer.images)} reals] step {trainer.step:06d}: {fid:.4f}")
            result.update(fid=fid, fid_label=label)
    result["step"] = trainer.step
    return result


def _count(net) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Parent folder of the run folders.")
@click.option("--data", required=True, help="Folder or zip of square PNG/JPEG images, or 'toy' (100 toy faces).")
@click.option("--use_r1_regularization", "use_r1", required=True, type=bool, help="Lazy R1 penalty on reals.")
@click.option("--use_diffaug", required=True, type=bool, help="DiffAugment on every discriminator input.")
@click.option("--checkpoint_path", type=click.Path(dir_okay=False), default=None, help="Resume from a .safetensors.")
@click.option("--kimg", type=finite(min=0, min_open=True), default=300.0,
              help="Thousands of images to train in this run (counted from the checkpoint when resuming).")
@click.option("--batch", type=click.IntRange(min=1), default=8, help="Batch size.")
@click.option("--gamma", type=finite(min=0), default=10.0, help="R1 weight gamma.")
@click.option("--resolution", type=click.IntRange(min=4), default=None, help="Resize images to R (power of two).")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Random seed.")
@click.option("--lr", type=finite(min=0, min_open=True), default=0.002, help="Adam learning rate.")
@click.option("--ema_kimg", type=finite(min=0, min_open=True), default=10.0, help="G_ema half-life.")
@click.option("--cbase", type=click.IntRange(min=16), default=None, help="Channel base [default: 1024 / 32768].")
@click.option("--cmax", type=click.IntRange(min=4), default=None, help="Max channels [default: 64 / 512].")
@click.option("--pl_weight", type=finite(min=0), default=2.0, help="Path-length weight (0 = off).")
@click.option("--style_mixing", type=finite(0, 1), default=0.9, help="Style-mixing probability.")
@click.option("--cutout", type=click.Choice(["random", "fixed"]), default="random",
              help="DiffAugment cutout: 25-50% random box (HW5) or the original 50% box.")
@click.option("--mirror", type=bool, default=False, help="Random x-flips of the reals.")
@click.option("--snap", type=click.IntRange(min=1), default=500, help="Steps between grids and checkpoints.")
@click.option("--fid_every", type=click.IntRange(min=0), default=0, help="Steps between FIDs (0: only at the end).")
@click.option("--fid_n", type=click.IntRange(min=0), default=500, help="Generated images for FID (0: no FID).")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
              help="Autocast dtype for forward passes on CUDA (fp32 on CPU).")
@click.option("--impl", type=click.Choice(["auto", "cuda", "ref"]), default="auto", help="Custom ops path.")
@user_errors
def main(outdir, snap, fid_every, fid_n, impl, **kwargs):
    """Train a StyleGAN2 (few-shot setting of UMich EECS 498 HW5) and report FID.

    \b
    Examples:
      python -m gan.train --outdir runs --data toy --use_r1_regularization True --use_diffaug True --kimg 2
      python -m gan.train --outdir training-runs --data many_shot_dog --use_r1_regularization False \\
          --use_diffaug False --checkpoint_path ckpt.safetensors --resolution 256
    """
    set_default_impl(impl)
    result = run_training(TrainConfig(**kwargs), outdir, snap=snap, fid_every=fid_every, fid_n=fid_n)
    click.echo(f"run folder: {result['run_dir']}")
    if result["fid"] is not None:
        click.echo(f"FID[{result['fid_label']}]: {result['fid']:.4f}")


if __name__ == "__main__":
    main()
