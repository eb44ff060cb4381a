"""``python -m common.toy``: retrain the toy models, sample from toy-sd, write example shapes data."""

from __future__ import annotations

import importlib
from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, IntListType, UserError, user_errors
from common.files import check_overwrite
from common.images import save_image
from common.toy import shapes

MODELS = ("clip", "sd", "faces", "pixel")
DEVICES = ("auto", "cuda", "cpu", "mps")


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """The embedded toy world: procedural shapes data and tiny pretrained models.

    \b
    Examples:
      python -m common.toy train clip --device cuda --out outputs/toy-clip
      python -m common.toy sample --prompt "a red circle on a blue background" --out red.png
      python -m common.toy data --n 16 --out outputs/shapes
    """


@main.command()
@click.argument("model", type=click.Choice(MODELS))
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Training device.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: outputs/toy-<model>]. The shipped weights live in common/toy/models/; "
                   "replacing them needs --force.")
@click.option("--force", is_flag=True, default=False, help="Allow --out to replace shipped weights.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Training steps [default: the model's own].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--stage", type=click.Choice(["all", "vae", "unet"]), default="all", show_default=True,
              help="toy-sd only: train the VAE, the UNet (needs OUT/vae and toy-clip), or both.")
@click.option("--clip", "clip_folder", type=click.Path(file_okay=False), default=None,
              help="toy-sd only: toy-clip folder for the frozen text encoder [default: the shipped toy-clip].")
