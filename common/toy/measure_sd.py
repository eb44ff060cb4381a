"""Measure toy-sd's quality bars at full size and print a table (issue 3).

- VAE reconstruction PSNR on 1,000 test-split images (bar: >= 28 dB);
- the fraction of 50-step DDIM samples with guidance 7.5 for 200 test captions that toy-clip judges fully
  correct: object colour, shape and background (bar: >= 90%).

Optionally writes a captioned sample grid (the image committed under ``docs/``).

\b
    python -m common.toy.measure_sd --device cuda --grid docs/toy_sd_samples_captioned.png
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, finite, user_errors
from common.gpu import get_device, seed_everything
from common.toy import sd_model, shapes


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [-1, 1] images measured on the [0, 1] scale: [B]."""
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def vae_psnr(vae, device: torch.device | str, n: int = 1000, batch_size: int = 250) -> float:
    """Mean PSNR (dB) of ``decode(mode of encode(x))`` over ``n`` test-split images."""
    gen = torch.Generator().manual_seed(shapes.split_seed("test"))
    values = []
    for start in range(0, n, batch_size):
        images, _ = shapes.sample_batch(min(batch_size, n - start), gen, device=device)
        recon = vae.decode(vae.encode(images.to(vae.dtype)).latent_dist.mode()).sample
        values.append(psnr(recon, images))
    return torch.cat(values).mean().item()


def eval_captions(n: int = 200) -> list[str]:
    """``n`` test-split captions, fixed for a given ``n`` (a smaller ``n`` is not a prefix of a larger one)."""
    return [shapes.caption(s) for s in shapes.sample_specs(n, shapes.split_seed("test", 1))]


@torch.no_grad()
def sample_images(pipe, prompts: list[str], num_inference_steps: int = 50, guidance_scale: float = 7.5,
                  seed: int = 0, batch_size: int = 200) -> torch.Tensor:
    """Pipeline samples for ``prompts`` as [B, 3, 64, 64] in [-1, 1]; prompt i uses generator seed ``seed + i``."""
    device = pipe.unet.device
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        gens = [torch.Generator(device).manual_seed(seed + start + i) for i in range(len(chunk))]
        images = pipe(chunk, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                      generator=gens, output_type="pt").images
        out.append(images.float().cpu() * 2 - 1)
    return torch.cat(out)


def caption_correctness(pipe, clip_folder: str | Path | None, n: int = 200, device: torch.device | str = "cpu",
                        **sample_kwargs) -> tuple[float, torch.Tensor, list[str]]:
    """Fraction of samples judged fully correct by toy-clip, plus the images and their prompts."""
    from common.toy.judge import fully_correct

    prompts = eval_captions(n)
    images = sample_images(pipe, prompts, **sample_kwargs)
    correct = fully_correct(images, prompts, folder=clip_folder, device=device)
    return correct.float().mean().item(), images, prompts


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def print_table(rows: list[tuple[str, str, str]]) -> None:
    print("\n| metric | value | bar |\n|---|---|---|")
    for name, value, bar in rows:
        print(f"| {name} | {value} | {bar} |")


def save_captioned_grid(images: torch.Tensor, prompts: list[str], path: str | Path, correct: list[bool] | None = None,
                        ncol: int = 8) -> Path:
    """Save [B, 3, H, W] images in [-1, 1] as a grid with a two-line caption above each (red if judged wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.3 * ncol, 1.75 * nrow), squeeze=False)
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
    from common.toy.train_cli import toy_clip_folder

    clip = toy_clip_folder(None if clip is None else str(clip))  # a bad judge folder: one line before any work
    dev = get_device(device)
    seed_everything(0)
    pipe = sd_model.load_sd_pipeline(model, dev)
    pipe.set_progress_bar_config(disable=False, desc="DDIM sampling")
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


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", default=None, help="SD folder [default: common/toy/models/toy-sd].")
@click.option("--clip", default=None,
              help="toy-clip (registry name or open_clip folder) for the judge [default: the shipped toy-clip].")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu", "mps"]), default="auto", show_default=True)
@click.option("--psnr-images", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--captions", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@click.option("--guidance-scale", type=finite(min=0.0), default=7.5, show_default=True)
@click.option("--grid", type=click.Path(dir_okay=False), default=None, help="Also save a captioned sample grid.")
@user_errors
def main(model, clip, device, psnr_images, captions, steps, guidance_scale, grid) -> None:
    """Print toy-sd's quality bars (VAE PSNR, judged caption correctness) at full size.

    \b
    Examples:
      python -m common.toy.measure_sd --device cuda
      python -m common.toy.measure_sd --device cpu --captions 40 --grid docs/toy_sd_samples_captioned.png
    """
    measure(model, clip, device, psnr_images, captions, steps, guidance_scale, grid)


if __name__ == "__main__":
    main()
