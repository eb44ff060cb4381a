"""GPU benchmark of the distillation losses at Stable Diffusion 2.1 base size: ms/step and peak memory.

Builds the SD 2.1 base ``UNet2DConditionModel`` architecture from its known config with random weights (weights do
not change the cost) and, for the pixel rows, the SD VAE; text embeddings are random [B, 77, 1024]. For each
method (SDS, VSD, SDI, PDS, ISM, DDS), batch (1 prompt, 10 prompts in one batch) and precision (fp32, fp16
weights; latents and losses fp32) it times full optimisation steps (loss + backward + AdamW), SDI averaged over
one refresh interval, and prints a table.

    python benchmarks/bench_distillation.py                 # all rows, ~3-5 min on one H100
    python benchmarks/bench_distillation.py --methods sds,vsd --batches 1 --json bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cli import user_errors  # noqa: E402
from common.gpu import CudaTimer, peak_memory_mb, reset_peak_memory  # noqa: E402
from common.schedules import make_alphas_cumprod  # noqa: E402
from distillation.guidance import METHODS, Guidance  # noqa: E402

SD21_BASE_UNET = dict(  # stabilityai/stable-diffusion-2-1-base unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
    act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1,
    norm_eps=1e-5, upcast_attention=False, center_input_sample=False)
SD_VAE = dict(  # stabilityai/stable-diffusion-2-1-base vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215)
DEFAULTS = {"sds": ("uniform", "dreamfusion", 25.0), "vsd": ("uniform", "dreamfusion", 7.5),
            "sdi": ("linear", "constant", 7.5), "pds": ("uniform", "constant", 7.5),
            "ism": ("uniform", "lucid", 7.5), "dds": ("uniform", "constant", 7.5)}


def loss_fn(guidance: Guidance, method: str, x: torch.Tensor, emb: torch.Tensor, src: torch.Tensor, step: int,
            steps: int):
    """The loss of ``method`` at ``step`` with the runner's default settings (SDI: t annealed 980 -> 20)."""
    B, s = x.shape[0], DEFAULTS[method][2]
    if method == "sds":
        return guidance.get_sds_loss(x, emb, s)
    if method == "vsd":
        return guidance.get_vsd_loss(x, emb, s)
    if method == "sdi":
        t = torch.full((B,), int(980 - 960 * step / max(1, steps - 1)), device=x.device)
        return guidance.get_sdi_loss(x, emb, s, t=t, step=step, update_interval=25)
    if method == "ism":
        return guidance.get_ism_loss(x, emb, s)
    fn = guidance.get_pds_loss if method == "pds" else guidance.get_dds_loss
    return fn(src, x, emb, emb, s)


def bench_one(guidance: Guidance, method: str, batch: int, steps: int, warmup: int,
              pixel: bool) -> tuple[float, float]:
    device = guidance.device
    g = torch.Generator(device).manual_seed(0)
    emb = torch.randn(2 * batch, 77, 1024, device=device, generator=g)
    src = torch.randn(batch, 4, 64, 64, device=device, generator=g)
    shape = (batch, 3, 512, 512) if pixel else (batch, 4, 64, 64)
    param = torch.nn.Parameter(torch.randn(shape, device=device, generator=g).clamp(-1, 1) if pixel else
                               torch.randn(shape, device=device, generator=g))
    groups = [{"params": [param], "lr": 0.1}] + ([{"params": guidance.lora_params, "lr": 1e-4}]
                                                 if method == "vsd" else [])
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    guidance.sdi_target = None

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        x = guidance.encode_images(param) if pixel else param
        loss_fn(guidance, method, x, emb, src, i, steps).backward()
        opt.step()

    for i in range(warmup):
        step(i)
    guidance.sdi_target = None
    reset_peak_memory(device)
    with CudaTimer(device) as timer:
        for i in range(steps):
            step(i)
    return timer.ms / steps, peak_memory_mb(device)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated methods.")
@click.option("--batches", default="1,10", show_default=True, help="Comma-separated batch sizes.")
@click.option("--precisions", default="fp32,fp16", show_default=True, help="Comma-separated: fp32, fp16.")
@click.option("--steps", type=click.IntRange(min=1), default=25, show_default=True,
              help="Timed steps (25 = one SDI refresh interval).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed warm-up steps.")
@click.option("--pixel", "show_pixel", is_flag=True, help="Also time SDS on 512 px pixels through the VAE.")
@click.option("--device", default="cuda", show_default=True, help="torch device.")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@click.option("--tiny", is_flag=True, help="Smoke test: shrink the models (timings meaningless).")
@user_errors
def main(methods: str, batches: str, precisions: str, steps: int, warmup: int, show_pixel: bool, device: str,
         json_path: str | None, tiny: bool) -> None:
    """GPU benchmark of the distillation losses at SD 2.1 base size: ms/step and peak memory.

    \b
    Examples:
      python benchmarks/bench_distillation.py                 # all rows, ~3-5 min on one H100
      python benchmarks/bench_distillation.py --methods sds,vsd --batches 1 --json bench.json
      python benchmarks/bench_distillation.py --tiny --device cpu --methods sds --batches 1 --steps 1
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    device = torch.device(device)
    methods = [m for m in methods.split(",") if m]
    methods = [m for m in methods if m != "vsd"] + (["vsd"] if "vsd" in methods else [])  # LoRA stays on: last
    alphas_cumprod = make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)
    rows = []
    for precision in precisions.split(","):
        dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
        torch.manual_seed(0)
        unet_cfg, vae_cfg = dict(SD21_BASE_UNET), dict(SD_VAE)
        if tiny:
            unet_cfg.update(block_out_channels=(32, 32, 64, 64), attention_head_dim=(1, 1, 2, 2), layers_per_block=1)
            vae_cfg.update(block_out_channels=(32, 32, 32, 32), layers_per_block=1)
        unet = UNet2DConditionModel(**unet_cfg).to(device, dtype)
        vae = AutoencoderKL(**vae_cfg).to(device, dtype)
        for method in methods:
            t_sched, w_sched, _ = DEFAULTS[method]
            guidance = Guidance(unet, vae, alphas_cumprod, w_schedule=w_sched)
            if method == "vsd":
                guidance.init_vsd(4)
            for batch in (int(b) for b in batches.split(",")):
                for pixel in (False, True) if (show_pixel and method == "sds") else (False,):
                    ms, mem = bench_one(guidance, method, batch, steps, warmup, pixel)
                    rows.append({"method": method + ("-pixel" if pixel else ""), "batch": batch,
                                 "precision": precision, "ms_per_step": ms, "ms_per_prompt": ms / batch,
                                 "peak_mib": mem})
                    r = rows[-1]
                    print(f"{r['method']:<10} B={batch:<3} {precision}  {ms:9.1f} ms/step  "
                          f"{ms / batch:8.1f} ms/prompt  {mem:9.0f} MiB", flush=True)
        del unet, vae
        torch.cuda.empty_cache() if device.type == "cuda" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n| method | batch | precision | ms/step | ms/prompt | peak MiB |  ({name}, torch {torch.__version__})")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['batch']} | {r['precision']} | {r['ms_per_step']:.1f} | "
              f"{r['ms_per_prompt']:.1f} | {r['peak_mib']:.0f} |")
    if json_path:
        Path(json_path).write_text(json.dumps({"device": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
