"""GPU benchmark of one UNet call under the knobs that change its speed, and the floor each sampler row sits on.

For the UNets behind the issue-#19 rows (SD 2.1 base at 64x64 latents: SDS at batch 2 / 20, the wide panorama at
82; the CelebA-HQ 256 px DDPM UNet at batch 10 and 3) it times one forward (no grad) under each knob and prints
ms per call, the FLOPs of the call (``torch.utils.flop_counter``) and the TFLOP/s they reach:

- ``eager``: the default; ``cudnn``: ``torch.backends.cudnn.benchmark = True`` (cuDNN times its algorithms once
  per shape); ``cl``: channels_last weights and input; ``graphs``: ``common.graphs.CudaGraphUNet`` (one replay);
  ``bf16``: bf16 weights instead of fp16; ``compile``: ``torch.compile`` (inductor, static shapes; its first call,
the compilation, is reported apart); ``compile-ro``: ``torch.compile(mode="reduce-overhead")`` (inductor with its
own CUDA graphs); ``rcompile``: regional compilation, ``torch.compile`` of each ResNet block, transformer
block and lone attention block (instances of one shape share a compiled graph, so fewer graphs compile). Knobs
combine with ``+``.

``--profile`` adds the top CUDA kernels of one eager call per model (torch.profiler), so a slow row names its
kernels. Weights are random (they do not change the cost).

    python benchmarks/bench_unet_knobs.py                         # every row, about 2 minutes on one H200
    python benchmarks/bench_unet_knobs.py --rows sd21:2,celebahq:10 --knobs eager,cudnn+graphs --profile
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _cli as bench  # noqa: E402
from benchmarks.bench_ddpm_dps import CELEBAHQ_256_UNET  # noqa: E402
from benchmarks.bench_distillation import SD21_BASE_UNET  # noqa: E402
from common.cli import user_errors  # noqa: E402
from common.gpu import CudaTimer  # noqa: E402
from common.graphs import CudaGraphUNet  # noqa: E402

MODELS = ("sd21", "celebahq")
KNOBS = ("eager", "cudnn", "cl", "graphs", "bf16", "compile", "compile-ro", "rcompile")
REGIONS = ("ResnetBlock2D", "Transformer2DModel", "Attention")  # rcompile's blocks (Attention: outside the others)
DEFAULT_ROWS = "sd21:2,sd21:20,sd21:82,celebahq:10,celebahq:3"
DEFAULT_KNOBS = "eager,cudnn,cl+cudnn,graphs,cudnn+graphs,cl+cudnn+graphs,bf16+cudnn+graphs"


def build(model: str, dtype: torch.dtype, channels_last: bool, device: torch.device) -> torch.nn.Module:
    """The model's architecture with random weights, eval mode, no grads."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD21_BASE_UNET) if model == "sd21" else UNet2DModel(**CELEBAHQ_256_UNET)
    unet = unet.to(dtype=dtype).eval().requires_grad_(False)
    return unet.to(memory_format=torch.channels_last) if channels_last else unet


def inputs(model: str, batch: int, dtype: torch.dtype, channels_last: bool, device: torch.device):
    """(args, kwargs) of one call: latents [B, 4, 64, 64] + text [B, 77, 1024], or images [B, 3, 256, 256]."""
    g = torch.Generator(device).manual_seed(0)
    shape = (batch, 4, 64, 64) if model == "sd21" else (batch, 3, 256, 256)
    x = torch.randn(shape, device=device, generator=g, dtype=dtype)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    if model == "sd21":
        return (x, t), {"encoder_hidden_states": torch.randn(batch, 77, 1024, device=device, generator=g,
                                                             dtype=dtype)}
    return (x, t), {}


