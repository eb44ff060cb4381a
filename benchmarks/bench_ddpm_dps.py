"""GPU benchmark of DDPM / DDIM sampling and DPS at google/ddpm-celebahq-256 size: time for N images.

Builds the ``google/ddpm-celebahq-256`` ``UNet2DModel`` architecture from its known config with random weights
(weights do not change the cost; about 114M parameters) and times the reference samplers (``common.sampling``,
``dps``): DDPM 1000 steps and DDIM 50 steps for ``--num_images`` (10) images, DPS (inpainting, on DDIM) 1000
steps for ``--dps_images`` (3); ``auto`` precision (fp16 UNet weights on CUDA; scheduler math stays fp32); one
batch vs one image at a time; ``eager`` vs ``graphs`` (the UNet inside ``common.graphs.CudaGraphUNet``: plain
graphs for DDPM/DDIM, forward + backward graphs for DPS's gradient through the UNet). Prints a table (and
optionally JSON); ``--steps`` / ``--quick`` time fewer steps and extrapolate linearly to the full count.

    python benchmarks/bench_ddpm_dps.py --quick        # 20 DDPM/DPS steps, times extrapolated to 1000: ~1-2 min
    python benchmarks/bench_ddpm_dps.py --steps 100 --modes batched --json rows.json
    python benchmarks/bench_ddpm_dps.py --arch toy-faces --quick    # the embedded toy model's architecture
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _cli as bench  # noqa: E402
from common.cli import user_errors  # noqa: E402
from common.gpu import CudaTimer, make_generators  # noqa: E402
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
SAMPLERS = ("DDPM", "DDIM", "DPS")
FULL_STEPS = {"DDPM": 1000, "DDIM": 50, "DPS": 1000}


def build(arch: str, device: torch.device, dtype: torch.dtype, channels_last: bool) -> torch.nn.Module:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = build_tiny_unet(16) if arch == "tiny" else UNet2DModel(**(CELEBAHQ_256_UNET if arch == "celebahq"
                                                                         else UNET_CONFIG))
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return unet.to(memory_format=torch.channels_last) if channels_last else unet


def run_sampler(unet, sampler: str, steps: int, seeds: list[int], device: torch.device) -> torch.Tensor:
    gens = make_generators(seeds, device)
    if sampler == "DPS":
        size = unet.config.sample_size
        op = Inpainting(random_mask(len(seeds), size, generator=torch.Generator().manual_seed(0))).to(device)
        y = add_measurement_noise(op.forward(torch.zeros(len(seeds), 3, size, size, device=device)))
        return dps_sample(unet, sampling_config(SCHEDULER), y, op, steps, 0.5, gens)
    return sample_unet(unet, sampling_config(SCHEDULER), sampler, steps, gens)


def time_row(unet, sampler, steps, batched, num_images, device) -> tuple[float, float, float]:
    """(seconds for num_images, peak allocated MiB, peak reserved MiB). One at a time loops over the images.
    The 2-step warm-up holds the graph captures."""
    run_sampler(unet, sampler, 2, [0] if not batched else list(range(num_images)), device)  # warm-up
    bench.reset_memory(device)
    with CudaTimer(device) as timer:
        if batched:
            run_sampler(unet, sampler, steps, list(range(num_images)), device)
        else:
            for i in range(num_images):
                run_sampler(unet, sampler, steps, [i], device)
    return (timer.ms / 1000, *bench.peak_memory(device))


def precision_rows(unet, label: str, samplers: list[str], steps_for: dict[str, int], modes: list[str],
                   graphs: list[str], images_for: dict[str, int], device: torch.device) -> list[dict]:
    """Rows of one precision: sampler x mode x eager/graphs (a fresh CudaGraphUNet per row)."""
    rows = []
    for sampler in samplers:
        full, steps, n = FULL_STEPS[sampler], steps_for[sampler], images_for[sampler]
        for mode in modes:
            for graph_mode in graphs:
                model = bench.wrap_unet(unet, graph_mode)
                seconds, alloc, reserved = time_row(model, sampler, steps, mode == "batched", n, device)
                rows.append({"sampler": sampler, "images": n, "steps_run": steps, "full_steps": full,
                             "precision": label, "mode": mode, "graphs": graph_mode, "seconds": seconds,
                             "seconds_full": seconds * full / steps, "per_image_full": seconds * full / steps / n,
                             "peak_mib": alloc, "reserved_mib": reserved,
                             "graph_stats": model.stats if graph_mode != "eager" else {}})
                print_row(rows[-1])
    return rows


HEAD = (f"{'sampler':<8}{'images':>7}{'steps':>7}{'prec':>10}{'mode':>9}{'graphs':>8}{'measured s':>12}"
        f"{'s @ full steps':>16}{'s/image':>9}{'peak MiB':>10}{'reserved':>10}")


def print_table(rows: list[dict]) -> None:
    """The markdown table of the rows (``s @ full`` extrapolates the timed steps linearly)."""
    print("\n| sampler | images | steps timed | precision | mode | graphs | measured s | s @ full steps | s / image "
          "| peak MiB | reserved MiB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} {r['full_steps']} | {r['images']} | {r['steps_run']} | {r['precision']} | "
              f"{r['mode']} | {r['graphs']} | {r['seconds']:.2f} | {r['seconds_full']:.2f} | "
              f"{r['per_image_full']:.3f} | {bench.mib(r['peak_mib'])} | {bench.mib(r['reserved_mib'])} |")


def print_row(row: dict) -> None:
    print(f"{row['sampler']:<8}{row['images']:>7}{row['steps_run']:>7}{row['precision']:>10}{row['mode']:>9}"
          f"{row['graphs']:>8}{row['seconds']:>12.2f}{row['seconds_full']:>16.2f}{row['per_image_full']:>9.3f}"
          f"{bench.mib(row['peak_mib']):>10}{bench.mib(row['reserved_mib']):>10}", flush=True)


@bench.bench_command()
@click.option("--arch", type=click.Choice(["celebahq", "toy-faces", "tiny"]), default="celebahq", show_default=True,
              help="UNet architecture (random weights; tiny: CPU smoke runs).")
@click.option("--quick", is_flag=True, help="20 DDPM/DPS steps; times extrapolated to 1000.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps to time for every sampler (capped at its full count); extrapolated to the full count.")
@click.option("--samplers", type=bench.CommaChoice(SAMPLERS), default="DDPM,DDIM,DPS", show_default=True,
              help="Comma-separated samplers.")
@click.option("--precisions", type=bench.PRECISIONS, default="auto", show_default=True,
              help="Comma-separated UNet weight precisions (auto = fp16 on CUDA, fp32 on CPU).")
@click.option("--modes", type=bench.CommaChoice(("batched", "single")), default="batched,single", show_default=True,
              help="Comma-separated: batched (one batch), single (one image at a time).")
@click.option("--graphs", "graphs", type=bench.CommaChoice(bench.GRAPH_MODES), default="eager,graphs",
              show_default=True,
              help="Comma-separated: eager, graphs (CUDA graphs of the UNet), compile (torch.compile in them).")
@click.option("--num_images", type=click.IntRange(min=1), default=10, show_default=True,
              help="Images per DDPM / DDIM row.")
@click.option("--dps_images", type=click.IntRange(min=1), default=3, show_default=True, help="Images per DPS row.")
@click.option("--channels_last", is_flag=True, help="UNet in channels_last memory format.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:N; cpu only with --arch tiny.")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@user_errors
def main(arch: str, quick: bool, steps: int | None, samplers: list[str], precisions: list[str], modes: list[str],
         graphs: list[str], num_images: int, dps_images: int, channels_last: bool, device: str,
         json_path: str | None) -> list[dict]:
    """GPU benchmark of DDPM / DDIM sampling and DPS at google/ddpm-celebahq-256 size, eager vs CUDA graphs.

    \b
    Examples:
      python benchmarks/bench_ddpm_dps.py --quick        # 20 DDPM/DPS steps, times extrapolated to 1000: ~1-2 min
      python benchmarks/bench_ddpm_dps.py --steps 100 --modes batched --json rows.json
      python benchmarks/bench_ddpm_dps.py --arch tiny --device cpu --samplers DDIM --steps 2   # smoke run
    """
    device = bench.bench_device(device, arch == "tiny", "--arch tiny")
    bench.import_diffusers()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    levels, graphs = bench.resolve_precisions(precisions, device), bench.graph_modes(graphs, device)
    steps_for = {s: min(FULL_STEPS[s], steps or (20 if quick and s != "DDIM" else FULL_STEPS[s])) for s in samplers}
    images_for = {s: dps_images if s == "DPS" else num_images for s in samplers}
    rows, params = [], 0
    for label, dtype in levels:
        unet = build(arch, device, dtype, channels_last)
        if not rows:
            params = sum(p.numel() for p in unet.parameters())
            print(f"{arch} UNet ({params / 1e6:.2f}M params) on {bench.device_name(device)}\n{HEAD}")
        rows += precision_rows(unet, label, samplers, steps_for, modes, graphs, images_for, device)
        del unet
        bench.reset_memory(device)
    print_table(rows)
    bench.write_rows(json_path, {"device": bench.device_name(device), "torch": torch.__version__, "arch": arch,
                                 "params": params, "channels_last": channels_last, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
