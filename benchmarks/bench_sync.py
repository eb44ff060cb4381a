"""GPU benchmark of wide-image synchronization at Stable Diffusion 2 base size: views batched vs one at a time.

Builds the SD 2 base ``UNet2DConditionModel`` architecture (sample_size 64, channels 320/640/1280/1280, heads
5/10/20/20, cross-attention 1024, linear projections) and the SD VAE with random weights (weights do not change
the cost), ``auto`` precision (fp16 on CUDA). A 512 x 3072 panorama = 64 x 384 latent, 41 windows of 64 with
stride 8, 50 DDIM steps with CFG (x0 synchronization, SyncTweedies case 2). The math is the reference of
``common.sync`` (``WindowGrid``, ``sync_sample_loop``), never the homework's exercises, so a stubbed
``synchronization`` does not change it; the UNet calls go through ``synchronization.denoisers.TextDenoiser`` (CFG
batching, no exercise). Rows: all 41 views x 2 CFG branches in one UNet call per step (82 rows), chunks of 16
rows, and one view at a time (2 rows per call, as MultiDiffusion and diffusers' default ``view_batch_size=1``),
each ``eager`` and under CUDA graphs (``common.graphs.CudaGraphUNet``); then the decode of the final latent,
whole vs per window, and the panorama + whole decode total.

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

from benchmarks import _cli as bench  # noqa: E402
from common.cli import user_errors  # noqa: E402
from common.gpu import CudaTimer  # noqa: E402
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
TINY = {"unet": dict(sample_size=16, block_out_channels=(32, 32, 64, 64), attention_head_dim=(1, 1, 2, 2),
                     layers_per_block=1),
        "vae": dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1), "grid": (16, 48, 16, 8)}
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": False}
MODES = {"all": ("all views batched", None), "chunks": ("chunks of 16 rows", 16), "single": ("one view at a time", 2)}


def run_panorama(unet, mapping: WindowGrid, steps: int, max_batch: int | None, device: torch.device):
    """One synchronized panorama (x0 case, instances from one canonical noise); returns (seconds, UNet calls,
    peak allocated MiB, peak reserved MiB, final canonical latent [1, 4, H, W])."""
    n, dtype = len(mapping), next(unet.parameters()).dtype
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 77, 1024, generator=g).to(device, dtype).expand(n, -1, -1)
    uncond = torch.randn(1, 77, 1024, generator=g).to(device, dtype).expand(n, -1, -1)
    schedule = schedule_from_config(SD_SCHEDULER, steps)
    eps_fn = TextDenoiser(unet, cond, uncond, 7.5, schedule, max_batch)
    win = mapping.window
    x_T = initial_noise(mapping, (1, 4, mapping.height, mapping.width), n, (4, *win), "canonical", g).to(device)
    bench.reset_memory(device)
    with CudaTimer(device) as timer:
        z = mapping.inverse_mapping(sync_sample_loop(mapping, eps_fn, schedule.steps(device), x_T, "x0"))  # g(x_0)
    return (timer.ms / 1e3, eps_fn.calls, *bench.peak_memory(device), z)


def build(device: torch.device, dtype: torch.dtype, tiny: bool, channels_last: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**{**SD2_BASE_UNET, **(TINY["unet"] if tiny else {})})
        vae = AutoencoderKL(**{**SD_VAE, **(TINY["vae"] if tiny else {})})
    unet, vae = unet.to(dtype=dtype).eval().requires_grad_(False), vae.to(dtype=dtype).eval().requires_grad_(False)
    if channels_last:
        unet, vae = unet.to(memory_format=torch.channels_last), vae.to(memory_format=torch.channels_last)
    return unet, vae


def time_decodes(vae, z: torch.Tensor, mapping: WindowGrid, device: torch.device) -> dict[str, tuple]:
    """decode mode -> (seconds, peak allocated MiB, peak reserved MiB) of the final latent's decode."""
    out, pipe = {}, SimpleNamespace(vae=vae)
    for mode in ("full", "windows"):
        with torch.no_grad():
            decode_latent(pipe, z, mapping, mode, max_batch=8)  # warm-up
            bench.reset_memory(device)
            with CudaTimer(device) as timer:
                decode_latent(pipe, z, mapping, mode, max_batch=8)
        out[mode] = (timer.ms / 1e3, *bench.peak_memory(device))
    return out


