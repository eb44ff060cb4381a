"""Sample faces with our DDPM or DDIM scheduler and time it (UMich EECS 498 HW5 part B, Sections 4-5).

Writes the handout's ``DDPM_generated_image0.png ...`` (``DDIM_...`` for DDIM) to ``--save_dir`` (default: the
handout's ``DDPM_results`` / ``DDIM_results``), plus ``grid.png`` (toy-size images enlarged x4), ``timing.json`` and
``config.json``; prints a timing line.
"""

from __future__ import annotations

import click

from common.cli import CONTEXT_SETTINGS, OneLineCommand, UserError, finite, user_errors
from common.compiled import fast_unet, unet_speed_options
from common.gpu import PRECISION_CHOICES, CudaTimer, get_device, precision_dtype, seed_everything
from common.images import save_grid, save_image
from common.panels import display_upscale, enlarge
from common.runs import write_config, write_json_atomic
from common.schedules import SPACINGS
from ddpm_ddim.sampling import load_model, model_shape, sample_images
from ddpm_ddim.schedulers import make_scheduler

DEFAULT_STEPS = {"DDPM": 1000, "DDIM": 50}
MAX_BATCH_PIXELS = 2**22  # images x pixels per UNet batch (no gradients): 1024 of 64 px, 64 of 256 px
MAX_SAMPLES = 10000  # all samples stay in memory until they are written


@click.command(cls=OneLineCommand, context_settings=CONTEXT_SETTINGS)
@click.option("--scheduler_name", "-n", type=click.Choice(["DDPM", "DDIM"], case_sensitive=False), required=True,
              help="Sampler.")
@click.option("--num_inference_steps", type=click.IntRange(min=1), default=None,
              help="Sampling steps [default: 1000 for DDPM, 50 for DDIM].")
@click.option("--eta", type=finite(0.0, 1.0), default=0.0, show_default=True,
              help="DDIM stochasticity (0 = deterministic, 1 = DDPM-like); ignored by DDPM.")
@click.option("--timestep_spacing", type=click.Choice(SPACINGS), default=None,
              help="Inference grid [default: the model's scheduler config].")
@click.option("--num_samples", type=click.IntRange(1, MAX_SAMPLES), default=10, show_default=True)
@click.option("--batch_size", type=click.IntRange(min=1), default=10, show_default=True,
              help=f"Images per UNet batch: at most {MAX_BATCH_PIXELS // 4096} of 64 px "
                   f"({MAX_BATCH_PIXELS // 65536} of 256 px).")
@click.option("--model", default="toy-faces", show_default=True, help="Registry name or local DDPM folder.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed + i.")
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="UNet weights (auto: fp16 on CUDA, fp32 on CPU); the scheduler math stays fp32.")
@click.option("--save_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: DDPM_results or DDIM_results, as in the handout].")
@unet_speed_options("H200, 10 faces x 1000 DDPM steps at 256 px: 37 s eager, 36 s (20 s with --compile)")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def main(scheduler_name, num_inference_steps, eta, timestep_spacing, num_samples, batch_size, model, seed, device,
         precision, save_dir, cuda_graphs, compile, progress):
    """Generate --num_samples faces with DDPM or DDIM and report the sampling time.

    \b
    Examples:
      python -m ddpm_ddim.main --scheduler_name DDPM
      python -m ddpm_ddim.main --scheduler_name DDIM --num_inference_steps 50 --eta 0
      python -m ddpm_ddim.main -n DDIM --model ddpm-celebahq-256 --precision fp16 --save_dir celeba_ddim
    """
    name = scheduler_name.upper()
    steps = num_inference_steps or DEFAULT_STEPS[name]
    save_dir = save_dir or f"{name}_results"
    seed_everything(seed)
    dev = get_device(device)
    dtype = precision_dtype(precision, dev)
    unet, sched_config = load_model(model, dev, dtype)
    unet = fast_unet(unet, dev, cuda_graphs, compile)
    scheduler = make_scheduler(name, sched_config, timestep_spacing=timestep_spacing)
    if steps > scheduler.num_train_timesteps:
        raise UserError(f"--num_inference_steps must be at most {scheduler.num_train_timesteps}, got {steps}")
    size = model_shape(unet)[1]
    if batch_size * size * size > MAX_BATCH_PIXELS:
        raise UserError(f"--batch_size {batch_size} is too large for {size}-px images "
                        f"(at most {max(1, MAX_BATCH_PIXELS // (size * size))} per UNet batch)")
    with CudaTimer(dev) as timer:
        images = sample_images(unet, scheduler, num_samples, steps, seed, batch_size, eta, progress)
    seconds = timer.ms / 1000
    for i, image in enumerate(images):
        save_image(image, f"{save_dir}/{name}_generated_image{i}.png")
    save_grid(enlarge(images, display_upscale(size)), f"{save_dir}/grid.png")  # toy-size images x4, nearest
    batch = min(batch_size, num_samples)  # the UNet batch that ran (a run of 2 samples never batches 10)
    unet_dtype = str(dtype).removeprefix("torch.")
    timing = {"scheduler": name, "num_inference_steps": steps, "num_samples": num_samples, "batch_size": batch,
              "requested_batch_size": batch_size, "seconds": round(seconds, 3),
              "seconds_per_image": round(seconds / num_samples, 4), "device": str(dev), "precision": precision,
              "unet_dtype": unet_dtype}
    write_json_atomic(f"{save_dir}/timing.json", timing)
    write_config(save_dir, {"scheduler_name": name, "num_inference_steps": steps, "eta": eta,
                            "timestep_spacing": scheduler.timestep_spacing, "num_samples": num_samples,
                            "batch_size": batch_size, "model": model, "seed": seed, "device": str(dev),
                            "precision": precision, "cuda_graphs": cuda_graphs, "compile": compile,
                            "save_dir": save_dir})
    click.echo(f"{name} {steps} steps: {num_samples} images in {seconds:.2f} s "
               f"({seconds / num_samples:.3f} s/image, batch {batch}, {dev}, {unet_dtype}) -> {save_dir}")


if __name__ == "__main__":
    main()
