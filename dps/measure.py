"""Toy bars for DPS on held-out toy faces (issue 5).

- inpainting (random mask): DPS PSNR >= masked input + 6 dB and >= plain DDIM with the known pixels pasted + 2 dB;
- super-resolution x4: DPS PSNR > bicubic upsampling;
- Gaussian / motion deblurring (``--tasks``): DPS PSNR > the blurry measurement.

Example:
  python -m dps.measure --num_images 20 --num_inference_steps 1000 --device cuda
"""

from __future__ import annotations

import click
import torch
from tqdm.auto import tqdm

from common.cli import CONTEXT_SETTINGS, OneLineCommand, finite, user_errors
from common.gpu import CudaTimer, get_device, make_generators, seed_everything
from common.runs import write_json_atomic
from common.sampling import load_model, model_shape, sampling_config
from common.toy.faces import heldout_faces
from dps.dps import dps_sample
from dps.main import MAX_IMAGES, MAX_SCALE, check_batch_size
from dps.metrics import psnr
from dps.operators import DEFAULT_SCALES, TASKS, add_measurement_noise, build_operator

BASELINES = {"inpainting": "masked input", "super_resolution": "bicubic"}  # the blur tasks: the blurry input


def _reconstruct(unet, config, measurement, operator, steps, scale, seed, batch_size, progress):
    out = []
    for start in range(0, len(measurement), batch_size):
        sl = slice(start, min(len(measurement), start + batch_size))
        gens = make_generators(range(seed + sl.start, seed + sl.stop), measurement.device)
        out.append(dps_sample(unet, config, measurement[sl], operator.subset(sl), steps, scale, gens,
                              progress=progress))
    return torch.cat(out)


def measure_dps(model: str, num_images: int, steps: int, batch_size: int, device, seed: int = 0,
                scales: dict[str, float] | None = None, tasks=("inpainting", "super_resolution")) -> dict:
    """PSNR (dB, mean over images) of DPS and of the baselines for each task, with timings."""
    scales = {**DEFAULT_SCALES, **(scales or {})}
    unet, sched_config = load_model(model, device)
    config = sampling_config(sched_config)
    size = model_shape(unet)[1]
    check_batch_size(batch_size, size)
    truth = heldout_faces(num_images, size, device)
    results = {}
    runs = len(tasks) + ("inpainting" in tasks)  # DPS per task, plus the plain DDIM run of the paste baseline
    bar = tqdm(total=runs * steps * -(-num_images // batch_size), desc="dps measure", unit="step")
    for task in tasks:
        op = build_operator(task, num_images, size, seed).to(device)
        y = add_measurement_noise(op.forward(truth), 0.05, torch.Generator().manual_seed(seed))
        with CudaTimer(device) as timer:
            recon = _reconstruct(unet, config, y, op, steps, scales[task], seed, batch_size, bar)
        row = {"dps": psnr(recon, truth).mean().item(), "naive": psnr(op.naive(y), truth).mean().item(),
               "scale": scales[task], "seconds": timer.ms / 1000}
        if task == "inpainting":
            plain = _reconstruct(unet, config, y, op, steps, 0.0, seed, batch_size, bar)
            pasted = op.mask * y + (1 - op.mask) * plain  # DDIM sample with the observed pixels pasted in
            row["ddim_paste"] = psnr(pasted.clamp(-1, 1), truth).mean().item()
        results[task] = row
    bar.close()
    return {"tasks": results, "num_images": num_images, "num_inference_steps": steps}


def format_dps_table(result: dict) -> str:
    lines = [f"DPS toy bars (n={result['num_images']} held-out faces, {result['num_inference_steps']} DDIM steps)",
             f"{'task':<18}{'baseline':<22}{'PSNR base':>10}{'PSNR DPS':>10}{'gain':>8}{'bar':>8}{'pass':>6}"]
    for task, row in result["tasks"].items():
        checks = [(BASELINES.get(task, "blurry input"), row["naive"], 6.0 if task == "inpainting" else 0.0)]
        if "ddim_paste" in row:
            checks.append(("DDIM + paste", row["ddim_paste"], 2.0))
        for name, base, need in checks:
            gain = row["dps"] - base
            ok = "yes" if gain >= need and gain > 0 else "NO"
            lines.append(f"{task:<18}{name:<22}{base:>10.2f}{row['dps']:>10.2f}{gain:>+8.2f}{need:>+8.1f}{ok:>6}")
    lines.append("times: " + ", ".join(f"{t} {r['seconds']:.1f} s (scale {r['scale']})"
                                       for t, r in result["tasks"].items()))
    return "\n".join(lines)


@click.command(cls=OneLineCommand, context_settings=CONTEXT_SETTINGS)
@click.option("--model", default="toy-faces", show_default=True, help="Registry name or local DDPM folder.")
@click.option("--num_images", type=click.IntRange(1, MAX_IMAGES), default=20, show_default=True,
              help="Held-out toy faces to reconstruct per task.")
@click.option("--num_inference_steps", type=click.IntRange(min=1, max=1000), default=1000, show_default=True)
@click.option("--batch_size", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--tasks", type=click.Choice(TASKS), multiple=True, default=("inpainting", "super_resolution"),
              show_default=True, help="Tasks to measure (repeat the option for several).")
@click.option("--inpainting_scale", type=finite(min=0, max=MAX_SCALE), default=DEFAULT_SCALES["inpainting"],
              show_default=True, help="DPS step size zeta for inpainting.")
@click.option("--sr_scale", type=finite(min=0, max=MAX_SCALE), default=DEFAULT_SCALES["super_resolution"],
              show_default=True, help="DPS step size zeta for super-resolution x4 (the blur tasks use their default).")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, mps or cpu.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the numbers.")
@user_errors
def main(model, num_images, num_inference_steps, batch_size, tasks, inpainting_scale, sr_scale, device, seed,
         json_path):
    """Print the DPS toy-bar table (inpainting vs masked input and DDIM+paste; super-resolution vs bicubic).

    \b
    Examples:
      python -m dps.measure --num_images 20 --num_inference_steps 1000 --device cuda
      python -m dps.measure --device cpu --num_images 4 --num_inference_steps 100 --json dps_bars.json
      python -m dps.measure --device cuda --tasks super_resolution --tasks motion_blur
    """
    seed_everything(seed)
    scales = {"inpainting": inpainting_scale, "super_resolution": sr_scale}
    result = measure_dps(model, num_images, num_inference_steps, batch_size, get_device(device), seed, scales, tasks)
    click.echo(format_dps_table(result))
    if json_path:
        write_json_atomic(json_path, result)


if __name__ == "__main__":
    main()
