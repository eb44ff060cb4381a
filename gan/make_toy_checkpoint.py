"""Train the shipped starting checkpoint on the toy few-shot set (the handout's provided "10K-iteration" one).

Trains from scratch on the 100 toy faces at 64 px with the full recipe (R1 + DiffAugment; ``--use_diffaug
False`` for R1 only), then exports G, D and G_ema in fp16 (< 3 MB) to ``--out`` (default
``outputs/toy_faces64_start.safetensors``; replacing the shipped ``gan/checkpoints/toy_faces64_start.safetensors``
takes ``--force``). ``gan.toy_bar`` continues from the shipped one in the handout's three configurations:
dropping R1 and augmentation on 100 images lets D over-fit and the samples degrade.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from common.cli import CONTEXT_SETTINGS, user_errors
from common.files import check_overwrite
from gan.checkpoint import export_slim
from gan.ops import set_default_impl
from gan.train import run_training
from gan.training import TrainConfig

SHIPPED = Path(__file__).parent / "checkpoints" / "toy_faces64_start.safetensors"
DEFAULT_OUT = Path("outputs") / SHIPPED.name


def toy_run_options(fn):
    """The options shared by the toy-set scripts: --resolution, --device, --precision, --fid_n, --seed."""
    for option in reversed((
        click.option("--resolution", type=click.IntRange(min=8), default=64,
                     help="Image size (power of two; must match a checkpoint)."),
        click.option("--device", default="auto", help="auto, cpu, cuda, ..."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", help="Autocast on CUDA."),
        click.option("--fid_n", type=click.IntRange(min=10), default=500, help="Generated images for FID."),
        click.option("--seed", type=click.IntRange(min=0), default=0, help="Random seed (shared by all runs)."),
    )):
        fn = option(fn)
    return fn


def check_writable(out: Path) -> None:
    """One-line ValueError, before training, when ``out`` cannot be written (read-only folder, a file in the way)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a .safetensors file name")
    parent = out.parent
    while not parent.exists():  # the nearest existing folder is where the missing ones would be created
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a folder")
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write --out {out} ({err.strerror or err}); choose a writable place") from err


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--steps", type=click.IntRange(min=1), default=4000, help="Training steps (iterations).")
@click.option("--batch", type=click.IntRange(min=4), default=32, help="Batch size.")
@click.option("--out", type=click.Path(dir_okay=False), default=str(DEFAULT_OUT), help="Slim checkpoint to write.")
@click.option("--force", is_flag=True, default=False, help=f"Allow --out to replace the shipped {SHIPPED.name}.")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/toy_start", help="Run folder parent.")
@click.option("--use_diffaug", type=bool, default=True, help="Train the start with DiffAugment too.")
@toy_run_options
@user_errors
def main(steps, batch, out, force, workdir, use_diffaug, resolution, device, precision, fid_n, seed):
    """Train and export the toy starting checkpoint.

    \b
    Examples:
      python -m gan.make_toy_checkpoint --device cuda            # 128 kimg, a few minutes on one H100
      python -m gan.make_toy_checkpoint --steps 200 --out /tmp/start.safetensors   # CPU smoke test
      python -m gan.make_toy_checkpoint --device cuda --out gan/checkpoints/toy_faces64_start.safetensors --force
    """
    check_overwrite(out, force)  # before minutes of training
    check_writable(Path(out))
    set_default_impl("auto")
    cfg = TrainConfig(data="toy", use_r1=True, use_diffaug=use_diffaug, kimg=steps * batch / 1000, batch=batch,
                      resolution=resolution,
                      ema_kimg=max(steps * batch / 1000 / 10, 0.1), seed=seed, device=device, precision=precision)
    result = run_training(cfg, workdir, snap=max(steps // 5, 1), fid_n=fid_n)
    path = export_slim(result["checkpoint"], out)
    click.echo(f"start checkpoint: {path} ({path.stat().st_size / 2**20:.2f} MiB, step {result['step']}, "
               f"FID[{result['fid_label']}] {result['fid']:.2f}); run folder {result['run_dir']}")


if __name__ == "__main__":
    main()
