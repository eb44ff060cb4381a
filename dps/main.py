"""Solve inverse problems with Diffusion Posterior Sampling on a DDPM face model (UMich EECS 498 HW5 part B, Sec. 6).

For each image writes ``NNN_input.png``, ``NNN_measurement.png``, ``NNN_reconstruction.png`` and ``NNN_panel.png``
(input | measurement | naive reconstruction | DPS), plus ``metrics.json`` (PSNR/SSIM to the ground truth) and
``config.json``; prints a timing line. Without ``--images`` the held-out toy faces are the ground truth.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from common.cli import CONTEXT_SETTINGS, UserError, user_errors
from common.gpu import CudaTimer, get_device, make_generators, precision_dtype, seed_everything
from common.images import load_image, save_grid, save_image
from common.runs import write_config, write_json_atomic
from common.sampling import load_model, model_shape, sampling_config
from common.toy.faces import heldout_faces
from dps.dps import dps_sample
from dps.metrics import psnr, ssim
from dps.operators import DEFAULT_SCALES, TASKS, add_measurement_noise, build_operator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_images(folder: str | Path, size: int, limit: int | None = None) -> torch.Tensor:
    """RGB images of exactly ``size`` x ``size`` from a folder (sorted by name): [N, 3, size, size] in [-1, 1]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(2, "No such directory", str(folder))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for path in files:
        try:
            with Image.open(path) as img:
                mode, (w, h) = img.mode, img.size
        except OSError as err:
            raise ValueError(f"cannot read image {path}: not a valid image file") from err
        if mode != "RGB":
            channels = {"L": 1, "LA": 2, "RGBA": 4, "CMYK": 4, "P": "palette"}.get(mode, mode)
            raise ValueError(f"image {path.name} has {channels} channels (mode {mode}); expected an RGB image")
        if (w, h) != (size, size):
            raise ValueError(f"image {path.name} is {w}x{h} but the model works on {size}x{size} images")
        images.append(load_image(path))
    return torch.stack(images)