def print_tables(rows: list[dict], decodes: dict, steps: int, views: int, device: torch.device) -> None:
    print(f"\nSD 2 base UNet (random weights), {views} views, {steps} DDIM steps, CFG 7.5, "
          f"{bench.device_name(device)}")
    print("| mode | precision | graphs | rows / UNet call | UNet calls | total s | s / step | + full decode s | "
          "peak MiB | reserved MiB | speed-up vs one at a time |\n|---|---|---|---|---|---|---|---|---|---|---|")
    base = {(r["precision"], r["graphs"]): r["seconds"] for r in rows if r["mode"] == "single"}
    for r in rows:
        ref = base.get((r["precision"], r["graphs"]))
        speed = f"{ref / r['seconds']:.2f}x" if ref else "-"
        print(f"| {r['label']} | {r['precision']} | {r['graphs']} | {r['rows_per_call']} | {r['calls']} | "
              f"{r['seconds']:.2f} | {r['seconds'] / steps:.3f} | {r['with_decode_s']:.2f} | "
              f"{bench.mib(r['peak_mib'])} | {bench.mib(r['reserved_mib'])} | {speed} |")
    print("\n| decode of the final latent | precision | s | peak MiB | reserved MiB |\n|---|---|---|---|---|")
    for (precision, mode), (seconds, alloc, reserved) in decodes.items():
        print(f"| {mode} | {precision} | {seconds:.3f} | {bench.mib(alloc)} | {bench.mib(reserved)} |")


def precision_rows(unet, mapping, label: str, modes: list[str], graphs: list[str], steps: int,
                   device: torch.device) -> tuple[list[dict], torch.Tensor]:
    rows, z = [], None
    for graph_mode in graphs:
        for mode in modes:
            name, max_batch = MODES[mode]
            model = bench.wrap_unet(unet, graph_mode)  # fresh graphs per row
            run_panorama(model, mapping, 1, max_batch, device)  # warm-up (cuDNN autotune, allocator, captures)
            seconds, calls, alloc, reserved, z = run_panorama(model, mapping, steps, max_batch, device)
            rows.append({"mode": mode, "label": name, "precision": label, "graphs": graph_mode,
                         "rows_per_call": max_batch or 2 * len(mapping), "calls": calls, "seconds": seconds,
                         "peak_mib": alloc, "reserved_mib": reserved,
                         "graph_stats": model.stats if graph_mode != "eager" else {}})
            print(f"{name:<20} {label:<9} {graph_mode:<6} {seconds:8.2f} s  {calls} UNet calls", flush=True)
    return rows, z


@bench.bench_command()
@click.option("--quick", is_flag=True, help="5 DDIM steps instead of 50.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@click.option("--modes", type=bench.CommaChoice(tuple(MODES)), default="all,chunks,single", show_default=True,
              help="Comma-separated: all (every view in one call), chunks (16 rows), single (one view).")
@click.option("--precisions", type=bench.PRECISIONS, default="auto", show_default=True,
              help="Comma-separated UNet/VAE weight precisions (auto = fp16 on CUDA, fp32 on CPU).")
@click.option("--graphs", "graphs", type=bench.CommaChoice(bench.GRAPH_MODES), default="eager,graphs",
              show_default=True,
              help="Comma-separated: eager, graphs (CUDA graphs of the UNet), compile (torch.compile in them).")
@click.option("--channels_last", is_flag=True, help="UNet and VAE in channels_last memory format.")
@click.option("--device", default="cuda", show_default=True, help="torch device (cpu only with --tiny).")
@click.option("--tiny", is_flag=True, help="Smoke test: tiny UNet/VAE, a 16x48 latent (5 views).")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@user_errors
def main(quick: bool, steps: int, modes: list[str], precisions: list[str], graphs: list[str], channels_last: bool,
         device: str, tiny: bool, json_path: str | None) -> None:
    """GPU benchmark of wide-image synchronization at SD 2 base size: views batched vs one at a time.

    \b
    Examples:
      python benchmarks/bench_sync.py            # ~1-2 min on one H100
      python benchmarks/bench_sync.py --quick    # 5 steps
      python benchmarks/bench_sync.py --modes all --graphs eager,graphs --json sync.json
    """
    device = bench.bench_device(device, tiny, "--tiny")
    bench.import_diffusers()
    steps = 5 if quick else steps
    levels, graphs = bench.resolve_precisions(precisions, device), bench.graph_modes(graphs, device)
    mapping = WindowGrid(*(TINY["grid"] if tiny else (64, 384, 64, 8)))
    rows, decodes = [], {}
    for label, dtype in levels:
        unet, vae = build(device, dtype, tiny, channels_last)
        new_rows, z = precision_rows(unet, mapping, label, modes, graphs, steps, device)
        for mode, values in time_decodes(vae, z, mapping, device).items():
            decodes[(label, mode)] = values
        for r in new_rows:
            r["with_decode_s"] = r["seconds"] + decodes[(label, "full")][0]
        rows += new_rows
        del unet, vae
        bench.reset_memory(device)
    print_tables(rows, decodes, steps, len(mapping), device)
    bench.write_rows(json_path, {"device": bench.device_name(device), "torch": torch.__version__, "steps": steps,
                                 "views": len(mapping), "channels_last": channels_last, "rows": rows,
                                 "decode": [{"precision": p, "mode": m, "seconds": v[0], "peak_mib": v[1],
                                             "reserved_mib": v[2]} for (p, m), v in decodes.items()]})


if __name__ == "__main__":
    main()
