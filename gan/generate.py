"""Generate images from a checkpoint: one PNG per seed (``seed0000.png``), ``grid.png`` and ``config.json``.

An image depends only on its seed (latent and noise drawn from a generator seeded with it), not on the batch.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, IntListType, finite, user_errors
from common.gpu import get_device
from common.images import save_grid, save_image
from common.runs import write_config
from gan import checkpoint as ckpt
from gan.networks import Generator


def load_generator(path: str | Path, device: torch.device, which: str = "G_ema") -> Generator:
    """Build the generator stored in a checkpoint (its own ArchConfig) and load its weights."""
    tensors, arch, _ = ckpt.read_checkpoint(path)
    G = Generator(arch)
    ckpt.load_net(G, tensors, which)
    return G.to(device).eval()


@torch.no_grad()
def generate(G: Generator, seeds: list[int], truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
    """[len(seeds), 3, R, R] in [-1, 1]."""
    device = next(G.parameters()).device
    images = []
    for seed in seeds:
        gen = torch.Generator(device).manual_seed(seed)
        z = torch.randn(1, G.cfg.z_dim, generator=gen, device=device)
        images.append(G(z, truncation_psi, noise_mode, generator=gen).clamp(-1, 1).cpu())
    return torch.cat(images)


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint .safetensors.")
@click.option("--seeds", type=IntListType(), default="0-15", help="Seeds, e.g. 0-15 or 1,5,9.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--trunc", type=finite(0, 1), default=1.0, help="Truncation psi (1 = none).")
@click.option("--noise_mode", type=click.Choice(["const", "random", "none"]), default="const", help="Noise inputs.")
@click.option("--device", default="auto", help="auto, cpu, cuda, ...")
@user_errors
def main(checkpoint, seeds, out, trunc, noise_mode, device):
    """Sample a trained generator (G_ema).

    \b
    Examples:
      python -m gan.generate --checkpoint gan/checkpoints/toy_faces64_start.safetensors --seeds 0-15 --out samples
    """
    G = load_generator(checkpoint, get_device(device))
    images = generate(G, seeds, trunc, noise_mode)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for seed, img in zip(seeds, images):
        save_image(img, out / f"seed{seed:04d}.png")
    save_grid(images, out / "grid.png")
    write_config(out, {"checkpoint": str(checkpoint), "seeds": seeds, "trunc": trunc, "noise_mode": noise_mode,
                       "device": device, "which": "G_ema"})
    click.echo(f"wrote {len(seeds)} images, grid.png and config.json to {out}")


if __name__ == "__main__":
    main()