def _panel(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """Resize (nearest) to size x size and stack for a one-row grid."""
    return torch.stack([F.interpolate(x[None].float().cpu(), size=(size, size), mode="nearest")[0] for x in images])


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--task", type=click.Choice(TASKS), required=True, help="Inverse problem.")
@click.option("--images", "images_dir", type=click.Path(), default=None,
              help="Folder of RGB ground-truth images of the model's size [default: held-out toy faces].")
@click.option("--num_images", type=click.IntRange(min=1), default=4, show_default=True,
              help="How many images to reconstruct (held-out faces, or the first ones of --images).")
@click.option("--num_inference_steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--scale", type=click.FloatRange(min=0.0), default=None,
              help="DPS step size zeta [default: inpainting 0.5, others 0.3].")
@click.option("--eta", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True, help="DDIM eta.")
@click.option("--mask_type", type=click.Choice(["random", "box"]), default="random", show_default=True)
@click.option("--sr_mode", type=click.Choice(["bicubic", "avgpool"]), default="bicubic", show_default=True)
@click.option("--kernel_size", type=click.IntRange(min=3), default=61, show_default=True, help="Blur kernel size.")
@click.option("--blur_sigma", type=click.FloatRange(min=0.0, min_open=True), default=3.0, show_default=True)
@click.option("--motion_intensity", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True)
@click.option("--noise_sigma", type=click.FloatRange(min=0.0), default=0.05, show_default=True,
              help="Measurement noise std on the [-1, 1] scale.")
@click.option("--batch_size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--model", default="toy-faces", show_default=True, help="Registry name or local DDPM folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--save_dir", type=click.Path(file_okay=False), required=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def main(task, images_dir, num_images, num_inference_steps, scale, eta, mask_type, sr_mode, kernel_size, blur_sigma,
         motion_intensity, noise_sigma, batch_size, model, seed, device, precision, save_dir, progress):
    """Reconstruct images from noisy measurements (inpainting, super-resolution x4, deblurring) with DPS.

    \b
    Examples:
      python -m dps.main --task inpainting --save_dir DPS_results
      python -m dps.main --task super_resolution --num_inference_steps 250 --save_dir dps_sr
      python -m dps.main --task motion_blur --images my_faces/ --scale 0.3 --save_dir dps_motion
    """
    if kernel_size % 2 == 0:
        raise UserError(f"--kernel_size must be odd, got {kernel_size}")
    seed_everything(seed)
    dev = get_device(device)
    unet, sched_config = load_model(model, dev, precision_dtype(precision, dev))
    config = sampling_config(sched_config)  # DDIM grid, alpha_bar and clipping of the model's scheduler config
    if num_inference_steps > config.num_train_timesteps:
        raise UserError(f"--num_inference_steps must be at most {config.num_train_timesteps}")
    _, size, _ = model_shape(unet)
    truth = (load_images(images_dir, size, num_images) if images_dir else heldout_faces(num_images, size)).to(dev)
    n = len(truth)
    scale = DEFAULT_SCALES[task] if scale is None else scale
    operator = build_operator(task, n, size, seed, mask_type, 4, sr_mode, kernel_size, blur_sigma,
                              motion_intensity).to(dev)
    measurement = add_measurement_noise(operator.forward(truth), noise_sigma, torch.Generator().manual_seed(seed))
    recon = []
    with CudaTimer(dev) as timer, tqdm(total=-(-n // batch_size) * num_inference_steps, desc=f"DPS {task}",
                                       unit="step", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            recon.append(dps_sample(unet, config, measurement[sl], operator.subset(sl), num_inference_steps, scale,
                                    make_generators(range(seed + sl.start, seed + sl.stop), dev), eta, bar))
    recon = torch.cat(recon)
    seconds = timer.ms / 1000
    _write_outputs(save_dir, truth, measurement, operator.naive(measurement).clamp(-1, 1), recon, size)
    metrics = _metrics(truth, operator.naive(measurement), recon)
    metrics.update({"task": task, "num_images": n, "num_inference_steps": num_inference_steps, "scale": scale,
                    "seconds": round(seconds, 3), "seconds_per_image": round(seconds / n, 4), "device": str(dev)})
    write_json_atomic(Path(save_dir) / "metrics.json", metrics)
    write_config(save_dir, {"task": task, "images": images_dir, "num_images": n,
                            "num_inference_steps": num_inference_steps, "scale": scale, "eta": eta,
                            "mask_type": mask_type, "sr_mode": sr_mode,
                            "kernel_size": kernel_size, "blur_sigma": blur_sigma, "motion_intensity": motion_intensity,
                            "noise_sigma": noise_sigma, "batch_size": batch_size, "model": model, "seed": seed,
                            "device": str(dev), "precision": precision, "save_dir": save_dir})
    mean = metrics["mean"]
    click.echo(f"DPS {task} {num_inference_steps} steps: {n} images in {seconds:.2f} s ({seconds / n:.3f} s/image); "
               f"PSNR {mean['psnr']:.2f} dB (naive {mean['psnr_naive']:.2f}), SSIM {mean['ssim']:.3f} -> {save_dir}")


def _write_outputs(save_dir, truth, measurement, naive, recon, size) -> None:
    for i in range(len(truth)):
        save_image(truth[i], f"{save_dir}/{i:03d}_input.png")
        save_image(measurement[i].clamp(-1, 1), f"{save_dir}/{i:03d}_measurement.png")
        save_image(recon[i], f"{save_dir}/{i:03d}_reconstruction.png")
        row = _panel([truth[i], measurement[i].clamp(-1, 1), naive[i], recon[i]], size)
        save_grid(row, f"{save_dir}/{i:03d}_panel.png", nrow=4)


def _metrics(truth, naive, recon) -> dict:
    values = {"psnr": psnr(recon, truth), "ssim": ssim(recon, truth), "psnr_naive": psnr(naive, truth),
              "ssim_naive": ssim(naive, truth)}
    per_image = [{k: round(float(v[i]), 4) for k, v in values.items()} for i in range(len(truth))]
    return {"mean": {k: round(float(v.mean()), 4) for k, v in values.items()}, "per_image": per_image}


if __name__ == "__main__":
    main()
