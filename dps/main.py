"""Solve inverse problems with Diffusion Posterior Sampling on a DDPM face model (UMich EECS 498 HW5 part B, Sec. 6).

Writes to ``--save_dir`` (default ``DPS_results``, the handout's folder) for each image i the handout's
``DPS_masked_input_image{i}.png`` (as the handout's execute_DPS.py: the mask times the [0, 1] image, noise-free,
unobserved pixels black; DPS itself sees y = A(x) + n) or, for the other tasks, ``DPS_measurement_image{i}.png``
(the noisy measurement y), and ``DPS_generated_image{i}.png`` (the DPS reconstruction), plus
``DPS_ground_truth_image{i}.png`` and a labelled ``DPS_panel_image{i}.png`` (truth | that input | DPS; toy-size
images enlarged x4), ``metrics.json`` (PSNR/SSIM
to the ground truth, also of the naive reconstruction) and ``config.json``; prints a timing line. Without
``--images`` the held-out toy faces are the ground truth.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from common.cli import CONTEXT_SETTINGS, OneLineCommand, UserError, finite, user_errors
from common.compiled import fast_unet, unet_speed_options
from common.gpu import PRECISION_CHOICES, CudaTimer, get_device, make_generators, precision_dtype, seed_everything
from common.images import UNIT, load_image, save_image
from common.panels import save_labelled_grid
from common.runs import json_number, write_config, write_json_atomic
from common.sampling import load_model, model_shape, sampling_config
from common.toy.faces import heldout_faces
from dps.dps import dps_sample
from dps.metrics import psnr, ssim
from dps.operators import DEFAULT_SCALES, TASKS, add_measurement_noise, build_operator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CHANNELS = {"L": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "I": 1, "F": 1, "LA": 2, "RGBA": 4, "CMYK": 4, "P": "palette"}
MAX_SCALE = 1e6  # zeta; the default is 0.3-0.5, and far larger values diverge (caught at the step that blows up)
MAX_KERNEL_FACTOR = 4  # --kernel_size <= 4 x image size + 1: larger kernels only average reflected copies
MAX_BATCH_PIXELS = 2**20  # images x pixels per UNet batch (DPS keeps the graph for the backward): 256 of 64 px
MAX_IMAGES = 1000


def load_images(folder: str | Path, size: int | None, limit: int | None = None) -> torch.Tensor:
    """RGB images of exactly ``size`` x ``size`` from a folder (sorted by name): [N, 3, size, size] in [-1, 1].

    ``size=None`` only requires the images to share one square size (read before the model is loaded, so a bad
    file is refused at once; :func:`check_image_size` checks the model's size afterwards).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(2, "No such directory", str(folder))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for path in files:
        image = load_image(path)  # one-line errors for corrupt files and decompression bombs
        with Image.open(path) as img:
            mode, (w, h) = img.mode, img.size
        if mode != "RGB":
            raise ValueError(f"image {path.name} has {CHANNELS.get(mode, mode)} channel(s) (mode {mode}); "
                             "expected an RGB image")
        if size is None:
            size = w  # the first image fixes the size; the model's is checked by check_image_size
        if (w, h) != (size, size):
            raise ValueError(f"image {path.name} is {w}x{h}; expected {size}x{size} images (the model's size, or "
                             "that of the first image)")
        images.append(image)
    return torch.stack(images)


def check_image_size(images: torch.Tensor, size: int) -> None:
    """The model's image size must be that of the ``--images`` (one line otherwise)."""
    if tuple(images.shape[-2:]) != (size, size):
        h, w = images.shape[-2:]
        raise ValueError(f"the --images are {w}x{h} but the model works on {size}x{size} images")


def check_kernel_size(task: str, kernel_size: int, size: int) -> None:
    """Refuse an even blur kernel, or one far wider than ``size``-px images (it would only average reflections)."""
    if kernel_size % 2 == 0:
        raise UserError(f"--kernel_size must be odd, got {kernel_size}")
    if task.endswith("blur") and kernel_size > MAX_KERNEL_FACTOR * size + 1:
        raise UserError(f"--kernel_size {kernel_size} is too large for {size}-px images "
                        f"(at most {MAX_KERNEL_FACTOR * size + 1})")


def check_batch_size(batch_size: int, size: int) -> None:
    """Refuse a UNet batch of ``size``-px images that cannot fit in memory with DPS's backward pass."""
    if batch_size * size * size > MAX_BATCH_PIXELS:
        raise UserError(f"--batch_size {batch_size} is too large for {size}-px images "
                        f"(at most {max(1, MAX_BATCH_PIXELS // (size * size))} per UNet batch)")


@click.command(cls=OneLineCommand, context_settings=CONTEXT_SETTINGS)
@click.option("--task", type=click.Choice(TASKS), default="inpainting", show_default=True, help="Inverse problem.")
@click.option("--images", "images_dir", type=click.Path(), default=None,
              help="Folder of RGB ground-truth images of the model's size [default: held-out toy faces].")
@click.option("--num_images", type=click.IntRange(1, MAX_IMAGES), default=4, show_default=True,
              help="How many images to reconstruct (held-out faces, or the first ones of --images).")
@click.option("--num_inference_steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--scale", type=finite(min=0.0, max=MAX_SCALE), default=None,
              help=f"DPS step size zeta, at most {MAX_SCALE:g} [default: inpainting 0.5, others 0.3].")
@click.option("--eta", type=finite(0.0, 1.0), default=0.0, show_default=True, help="DDIM eta.")
@click.option("--mask_type", type=click.Choice(["random", "box"]), default="random", show_default=True)
@click.option("--sr_mode", type=click.Choice(["bicubic", "avgpool"]), default="bicubic", show_default=True,
              help="x4 downsampler: DPS's antialiased cubic Resizer, or 4 x 4 means.")
@click.option("--kernel_size", type=click.IntRange(min=3), default=61, show_default=True,
              help=f"Blur kernel size: odd, at most {MAX_KERNEL_FACTOR} x image size + 1 (257 for 64-px faces).")
@click.option("--blur_sigma", type=finite(min=0.0, min_open=True), default=3.0, show_default=True)
@click.option("--motion_intensity", type=finite(0.0, 1.0), default=0.5, show_default=True)
@click.option("--noise_sigma", type=finite(min=0.0, max=10.0), default=0.05, show_default=True,
              help="Measurement noise std on the [-1, 1] scale.")
@click.option("--batch_size", type=click.IntRange(min=1), default=4, show_default=True,
              help=f"Images per UNet batch: at most {MAX_BATCH_PIXELS // 4096} of 64 px "
                   f"({MAX_BATCH_PIXELS // 65536} of 256 px).")
@click.option("--model", default="toy-faces", show_default=True, help="Registry name or local DDPM folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="UNet weights (auto: fp16 on CUDA, fp32 on CPU); the sampler math stays fp32.")
@click.option("--save_dir", type=click.Path(file_okay=False), default="DPS_results", show_default=True)
@unet_speed_options("H200, 3 images x 1000 DPS steps at 256 px: 57 s eager, 29 s (21 s with --compile)")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def main(task, images_dir, num_images, num_inference_steps, scale, eta, mask_type, sr_mode, kernel_size, blur_sigma,
         motion_intensity, noise_sigma, batch_size, model, seed, device, precision, save_dir, cuda_graphs,
         compile, progress):
    """Reconstruct images from noisy measurements (inpainting, super-resolution x4, deblurring) with DPS.

    \b
    Examples:
      python -m dps.main
      python -m dps.main --task super_resolution --num_inference_steps 250 --save_dir dps_sr
      python -m dps.main --task motion_blur --images my_faces/ --scale 0.3 --save_dir dps_motion
    """
    seed_everything(seed)
    dev = get_device(device)
    dtype = precision_dtype(precision, dev)
    given = load_images(images_dir, None, num_images) if images_dir else None  # bad files refused before the model
    unet, sched_config = load_model(model, dev, dtype)
    unet = fast_unet(unet, dev, cuda_graphs, compile)
    config = sampling_config(sched_config)  # DDIM grid, alpha_bar and clipping of the model's scheduler config
    if num_inference_steps > config.num_train_timesteps:
        raise UserError(f"--num_inference_steps must be at most {config.num_train_timesteps}")
    _, size, _ = model_shape(unet)
    check_kernel_size(task, kernel_size, size)
    check_batch_size(batch_size, size)
    if given is not None:
        check_image_size(given, size)
    truth = (given if given is not None else heldout_faces(num_images, size)).to(dev)
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
    metrics = _metrics(truth, operator.naive(measurement), recon)
    metrics.update({"task": task, "num_images": n, "num_inference_steps": num_inference_steps, "scale": scale,
                    "seconds": round(seconds, 3), "seconds_per_image": round(seconds / n, 4), "device": str(dev)})
    _write_outputs(save_dir, task, truth, shown_input(task, operator, truth, measurement), recon)
    write_json_atomic(Path(save_dir) / "metrics.json", metrics)
    write_config(save_dir, {"task": task, "images": images_dir, "num_images": n,
                            "num_inference_steps": num_inference_steps, "scale": scale, "eta": eta,
                            "mask_type": mask_type, "sr_mode": sr_mode,
                            "kernel_size": kernel_size, "blur_sigma": blur_sigma, "motion_intensity": motion_intensity,
                            "noise_sigma": noise_sigma, "batch_size": batch_size, "model": model, "seed": seed,
                            "device": str(dev), "precision": precision, "cuda_graphs": cuda_graphs, "compile": compile,
                            "unet_dtype": str(dtype).removeprefix("torch."), "save_dir": save_dir})
    mean = {k: "inf" if v is None else f"{v:.3f}" for k, v in metrics["mean"].items()}  # None: identical images
    click.echo(f"DPS {task} {num_inference_steps} steps: {n} images in {seconds:.2f} s ({seconds / n:.3f} s/image); "
               f"PSNR {mean['psnr']} dB (naive {mean['psnr_naive']}), SSIM {mean['ssim']} -> {save_dir}")


def shown_input(task: str, operator, truth: torch.Tensor, measurement: torch.Tensor) -> torch.Tensor:
    """The input image to save, [B, 3, h, w] in [0, 1]. Inpainting: the handout's ``DPS_masked_input_image``,
    ``operator.forward`` of the [0, 1] image without the noise (unobserved pixels black, not the grey that the
    [-1, 1] product gives); the other tasks: the noisy measurement y = A(x) + n that DPS reconstructs from."""
    if task == "inpainting":
        return operator.forward((truth.float() + 1) / 2)  # m * x01, as execute_DPS.py's y_unnormalized
    return (measurement.float().clamp(-1, 1) + 1) / 2


def _write_outputs(save_dir, task, truth, shown, recon) -> None:
    """The handout's DPS_results files (``shown``: :func:`shown_input`), the ground truth and a panel per image."""
    size = truth.shape[-1]
    kind, label = ("masked_input", "masked input") if task == "inpainting" else ("measurement", "measurement")
    for i in range(len(truth)):
        save_image(truth[i], f"{save_dir}/DPS_ground_truth_image{i}.png")
        save_image(shown[i], f"{save_dir}/DPS_{kind}_image{i}.png", value_range=UNIT)
        save_image(recon[i], f"{save_dir}/DPS_generated_image{i}.png")
        tile = F.interpolate(shown[i][None] * 2 - 1, size=(size, size), mode="nearest")[0]  # SR: 16 -> 64 px blocks
        save_labelled_grid(f"{save_dir}/DPS_panel_image{i}.png", [truth[i], tile, recon[i]],
                           ["truth", label, "DPS reconstruction"])  # toy-size tiles enlarged x4


def _metrics(truth, naive, recon) -> dict:
    values = {"psnr": psnr(recon, truth), "ssim": ssim(recon, truth), "psnr_naive": psnr(naive, truth),
              "ssim_naive": ssim(naive, truth)}
    per_image = [{k: json_number(round(float(v[i]), 4)) for k, v in values.items()} for i in range(len(truth))]
    return {"mean": {k: json_number(round(float(v.mean()), 4)) for k, v in values.items()}, "per_image": per_image}


if __name__ == "__main__":
    main()
