"""GPU benchmark of the distillation losses at Stable Diffusion 2.1 base size: ms/step and peak memory.

Builds the SD 2.1 base ``UNet2DConditionModel`` architecture from its known config with random weights (weights do
not change the cost) and, for the pixel rows, the SD VAE; text embeddings are random [B, 77, 1024]. For each
method (SDS, VSD, SDI, PDS, ISM, DDS), batch (1 prompt, 10 prompts in one batch), precision (``auto`` = fp16
weights on CUDA; latents and losses fp32) and mode (``eager``; ``graphs``: the UNet inside
``common.graphs.CudaGraphUNet``, CUDA graphs for every UNet call, VSD's LoRA fit included) it times full
optimisation steps (loss + backward + AdamW), SDI averaged over one refresh interval, and prints a table with
each row's cost relative to SDS at the same batch, precision and mode.

    python benchmarks/bench_distillation.py                 # all rows, eager and graphs, ~3-5 min on one H100
    python benchmarks/bench_distillation.py --methods sds,vsd,ism --steps 10 --json bench.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _cli as bench  # noqa: E402
from common.cli import user_errors  # noqa: E402
from common.divergence import LazyChecks  # noqa: E402
from common.gpu import CudaTimer  # noqa: E402
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
TINY_UNET = dict(block_out_channels=(32, 32, 64, 64), attention_head_dim=(1, 1, 2, 2), layers_per_block=1)
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1)
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
              pixel: bool) -> tuple[float, float, float, float]:
    """(ms per step, peak allocated MiB, peak reserved MiB) over ``steps`` steps after ``warmup`` steps (graph
    captures and compilations happen in the warm-up), and the warm-up's seconds."""
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

    guidance.checks = LazyChecks()  # as in distillation.runner: finiteness read a step late, no wait per step

    def step(i: int) -> None:
        guidance.check_step = i
        opt.zero_grad(set_to_none=True)
        x = guidance.encode_images(param) if pixel else param
        loss_fn(guidance, method, x, emb, src, i, steps).backward()
        opt.step()
        guidance.checks.poll()

    with CudaTimer(device) as warm:  # wall clock: a compilation keeps the GPU idle inside the timed window
        for i in range(warmup):
            step(i)
    guidance.sdi_target = None
    bench.reset_memory(device)
    with CudaTimer(device) as timer:
        for i in range(steps):
            step(i)
    guidance.checks.flush()
    guidance.checks = guidance.check_step = None
    return (timer.ms / steps, *bench.peak_memory(device), warm.ms / 1e3)


def build_models(device: torch.device, dtype: torch.dtype, tiny: bool, channels_last: bool):
    """The SD 2.1 base UNet and VAE (random weights, made on the device), or their tiny smoke versions."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet_cfg, vae_cfg = {**SD21_BASE_UNET, **(TINY_UNET if tiny else {})}, {**SD_VAE, **(TINY_VAE if tiny else {})}
    with torch.device(device):
        unet, vae = UNet2DConditionModel(**unet_cfg).to(dtype=dtype), AutoencoderKL(**vae_cfg).to(dtype=dtype)
    if channels_last:
        unet, vae = unet.to(memory_format=torch.channels_last), vae.to(memory_format=torch.channels_last)
    return unet, vae


def run_method(unet, vae, method: str, label: str, modes: list[str], batches: list[int], pixel: bool,
               steps: int, warmup: int) -> list[dict]:
    """Rows of one method: every mode x batch (x pixel for SDS); VSD's LoRA is added once and stays."""
    alphas_cumprod = make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)
    guidance = Guidance(unet, vae, alphas_cumprod, w_schedule=DEFAULTS[method][1])
    if method == "vsd":
        guidance.init_vsd(4)
    rows = []
    for mode in modes:
        for batch in batches:
            for pix in (False, True) if (pixel and method == "sds") else (False,):
                guidance.unet = bench.wrap_unet(unet, mode)  # fresh graphs per row
                ms, alloc, reserved, warm_s = bench_one(guidance, method, batch, steps,
                                                max(warmup, 1) if mode != "eager" else warmup, pix)
                stats = guidance.unet.stats if mode != "eager" else {}
                guidance.unet = unet
                rows.append({"method": method + ("-pixel" if pix else ""), "batch": batch, "precision": label,
                             "mode": mode, "ms_per_step": ms, "ms_per_prompt": ms / batch, "peak_mib": alloc,
                             "reserved_mib": reserved, "warmup_s": warm_s, "graph_stats": stats})
                r = rows[-1]
                print(f"{r['method']:<10} B={batch:<3} {label:<9} {mode:<6} {ms:9.1f} ms/step {ms / batch:8.1f} "
                      f"ms/prompt  {bench.mib(alloc):>7} MiB  {bench.mib(reserved):>7} MiB reserved  "
                      f"warm-up {warm_s:.1f} s  {stats or ''}",
                      flush=True)
    return rows


