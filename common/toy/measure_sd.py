"""Measure toy-sd's quality bars at full size and print a table (issue 3).

- VAE reconstruction PSNR on 1,000 test-split images (bar: >= 28 dB);
- the fraction of 50-step DDIM samples with guidance 7.5 for 200 test captions that toy-clip judges fully
  correct: object colour, shape and background (bar: >= 90%).

Optionally writes a captioned sample grid (the image committed under ``docs/``).

\b
    python -m common.toy.measure_sd --device cuda --grid docs/toy_sd_samples.png
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from common.cli import user_errors
from common.gpu import get_device, seed_everything
from common.toy import sd_model
from common.toy.train_sd import caption_correctness, print_table, vae_psnr


def save_captioned_grid(images: torch.Tensor, prompts: list[str], path: str | Path, correct: list[bool] | None = None,
                        ncol: int = 8) -> Path:
    """Save [B, 3, H, W] images in [-1, 1] as a grid with a two-line caption above each (red if judged wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.3 * ncol, 1.55 * nrow), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(((images[i].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy(),
                  interpolation="nearest")
        words = prompts[i].split()  # a {color} {shape} on a {background} background
        ok = True if correct is None else correct[i]
        ax.set_title(f"{words[1]} {words[2]}\non {words[5]}", fontsize=7, color="black" if ok else "red")
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def measure(model: str | Path | None = None, clip: str | Path | None = None, device: str = "auto",
            psnr_images: int = 1000, captions: int = 200, steps: int = 50, guidance_scale: float = 7.5,
            grid: str | Path | None = None, grid_size: int = 32) -> dict[str, float]:
    """Run both measurements on the SD folder ``model`` (default: shipped toy-sd) and print the table."""
    from common.toy.judge import fully_correct

    dev = get_device(device)
    seed_everything(0)
    pipe = sd_model.load_sd_pipeline(model, dev)
    t0 = time.perf_counter()
    psnr_db = vae_psnr(pipe.vae, dev, psnr_images)
    t1 = time.perf_counter()
    frac, images, prompts = caption_correctness(pipe, clip, captions, dev, num_inference_steps=steps,
                                                guidance_scale=guidance_scale)
    t2 = time.perf_counter()
    print_table([
        (f"VAE PSNR, {psnr_images} test images", f"{psnr_db:.2f} dB", ">= 28 dB"),
        (f"fully correct, {captions} test captions, DDIM {steps} cfg {guidance_scale}", f"{100 * frac:.1f}%",
         ">= 90%"),
        ("time (PSNR / sampling + judging)", f"{t1 - t0:.1f} s / {t2 - t1:.1f} s", ""),
    ])
    if grid:
        k = min(grid_size, images.shape[0])
        ok = fully_correct(images[:k], prompts[:k], folder=clip, device=dev).tolist()
        print(f"wrote {save_captioned_grid(images[:k], prompts[:k], grid, ok)}")
    return {"vae_psnr_db": psnr_db, "fully_correct": frac}


@click.command()
@click.option("--model", default=None, help="SD folder [default: common/toy/models/toy-sd].")
@click.option("--clip", default=None, help="toy-clip folder for the judge [default: the shipped toy-clip].")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu", "mps"]), default="auto", show_default=True)
@click.option("--psnr-images", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--captions", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@click.option("--guidance-scale", type=click.FloatRange(min=0.0), default=7.5, show_default=True)
@click.option("--grid", type=click.Path(dir_okay=False), default=None, help="Also save a captioned sample grid.")
@user_errors
def main(model, clip, device, psnr_images, captions, steps, guidance_scale, grid) -> None:
    """Print toy-sd's quality bars (VAE PSNR, judged caption correctness) at full size.

    \b
    Examples:
      python -m common.toy.measure_sd --device cuda
      python -m common.toy.measure_sd --device cpu --captions 40 --grid docs/toy_sd_samples.png
    """
    measure(model, clip, device, psnr_images, captions, steps, guidance_scale, grid)


if __name__ == "__main__":
    main()
