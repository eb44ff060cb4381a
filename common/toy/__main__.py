"""``python -m common.toy``: retrain the toy models, sample from toy-sd, write example shapes data."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, UserError, finite, user_errors
from common.images import save_image
from common.runs import atomic_dir, write_config
from common.toy import shapes
from common.toy.train_cli import DEVICES, train


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """The embedded toy world: procedural shapes data and tiny pretrained models.

    \b
    Examples:
      python -m common.toy train clip --device cuda --out outputs/toy-clip
      python -m common.toy sample --prompt "a red circle on a blue background" --out red.png
      python -m common.toy data --n 16 --out outputs/shapes
    """


main.add_command(train)


@main.command()
@click.option("--prompt", required=True, help="Text prompt, e.g. 'a red circle on a blue background'.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Output image file (.png); its configuration goes to <name>.config.json next to it.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="DDIM steps.")
@click.option("--guidance_scale", "--guidance-scale", "guidance_scale", type=finite(min=0.0),
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
@click.option("--force", is_flag=True, default=False, help="Replace an existing non-empty --out folder.")
@user_errors
def data(n: int, out: str, split: str, size: int, seed: int, force: bool) -> None:
    """Write example shapes images (00000.png, ...), captions.txt (``<file>\\t<caption>`` per line) and config.json.

    The folder is built under a temporary name and renamed when complete, so its images never exist without
    captions.txt.

    \b
    Examples:
      python -m common.toy data --n 16 --out outputs/shapes
      python -m common.toy data --n 1000 --split val --out outputs/shapes-val
    """
    specs = shapes.sample_specs(n, shapes.split_seed(split, seed))
    with atomic_dir(out, overwrite=force) as folder:
        lines = []
        for start in range(0, n, 256):
            chunk = specs[start:start + 256]
            for i, (spec, image) in enumerate(zip(chunk, shapes.render(chunk, size), strict=True)):
                name = f"{start + i:05d}.png"
                save_image(image, folder / name)
                lines.append(f"{name}\t{shapes.caption(spec)}")
        (folder / "captions.txt").write_text("\n".join(lines) + "\n")
        write_config(folder, {"n": n, "split": split, "size": size, "seed": seed})
    click.echo(f"wrote {n} images and captions.txt to {out}")


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