def flops_of(unet, args, kwargs) -> float:
    """FLOPs of one call (matmuls, convolutions, attention), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(*args, **kwargs)
    return float(counter.get_total_flops())


def time_call(fn, calls: int, device: torch.device) -> float:
    """ms per call over ``calls`` calls after 3 warm-up calls (the graph capture, cuDNN's autotuning)."""
    for _ in range(3):
        fn()
    with CudaTimer(device) as timer:
        for _ in range(calls):
            fn()
    return timer.ms / calls


def run_row(model: str, batch: int, knob: str, calls: int, device: torch.device) -> dict:
    parts = set(knob.split("+"))
    torch.backends.cudnn.benchmark = "cudnn" in parts
    dtype, cl = (torch.bfloat16 if "bf16" in parts else torch.float16), "cl" in parts
    unet = build(model, dtype, cl, device)
    args, kwargs = inputs(model, batch, dtype, cl, device)
    flops = flops_of(unet, args, kwargs)
    compile_s = float("nan")
    if parts & {"compile", "compile-ro", "rcompile"}:
        if "rcompile" in parts:
            compile_regions(unet)
        else:
            unet = torch.compile(unet, dynamic=False, mode="reduce-overhead" if "compile-ro" in parts else None)
        with CudaTimer(device) as first, torch.no_grad():
            unet(*args, **kwargs)
        compile_s = first.ms / 1000
    net = CudaGraphUNet(unet) if "graphs" in parts else unet

    def call() -> None:
        with torch.no_grad():
            net(*args, **kwargs)

    ms = time_call(call, calls, device)
    bench.reset_memory(device)  # the next row builds its own UNet
    return {"model": model, "batch": batch, "knob": knob, "ms": ms, "gflop": flops / 1e9,
            "tflops": flops / (ms * 1e-3) / 1e12, "compile_s": compile_s}


def compile_regions(unet: torch.nn.Module) -> int:
    """``torch.compile`` (static shapes) each block of a class in REGIONS, in place; returns how many. Blocks of
    one class and shape share dynamo's compiled graph, so its recompile limit is raised to fit every shape."""
    torch._dynamo.config.recompile_limit = 64
    inside: list[str] = []
    count = 0
    for name, module in unet.named_modules():
        kind = type(module).__name__
        if kind in REGIONS and not any(name.startswith(prefix + ".") for prefix in inside):
            module.compile(dynamic=False)
            inside.append(name)
            count += 1
    return count


def profile(model: str, batch: int, device: torch.device, top: int = 12) -> None:
    """Print the top CUDA kernels of one eager fp16 call (cudnn.benchmark on)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.backends.cudnn.benchmark = True
    unet = build(model, torch.float16, False, device)
    args, kwargs = inputs(model, batch, torch.float16, False, device)
    with torch.no_grad():
        for _ in range(3):
            unet(*args, **kwargs)
        torch.cuda.synchronize(device)
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            unet(*args, **kwargs)
            torch.cuda.synchronize(device)
    print(f"\n{model} batch {batch}: top CUDA kernels of one call")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=60))


@bench.bench_command()
@click.option("--rows", default=DEFAULT_ROWS, show_default=True,
              help="Comma-separated model:batch pairs (models: sd21, celebahq).")
@click.option("--knobs", default=DEFAULT_KNOBS, show_default=True,
              help=f"Comma-separated knob sets; a set joins {'|'.join(KNOBS)} with '+'.")
@click.option("--calls", type=click.IntRange(1, 1000), default=10, show_default=True, help="Timed calls per row.")
@click.option("--profile", "show_profile", is_flag=True, help="Also print the top kernels of each model.")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@user_errors
def main(rows: str, knobs: str, calls: int, show_profile: bool, json_path: str | None) -> None:
    """One UNet call under cuDNN autotuning, channels_last, CUDA graphs and bf16: ms, FLOPs and TFLOP/s.

    \b
    Examples:
      python benchmarks/bench_unet_knobs.py
      python benchmarks/bench_unet_knobs.py --rows celebahq:10 --knobs eager,cudnn+graphs --profile
    """
    pairs = [_pair(r) for r in rows.split(",") if r]
    sets = [k for k in knobs.split(",") if k]
    for k in sets:
        if not set(k.split("+")) <= set(KNOBS):
            raise bench.UserError(f"unknown knob in {k!r}; knobs are {', '.join(KNOBS)} joined with '+'")
    if not torch.cuda.is_available():  # no CPU smoke run: the rows time real cuDNN / graph / inductor calls
        raise bench.UserError("this benchmark needs a CUDA GPU and none is available (it has no CPU mode)")
    device = bench.bench_device("cuda", True)
    bench.import_diffusers()
    out = []
    for model, batch in pairs:
        for knob in sets:
            out.append(run_row(model, batch, knob, calls, device))
            r = out[-1]
            print(f"{model} B={batch} {knob}: {r['ms']:.2f} ms, {r['tflops']:.0f} TFLOP/s", flush=True)
    print(f"\n| model | batch | knobs | ms / call | GFLOP / call | TFLOP/s | compile s |  "
          f"({bench.device_name(device)}, torch {torch.__version__})\n|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['model']} | {r['batch']} | {r['knob']} | {r['ms']:.2f} | {r['gflop']:.0f} | {r['tflops']:.0f} | "
              f"{'-' if r['compile_s'] != r['compile_s'] else format(r['compile_s'], '.0f')} |")
    if show_profile:
        for model in dict.fromkeys(m for m, _ in pairs):
            profile(model, max(b for m, b in pairs if m == model), device)
    bench.write_rows(json_path, {"device": bench.device_name(device), "torch": torch.__version__, "rows": out})


def _pair(text: str) -> tuple[str, int]:
    model, _, batch = text.partition(":")
    if model not in MODELS or not batch.isdigit() or int(batch) < 1:
        raise bench.UserError(f"--rows: {text!r} is not model:batch with a model in {', '.join(MODELS)}")
    return model, int(batch)


if __name__ == "__main__":
    main()
