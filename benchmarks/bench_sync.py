"""GPU benchmark of wide-image synchronization at Stable Diffusion 2 base size: views batched vs one at a time.

Builds the SD 2 base ``UNet2DConditionModel`` architecture (sample_size 64, channels 320/640/1280/1280, heads
5/10/20/20, cross-attention 1024, linear projections) and the SD VAE with random weights (weights do not change
the cost), fp16. A 512 x 3072 panorama = 64 x 384 latent, 41 windows of 64 with stride 8, 50 DDIM steps with
CFG (x0 synchronization, SyncTweedies case 2). The math is the reference of ``common.sync`` (``WindowGrid``,
``sync_sample_loop``), never the homework's exercises, so a stubbed ``synchronization`` does not change it; the UNet
calls go through ``synchronization.denoisers.TextDenoiser`` (CFG batching, no exercise). Rows: all 41 views x 2 CFG
branches in one UNet call per step (82 rows), chunks of 16 rows, and one view at a time (2 rows per call, as
MultiDiffusion and diffusers' default ``view_batch_size=1``); then the decode of the final latent, whole vs per
window.

    python benchmarks/bench_sync.py            # ~1-2 min on one H100
    python benchmarks/bench_sync.py --quick    # 5 steps
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import user_errors  # noqa: E402
from common.gpu import CudaTimer, peak_memory_mb, reset_peak_memory  # noqa: E402
from common.sync import WindowGrid, sync_sample_loop  # noqa: E402
from synchronization.core import initial_noise, schedule_from_config  # noqa: E402
from synchronization.denoisers import TextDenoiser  # noqa: E402
from synchronization.wide_image import decode_latent  # noqa: E402

SD2_BASE_UNET = dict(  # stabilityai/stable-diffusion-2-base unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32)
SD_VAE = dict(  # stabilityai/stable-diffusion-2-base vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215)
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": False}


def run_panorama(unet, mapping: WindowGrid, steps: int, max_batch: int | None, device: torch.device):
    """One synchronized panorama (x0 case, instances from one canonical noise); returns (seconds, UNet calls,
    peak MiB, final canonical latent [1, 4, H, W])."""
    n = len(mapping)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 77, 1024, generator=g).to(device, torch.float16).expand(n, -1, -1)
    uncond = torch.randn(1, 77, 1024, generator=g).to(device, torch.float16).expand(n, -1, -1)
    schedule = schedule_from_config(SD_SCHEDULER, steps)
    eps_fn = TextDenoiser(unet, cond, uncond, 7.5, schedule, max_batch)
    x_T = initial_noise(mapping, (1, 4, mapping.height, mapping.width), n, (4, 64, 64), "canonical", g).to(device)
    reset_peak_memory(device)
    with CudaTimer(device) as timer:
        z = mapping.inverse_mapping(sync_sample_loop(mapping, eps_fn, schedule.steps(), x_T, "x0"))  # g(x_0)
    return timer.ms / 1e3, eps_fn.calls, peak_memory_mb(device), z


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="5 DDIM steps instead of 50.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@user_errors
def main(quick: bool, steps: int) -> None:
    """GPU benchmark of wide-image synchronization at SD 2 base size: views batched vs one at a time.

    \b
    Examples:
      python benchmarks/bench_sync.py            # ~1-2 min on one H100
      python benchmarks/bench_sync.py --quick    # 5 steps
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        print("warning: no CUDA device; this benchmark is meant for a GPU (numbers below are CPU)")
    steps = 5 if quick else steps
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD2_BASE_UNET).to(device, torch.float16).eval()
    vae = AutoencoderKL(**SD_VAE).to(device, torch.float16).eval()
    mapping = WindowGrid(64, 384, 64, 8)
    run_panorama(unet, mapping, 1, None, device)  # warm-up (cuDNN autotune, allocator)
    rows = []
    for label, max_batch in (("all views batched", None), ("chunks of 16 rows", 16), ("one view at a time", 2)):
        seconds, calls, peak, z = run_panorama(unet, mapping, steps, max_batch, device)
        rows.append((label, max_batch or 2 * len(mapping), calls, seconds, peak))
    print(f"\nSD 2 base UNet (random weights, fp16), 512x3072 panorama, {len(mapping)} views, {steps} DDIM steps, "
          f"CFG 7.5, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    print("| mode | rows / UNet call | UNet calls | total s | s / step | peak MiB | speed-up vs one at a time |")
    print("|---|---|---|---|---|---|---|")
    base = rows[-1][3]
    for label, per_call, calls, seconds, peak in rows:
        print(f"| {label} | {per_call} | {calls} | {seconds:.2f} | {seconds / steps:.3f} | {peak:.0f} | "
              f"{base / seconds:.2f}x |")
    pipe = SimpleNamespace(vae=vae)
    print("\n| decode of the 64x384 latent | s | peak MiB |\n|---|---|---|")
    for mode in ("full", "windows"):
        decode_latent(pipe, z, mapping, mode, max_batch=8)  # warm-up
        reset_peak_memory(device)
        with torch.no_grad(), CudaTimer(device) as timer:
            decode_latent(pipe, z, mapping, mode, max_batch=8)
        print(f"| {mode} | {timer.ms / 1e3:.3f} | {peak_memory_mb(device):.0f} |")


if __name__ == "__main__":
    main()
