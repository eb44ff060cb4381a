"""GPU probe: where a VSD step's time goes (issue #19), part by part, on the SD 2.1 base UNet at 64x64 latents.

For each batch B it times, eager and under ``common.graphs.CudaGraphUNet`` (ms per call, CUDA events):

- ``sds[2B]``: the SDS step's one CFG call (no grad), the yardstick;
- ``vsd[3B]``: VSD's no-grad call (pretrained CFG pair + LoRA prediction, ``common.lora_mix``);
- ``fit[B]``: the LoRA fit, forward with grad + backward (LoRA weights float32, as ``init_vsd`` keeps them);
- ``fit16[B]``: the same with float16 LoRA weights (what the float32 copy costs);
- ``dx[B]``: a forward + backward to the input only, adapters off (the frozen UNet's backward alone);
- ``fwd_grad[B]`` (eager only): the fit's forward with grad, no backward;
- ``vsd16[3B]``: ``vsd[3B]`` with float16 LoRA weights (``common.lora_precision.LoraMasters``' layers);
- ``fused16[4B]``: the [3B] call and the fit as ONE forward with grad on [4B] (adapters on the last 2B rows) and a
  backward from the fit's B rows only, float16 LoRA: whether one call beats ``vsd16[3B]`` + ``fit16[B]`` where
  calls are latency-bound (1 prompt), at the price of a backward through all 4B rows;
- ``overlap16``: ``vsd16[3B]`` on one side stream while ``fit16[B]`` (forward + backward) runs on another, joined
  at the end (with the [3B] replay on the default stream a step took ~5 s under graphs: torch 2.11, H200);
  ``ovfwd16``: only the fit's forward on the side stream, its backward after the join. Whether two
  latency-bound calls share the GPU (they read the same LoRA weights and write nothing the other reads).

``--profile`` prints the top CUDA kernels of one eager fit at the largest B (torch.profiler), so a slow backward
names its kernels. Weights are random (they do not change the cost).

    python benchmarks/probe_vsd_parts.py --batches 1,10 --profile
    python benchmarks/probe_vsd_parts.py --device cpu --tiny --batches 1 --reps 1   # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _cli as bench  # noqa: E402
from benchmarks.bench_distillation import SD21_BASE_UNET, TINY_UNET  # noqa: E402
from benchmarks.bench_unet_knobs import time_call as timed  # noqa: E402
from common.graphs import CudaGraphUNet  # noqa: E402
from common.lora_mix import BASE, mixed_adapters  # noqa: E402


def build(device: torch.device, dtype: torch.dtype, tiny: bool):
    """SD 2.1 base UNet (``dtype``, frozen; ``tiny``: its smoke size) with a rank-4 peft LoRA on
    to_q/k/v/out.0 in float32 (peft's own way: the activations are cast to float32 for it)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**{**SD21_BASE_UNET, **(TINY_UNET if tiny else {})})
    unet = unet.to(dtype).eval().requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    lora = [p for p in unet.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()
    return unet, lora


def parts(unet, lora, B: int, graphs: bool, device: torch.device, reps: int) -> dict[str, float]:
    """ms per call of each part (module doc) at batch B; the LoRA weights are float32 again afterwards."""
    g, dtype = torch.Generator(device).manual_seed(0), unet.dtype
    emb_dim = unet.config.cross_attention_dim
    x = torch.randn(B, 4, 64, 64, device=device, generator=g, dtype=dtype)
    emb = torch.randn(B, 77, emb_dim, device=device, generator=g, dtype=dtype)
    t = torch.full((B,), 500, device=device, dtype=torch.long)
    noise = torch.randn(B, 4, 64, 64, device=device, generator=g)
    call = CudaGraphUNet(unet) if graphs else unet
    side = [torch.cuda.Stream(device), torch.cuda.Stream(device)] if device.type == "cuda" else None

    def sds():
        with torch.no_grad():
            return call(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([emb, emb])).sample

    def vsd3():
        with torch.no_grad(), mixed_adapters(unet, [BASE] * (2 * B) + ["default"] * B):
            return call(torch.cat([x, x, x]), torch.cat([t, t, t]),
                        encoder_hidden_states=torch.cat([emb, emb, emb])).sample

    def fit():
        with torch.enable_grad():
            out = call(x, t, encoder_hidden_states=emb).sample
            ((out.float() - noise) ** 2).mean().backward()

    def fused():
        with torch.enable_grad(), mixed_adapters(unet, [BASE] * (2 * B) + ["default"] * (2 * B)):
            out = call(torch.cat([x, x, x, x]), torch.cat([t, t, t, t]),
                       encoder_hidden_states=torch.cat([emb, emb, emb, emb])).sample
            ((out[3 * B:].float() - noise) ** 2).mean().backward()

    def overlapped(full: bool):
        def run():
            if device.type != "cuda":
                return vsd3(), fit()
            main = torch.cuda.current_stream(device)
            for stream in side:
                stream.wait_stream(main)
            with torch.cuda.stream(side[0]), torch.enable_grad():
                loss = ((call(x, t, encoder_hidden_states=emb).sample.float() - noise) ** 2).mean()
                if full:  # autograd.grad: no AccumulateGrad node of the main stream in the side stream's backward
                    grads = torch.autograd.grad(loss, lora)
            with torch.cuda.stream(side[1]):  # the [3B] replay on the default stream instead: ~5 s a step
                vsd3()
            for stream in side:
                main.wait_stream(stream)
            if not full:
                grads = torch.autograd.grad(loss, lora)
            return grads
        return run

    def fwd_grad():
        with torch.enable_grad():
            return call(x, t, encoder_hidden_states=emb).sample

    def dx():
        xi = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = call(xi, t, encoder_hidden_states=emb).sample
            ((out.float() - noise) ** 2).mean().backward()

    def timed_part(name: str, fn) -> float:
        ms = timed(fn, reps, device)
        print(f"  B={B} {'graphs' if graphs else 'eager'} {name}: {ms:.1f} ms", file=sys.stderr, flush=True)
        return ms

    row = {"sds[2B]": timed_part("sds[2B]", sds), "vsd[3B]": timed_part("vsd[3B]", vsd3),
           "fit[B]": timed_part("fit[B]", fit)}
    if not graphs:
        row["fwd_grad[B]"] = timed_part("fwd_grad[B]", fwd_grad)
    for p in lora:
        p.data = p.data.to(dtype)
    if graphs:
        call.reset()
    row["fit16[B]"] = timed_part("fit16[B]", fit)
    row["vsd16[3B]"] = timed_part("vsd16[3B]", vsd3)
    row["fused16[4B]"] = timed_part("fused16[4B]", fused)
    row["overlap16"] = timed_part("overlap16", overlapped(True))
    row["ovfwd16"] = timed_part("ovfwd16", overlapped(False))
    for p in lora:
        p.data = p.data.float()
        p.requires_grad_(False)
    unet.disable_adapters()
    if graphs:
        call.reset()
    row["dx[B]"] = timed_part("dx[B]", dx)
    unet.enable_adapters()
    for p in lora:
        p.requires_grad_(True)
    return row


def profile(unet, B: int, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = torch.randn(B, 4, 64, 64, device=device, dtype=unet.dtype)
    emb = torch.randn(B, 77, unet.config.cross_attention_dim, device=device, dtype=unet.dtype)
    t = torch.full((B,), 500, device=device, dtype=torch.long)
    for _ in range(2):
        unet(x, t, encoder_hidden_states=emb).sample.float().square().mean().backward()
    cuda = device.type == "cuda"
    with torch_profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        unet(x, t, encoder_hidden_states=emb).sample.float().square().mean().backward()
        if cuda:
            torch.cuda.synchronize(device)
    print(f"top kernels of one eager LoRA fit (forward with grad + backward), B={B}:")
    print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=25,
                                    max_name_column_width=90))


@bench.bench_command()
@click.option("--batches", type=bench.CommaInts(1), default="1,10", show_default=True, help="Prompts per step.")
@click.option("--modes", type=bench.CommaChoice(("eager", "graphs")), default="eager,graphs", show_default=True,
              help="Eager rows, CUDA-graph rows or both.")
@click.option("--reps", type=click.IntRange(1, 1000), default=10, show_default=True, help="Timed calls per part.")
@click.option("--profile/--no-profile", "do_profile", default=False, show_default=True,
              help="Top CUDA kernels of one eager fit at the largest batch.")
@click.option("--device", "device_name", default="cuda", show_default=True, help="Torch device.")
@click.option("--tiny/--full", default=False, show_default=True, help="Smoke-size UNet (with --device cpu).")
def main(batches: list[int], modes: list[str], reps: int, do_profile: bool, device_name: str, tiny: bool) -> None:
    """Time the parts of a VSD step (ms per call): sds[2B], vsd[3B], fit[B], fwd_grad[B], fit16[B], vsd16[3B],
    fused16[4B], overlap16, ovfwd16, dx[B].

    \b
    Examples:
      python benchmarks/probe_vsd_parts.py --batches 1,10 --profile
      python benchmarks/probe_vsd_parts.py --batches 1 --modes graphs
      python benchmarks/probe_vsd_parts.py --device cpu --tiny --batches 1 --reps 1   # smoke run
    """
    device = bench.bench_device(device_name, tiny, "--tiny")
    bench.import_diffusers()
    unet, lora = build(device, torch.float16 if device.type == "cuda" else torch.float32, tiny)
    columns = ("sds[2B]", "vsd[3B]", "fit[B]", "fwd_grad[B]", "fit16[B]", "vsd16[3B]", "fused16[4B]", "overlap16",
               "ovfwd16", "dx[B]")
    print("| B | mode | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for B in batches:
        for graphs in [m == "graphs" for m in modes]:
            row = parts(unet, lora, B, graphs, device, reps)
            cells = [f"{row[k]:.1f}" if k in row else "-" for k in columns]
            print(f"| {B} | {'graphs' if graphs else 'eager'} | " + " | ".join(cells) + " |", flush=True)
    if do_profile:
        profile(unet, max(batches), device)


if __name__ == "__main__":
    main()