def print_table(rows: list[dict], device: torch.device) -> None:
    """The markdown table; ``x SDS`` = ms/step over SDS's at the same batch, precision and mode; ``warm-up s``
    the untimed warm-up steps (graph captures, ``--graphs compile``'s compilation)."""
    sds = {(r["batch"], r["precision"], r["mode"]): r["ms_per_step"] for r in rows if r["method"] == "sds"}
    print("\n| method | batch | precision | mode | ms/step | ms/prompt | x SDS | peak MiB | reserved MiB | warm-up s "
          f"|  ({bench.device_name(device)}, torch {torch.__version__})")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = sds.get((r["batch"], r["precision"], r["mode"]))
        ratio = f"{r['ms_per_step'] / base:.2f}" if base else "-"
        print(f"| {r['method']} | {r['batch']} | {r['precision']} | {r['mode']} | {r['ms_per_step']:.1f} | "
              f"{r['ms_per_prompt']:.2f} | {ratio} | {bench.mib(r['peak_mib'])} | {bench.mib(r['reserved_mib'])} | "
              f"{r['warmup_s']:.1f} |")


@bench.bench_command()
@click.option("--methods", type=bench.CommaChoice(METHODS), default=",".join(METHODS), show_default=True,
              help="Comma-separated methods.")
@click.option("--batches", type=bench.CommaInts(1), default="1,10", show_default=True,
              help="Comma-separated batch sizes.")
@click.option("--precisions", type=bench.PRECISIONS, default="auto", show_default=True,
              help="Comma-separated UNet/VAE weight precisions (auto = fp16 on CUDA, fp32 on CPU).")
@click.option("--graphs", "modes", type=bench.CommaChoice(bench.GRAPH_MODES), default="eager,graphs",
              show_default=True,
              help="Comma-separated: eager, graphs (CUDA graphs of the UNet), compile (torch.compile in them).")
@click.option("--steps", type=click.IntRange(min=1), default=25, show_default=True,
              help="Timed steps (25 = one SDI refresh interval).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed warm-up steps (at least 1 with graphs: the captures).")
@click.option("--pixel", "show_pixel", is_flag=True, help="Also time SDS on 512 px pixels through the VAE.")
@click.option("--channels_last", is_flag=True, help="UNet and VAE in channels_last memory format.")
@click.option("--device", default="cuda", show_default=True, help="torch device (cpu only with --tiny).")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@click.option("--tiny", is_flag=True, help="Smoke test: shrink the models (timings meaningless).")
@user_errors
def main(methods: list[str], batches: list[int], precisions: list[str], modes: list[str], steps: int, warmup: int,
         show_pixel: bool, channels_last: bool, device: str, json_path: str | None, tiny: bool) -> None:
    """GPU benchmark of the distillation losses at SD 2.1 base size: ms/step and peak memory, eager vs graphs.

    \b
    Examples:
      python benchmarks/bench_distillation.py                 # all rows, ~3-5 min on one H100
      python benchmarks/bench_distillation.py --methods sds,vsd,ism --steps 10 --json bench.json
      python benchmarks/bench_distillation.py --tiny --device cpu --methods sds --batches 1 --steps 1
    """
    device = bench.bench_device(device, tiny, "--tiny")
    bench.import_diffusers()
    levels, modes = bench.resolve_precisions(precisions, device), bench.graph_modes(modes, device)
    methods = [m for m in methods if m != "vsd"] + (["vsd"] if "vsd" in methods else [])  # LoRA stays on: last
    rows = []
    for label, dtype in levels:
        unet, vae = build_models(device, dtype, tiny, channels_last)
        for method in methods:
            rows += run_method(unet, vae, method, label, modes, batches, show_pixel, steps, warmup)
        del unet, vae
        bench.reset_memory(device)
    print_table(rows, device)
    bench.write_rows(json_path, {"device": bench.device_name(device), "torch": torch.__version__, "tiny": tiny,
                           "channels_last": channels_last, "rows": rows})


if __name__ == "__main__":
    main()