@click.option("--init_from", type=click.Path(file_okay=False, exists=True), default=None,
              help="toy-faces only: continue training from this toy-faces folder.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="toy-faces only: peak learning rate [default: 1e-3].")
@click.option("--batch_size", type=click.IntRange(min=1), default=None, help="toy-faces only [default: 256].")
@click.option("--dc_weight", type=click.FloatRange(min=0), default=None,
              help="toy-faces only: extra weight on the per-channel mean of the eps error [default: 20].")
@click.option("--compile", "compile_model", is_flag=True, default=False,
              help="toy-faces only: train through torch.compile (faster on a GPU after ~90 s of compiling).")
@click.option("--low_snr_cap", type=click.FloatRange(min=1), default=None,
              help="toy-faces only: weight the noisiest steps' eps loss up to this factor "
                   "(common.schedules.low_snr_weight) [default: off].")
@click.option("--widths", type=IntListType(), default=None,
              help="toy-faces only, from scratch: the UNet's four block widths, multiples of 8, the last two of 32 "
                   "[default: 32,32,64,96].")
@click.option("--time_budget", type=click.FloatRange(min=60), default=None,
              help="toy-faces only: wall-time budget in seconds; training, compilation included, gets 40 s less "
                   "(the rest is for the FD evaluation), and fewer steps are run if they would not fit "
                   "[default: 500].")
@user_errors
def train(model: str, device: str, out: str | None, force: bool, steps: int | None, seed: int, stage: str,
          clip_folder: str | None, init_from: str | None, lr: float | None, batch_size: int | None,
          dc_weight: float | None, compile_model: bool, low_snr_cap: float | None, widths: list[int] | None,
          time_budget: float | None) -> None:
    """Retrain a toy model (seeded; toy-faces can continue from a folder), with a progress bar and a metrics table.

    \b
    Examples:
      python -m common.toy train clip --device cuda --out common/toy/models/toy-clip --force
      python -m common.toy train sd --stage vae --device cuda --out common/toy/models/toy-sd --force
      python -m common.toy train sd --stage unet --device cuda --out common/toy/models/toy-sd --force
      python -m common.toy train clip --device cpu --steps 300 --out outputs/toy-clip-cpu
      python -m common.toy train faces --device cuda --init_from common/toy/models/toy-faces --seed 2 \\
          --lr 1e-4 --batch_size 1024 --low_snr_cap 30 --compile --out outputs/faces-c
      python -m common.toy train faces --device cuda --batch_size 1024 --low_snr_cap 30 --compile \\
          --time_budget 1450 --out outputs/faces-a
      python -m common.toy train faces --device cuda --init_from outputs/faces-a --lr 3e-4 --seed 1 \\
          --batch_size 1024 --low_snr_cap 30 --compile --time_budget 1250 --out outputs/faces-b
      python -m common.toy train faces --device cuda --widths 16,32,64,96 --batch_size 1024 --compile --out outputs/w16
    """
    try:
        module = importlib.import_module(f"common.toy.train_{model}")
    except ModuleNotFoundError as err:
        if err.name != f"common.toy.train_{model}":
            raise
        raise UserError(f"training for toy-{model} is not available in this checkout (no {err.name})") from err
    extra = {}
    if model == "sd":
        extra = {"stage": stage, "clip": clip_folder}
    elif stage != "all" or clip_folder is not None:
        raise UserError("--stage and --clip apply to `train sd` only")
    faces_only = {"lr": lr, "batch_size": batch_size, "dc_weight": dc_weight, "compile_model": compile_model or None,
                  "low_snr_cap": low_snr_cap, "block_out_channels": _check_widths(widths, init_from),
                  "time_budget_s": time_budget}
    if model == "faces":
        extra = {"init_from": init_from, **{k: v for k, v in faces_only.items() if v is not None}}
    elif init_from is not None or any(v is not None for v in faces_only.values()):
        raise UserError("--init_from, --lr, --batch_size, --dc_weight, --compile, --low_snr_cap, --widths and "
                        "--time_budget apply to `train faces` only")
    out = Path(out or f"outputs/toy-{model}")
    check_overwrite(out, force)
    module.train(out=out, device=device, steps=steps, seed=seed, **extra)


def _check_widths(widths: list[int] | None, init_from: str | None) -> tuple[int, ...] | None:
    """``--widths`` as toy-faces ``block_out_channels`` (GroupNorm of 8 groups; 32-wide heads on the last two)."""
    if widths is None:
        return None
    if init_from is not None:
        raise UserError("--widths builds a new UNet; a run with --init_from keeps that folder's widths")
    if len(widths) != 4 or any(w < 8 or w % 8 for w in widths) or any(w % 32 for w in widths[2:]):
        raise UserError(f"--widths needs four multiples of 8, the last two multiples of 32; got {widths}")
    return tuple(widths)


@main.command()
@click.option("--prompt", required=True, help="Text prompt, e.g. 'a red circle on a blue background'.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output image file (.png).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@click.option("--guidance_scale", "--guidance-scale", "guidance_scale", type=click.FloatRange(min=0.0),
              default=7.5, show_default=True, help="Classifier-free guidance scale.")
@click.option("--model", default="toy-sd", show_default=True, help="Registry name or local diffusers folder.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@user_errors
def sample(prompt: str, out: str, seed: int, steps: int, guidance_scale: float, model: str, device: str) -> None:
    """Sample one image from a text-to-image model (default: the embedded toy-sd).

    \b
    Examples:
      python -m common.toy sample --prompt "a red circle on a blue background" --out red.png
      python -m common.toy sample --prompt "a white square on a black background" --out sq.png --seed 3
    """
    from common.toy.sample import sample_cli_impl  # lazy: pulls in diffusers

    sample_cli_impl(prompt=prompt, out=out, seed=seed, steps=steps, guidance_scale=guidance_scale,
                    model=model, device=device)


@main.command()
@click.option("--n", type=click.IntRange(min=1, max=100_000), default=16, show_default=True,
              help="Number of images.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--size", type=click.IntRange(min=8, max=1024), default=64, show_default=True, help="Image side.")
@click.option("--seed", type=click.IntRange(min=0, max=999_999), default=0, show_default=True,
              help="Offset inside the split's seed range.")
@user_errors
def data(n: int, out: str, split: str, size: int, seed: int) -> None:
    """Write example shapes images (00000.png, ...) and captions.txt (``<file>\\t<caption>`` per line).

    \b
    Examples:
      python -m common.toy data --n 16 --out outputs/shapes
      python -m common.toy data --n 1000 --split val --out outputs/shapes-val
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    specs = shapes.sample_specs(n, shapes.split_seed(split, seed))
    lines = []
    for start in range(0, n, 256):
        chunk = specs[start:start + 256]
        for i, (spec, image) in enumerate(zip(chunk, shapes.render(chunk, size), strict=True)):
            name = f"{start + i:05d}.png"
            save_image(image, folder / name)
            lines.append(f"{name}\t{shapes.caption(spec)}")
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {n} images and captions.txt to {folder}")


@main.command()
@click.option("--images", "images_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder with images and captions.txt (<file>\\t<caption>, as `data` writes). "
                   "Default: measure toy-clip itself on rendered test images.")
@click.option("--n", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True,
              help="Rendered test images (without --images).")
@click.option("--clip_folder", type=click.Path(file_okay=False), default=None,
              help="toy-clip folder [default: the shipped common/toy/models/toy-clip].")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@user_errors
def judge(images_dir: str | None, n: int, clip_folder: str | None, device: str) -> None:
    """Zero-shot accuracy of the toy-clip judge (colour, shape, background, all three) as a table.

    \b
    Examples:
      python -m common.toy judge                       # the toy-clip bar on 1,000 test images
      python -m common.toy judge --images outputs/samples
    """
    from common.gpu import get_device
    from common.images import load_image
    from common.toy import judge as toy_judge
    from common.toy.train_clip import format_table, gaussian_blur

    dev = get_device(device)
    if images_dir is None:
        images, params = shapes.sample_batch(n, shapes.split_seed("test"), device=dev)
        rows = {f"{n} test images": params, "blur 0.8 px": params}
        batches = [images, gaussian_blur(images, torch.full((n,), 0.8, device=dev))]
    else:
        folder = Path(images_dir)
        pairs = [line.split("\t") for line in (folder / "captions.txt").read_text().splitlines() if line.strip()]
        if any(len(p) != 2 for p in pairs):
            raise UserError(f"{folder / 'captions.txt'}: every line must be '<file>\\t<caption>'")
        batches = [torch.stack([load_image(folder / name, size=64) for name, _ in pairs])]
        rows = {f"{folder.name} ({len(pairs)} images)": toy_judge.targets_to_indices([text for _, text in pairs])}
    table = {name: toy_judge.attribute_accuracy(toy_judge.predict(x, clip_folder, dev), target)
             for (name, target), x in zip(rows.items(), batches, strict=True)}
    click.echo(format_table(table))


if __name__ == "__main__":
    main()
