"""GPU benchmark of DDPM / DDIM sampling and DPS at google/ddpm-celebahq-256 size: time for 10 images.

Builds the ``google/ddpm-celebahq-256`` ``UNet2DModel`` architecture from its known config with random weights
(weights do not change the cost; about 114M parameters) and times the reference samplers (``common.sampling``,
``dps``) for 10 images: DDPM 1000 steps, DDIM 50 steps, DPS (inpainting, on DDIM) 1000 steps; fp32 vs fp16 UNet
weights (scheduler math stays fp32); one batch of 10 vs one image at a time. Prints a table (and optionally JSON).

    python benchmarks/bench_ddpm_dps.py --quick        # 20 DDPM/DPS steps, times extrapolated to 1000: ~1-2 min
    python benchmarks/bench_ddpm_dps.py --samplers DDIM  # full step counts (all samplers: ~25 min, split the run)
    python benchmarks/bench_ddpm_dps.py --arch toy-faces --quick    # the embedded toy model's architecture
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import user_errors  # noqa: E402
from common.gpu import CudaTimer, get_device, make_generators, peak_memory_mb, reset_peak_memory  # noqa: E402
from common.sampling import sample_unet, sampling_config  # noqa: E402
from common.toy.train_faces import UNET_CONFIG, build_tiny_unet  # noqa: E402
from dps.dps import dps_sample  # noqa: E402
from dps.operators import Inpainting, add_measurement_noise, random_mask  # noqa: E402

CELEBAHQ_256_UNET = dict(  # google/ddpm-celebahq-256 config.json
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6, act_fn="silu", time_embedding_type="positional",
    flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, mid_block_scale_factor=1, center_input_sample=False)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                 clip_sample=True)
FULL_STEPS = {"DDPM": 1000, "DDIM": 50, "DPS": 1000}


def build(arch: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # silence the fp16 .to() notice
    torch.manual_seed(0)
    if arch == "tiny":
        unet = build_tiny_unet(16)
    else:
        unet = UNet2DModel(**(CELEBAHQ_256_UNET if arch == "celebahq" else UNET_CONFIG))
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)


def run_sampler(unet, sampler: str, steps: int, seeds: list[int], device: torch.device) -> torch.Tensor:
    gens = make_generators(seeds, device)
    if sampler == "DPS":
        size = unet.config.sample_size
        op = Inpainting(random_mask(len(seeds), size, generator=torch.Generator().manual_seed(0))).to(device)
        y = add_measurement_noise(op.forward(torch.zeros(len(seeds), 3, size, size, device=device)))
        return dps_sample(unet, sampling_config(SCHEDULER), y, op, steps, 0.5, gens)
    return sample_unet(unet, sampling_config(SCHEDULER), sampler, steps, gens)


def time_row(unet, sampler, steps, batched, num_images, device) -> tuple[float, float]:
    """(seconds for num_images, peak MiB). One image at a time loops over the images."""
    run_sampler(unet, sampler, 2, [0] if not batched else list(range(num_images)), device)  # warm-up
    reset_peak_memory(device)
    with CudaTimer(device) as timer:
        if batched:
            run_sampler(unet, sampler, steps, list(range(num_images)), device)
        else:
            for i in range(num_images):
                run_sampler(unet, sampler, steps, [i], device)
    return timer.ms / 1000, peak_memory_mb(device)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", type=click.Choice(["celebahq", "toy-faces", "tiny"]), default="celebahq", show_default=True,
              help="UNet architecture (random weights).")
@click.option("--quick", is_flag=True, help="20 DDPM/DPS steps; times extrapolated to 1000.")
@click.option("--samplers", default="DDPM,DDIM,DPS", show_default=True, help="Comma-separated samplers.")
@click.option("--precisions", default="fp32,fp16", show_default=True, help="Comma-separated: fp32, fp16, bf16.")
@click.option("--modes", default="batched,single", show_default=True, help="Comma-separated: batched, single.")
@click.option("--num_images", type=click.IntRange(min=1), default=10, show_default=True, help="Images per row.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@user_errors
def main(arch: str, quick: bool, samplers: str, precisions: str, modes: str, num_images: int, device: str,
         json_path: str | None) -> list[dict]:
    """GPU benchmark of DDPM / DDIM sampling and DPS at google/ddpm-celebahq-256 size: time for 10 images.

    \b
    Examples:
      python benchmarks/bench_ddpm_dps.py --quick        # 20 DDPM/DPS steps, times extrapolated to 1000: ~1-2 min
      python benchmarks/bench_ddpm_dps.py --samplers DDIM  # full step counts (all samplers: ~25 min, split the run)
      python benchmarks/bench_ddpm_dps.py --arch toy-faces --quick    # the embedded toy model's architecture
    """
    device = get_device(device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    rows = []
    unet_params = None
    for precision in precisions.split(","):
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if device.type == "cpu" and dtype != torch.float32:
            continue
        unet = build(arch, device, dtype)
        unet_params = sum(p.numel() for p in unet.parameters())
        for sampler in samplers.split(","):
            full = FULL_STEPS[sampler]
            steps = min(full, 20) if quick and sampler != "DDIM" else full
            for mode in modes.split(","):
                seconds, mem = time_row(unet, sampler, steps, mode == "batched", num_images, device)
                rows.append({"sampler": sampler, "steps_run": steps, "full_steps": full, "precision": precision,
                             "mode": mode, "seconds": seconds, "seconds_full": seconds * full / steps,
                             "per_image_full": seconds * full / steps / num_images, "peak_mib": mem})
                print_row(rows[-1], header=len(rows) == 1, device=device, arch=arch, params=unet_params,
                          num_images=num_images)
        del unet
    if json_path:
        Path(json_path).write_text(json.dumps({"device": str(device), "arch": arch, "rows": rows}, indent=2))
    return rows


def print_row(row: dict, header: bool, device, arch: str, params: int, num_images: int) -> None:
    if header:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{arch} UNet ({params / 1e6:.2f}M params) on {name}: time for {num_images} images")
        print(f"{'sampler':<8}{'steps':>7}{'prec':>6}{'mode':>9}{'measured s':>12}{'s @ full steps':>16}"
              f"{'s/image':>9}{'peak MiB':>10}")
    print(f"{row['sampler']:<8}{row['steps_run']:>7}{row['precision']:>6}{row['mode']:>9}{row['seconds']:>12.2f}"
          f"{row['seconds_full']:>16.1f}{row['per_image_full']:>9.2f}{row['peak_mib']:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
