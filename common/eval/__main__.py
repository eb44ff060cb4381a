"""``python -m common.eval``: CLIP score of a folder of generated images (the assignments' eval.py)."""

from __future__ import annotations

import click

from common.cli import CONTEXT_SETTINGS, user_errors
from common.eval.clip_score import APPS, clip_score_folder, find_final_images, write_eval_json
from common.gpu import get_device
from common.registry import load_clip, resolve


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--fdir1", "fdir1", required=True, type=str,
              help="Folder of final images named after their prompts (A_red_bus.png -> 'A red bus').")
@click.option("--clip_model", default="clip-vit-b-32", show_default=True,
              help="CLIP model: registry name (clip-vit-b-32, toy-clip) or a local open_clip folder.")
@click.option("--app", type=click.Choice(APPS), default="default", show_default=True,
              help="Name -> prompt rule: default/ambiguous_images use the whole name; wide_images drops the "
                   "trailing _<x offset> of each crop and averages the crops of one prompt.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, mps or cpu.")
@click.option("--batch_size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per CLIP forward pass.")
@user_errors
def main(fdir1: str, clip_model: str, app: str, device: str, batch_size: int) -> None:
    """Write FDIR1/eval.json (raw CLIP cosine per image and the mean score) and print the score.

    Only final images are scored: step snapshots (0.png, 25.png, ...), src_img*.png and subfolders such as
    progress/ are skipped. The score is the mean over prompts of the mean cosine of each prompt's images.

    \b
    Examples:
      python -m common.eval --fdir1 outputs/sds
      python -m common.eval --fdir1 outputs/sds --clip_model toy-clip --device cpu
      python -m common.eval --fdir1 outputs/wide --app wide_images
    """
    find_final_images(fdir1, app)  # fail on a bad folder before loading a model
    resolve(clip_model, "clip")
    bundle = load_clip(clip_model, get_device(device))
    result = clip_score_folder(fdir1, bundle, app=app, batch_size=batch_size)
    write_eval_json(fdir1, result)
    click.echo(f"Cosine similarity {result['score']}")


if __name__ == "__main__":
    main()
