"""``python -m common.eval``: CLIP score of a folder of generated images (the assignments' eval.py)."""

from __future__ import annotations

from pathlib import Path

import click

from common.cli import CONTEXT_SETTINGS, UserError, user_errors
from common.eval.clip_score import APPS, clip_for_images, clip_score_folder, find_final_images, write_eval_json
from common.gpu import get_device
from common.images import read_pil
from common.registry import load_clip, resolve
from common.runs import write_config

EVAL_CONFIG = "eval_config.json"  # next to eval.json; the folder's config.json is the generating run's own


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--fdir1", "fdir1", required=True, type=str,
              help="Folder of final images named after their prompts (A_red_bus.png -> 'A red bus').")
@click.option("--clip_model", default="auto", show_default=True,
              help="CLIP model: registry name (clip-vit-b-32, toy-clip), a local open_clip folder, or auto: "
                   "toy-clip when FDIR1/config.json names a toy model (toy-sd, toy-pixel), else clip-vit-b-32.")
@click.option("--app", type=click.Choice(APPS), default="default", show_default=True,
              help="Name -> prompt rule: default/ambiguous_images use the whole name; wide_images drops the "
                   "trailing _<x offset> of each crop and averages the crops of one prompt.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, mps or cpu.")
@click.option("--batch_size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per CLIP forward pass.")
@user_errors
def main(fdir1: str, clip_model: str, app: str, device: str, batch_size: int) -> None:
    """Write FDIR1/eval.json (raw CLIP cosine per image, the CLIP used, the mean score) and print the score.

    Only final images are scored: step snapshots (0.png, 25.png, ...), src_img*.png and subfolders such as
    progress/ are skipped. The score is the mean over prompts of the mean cosine of each prompt's images.
    The CLIP used (and why) is printed on stderr and recorded in FDIR1/eval_config.json.

    \b
    Examples:
      python -m common.eval --fdir1 outputs/sds
      python -m common.eval --fdir1 outputs/sds --clip_model toy-clip --device cpu
      python -m common.eval --fdir1 outputs/wide --app wide_images
    """
    for path in find_final_images(fdir1, app):  # fail on a bad folder or a bad image before loading a model
        read_pil(path)
    for name in ("eval.json", EVAL_CONFIG):
        if (Path(fdir1) / name).is_dir():
            raise UserError(f"cannot write {Path(fdir1) / name}: it is a folder")
    reason = "--clip_model"
    if clip_model == "auto":
        clip_model, reason = clip_for_images(fdir1)
    resolve(clip_model, "clip")
    click.echo(f"CLIP model: {clip_model} ({reason})", err=True)
    bundle = load_clip(clip_model, get_device(device))
    result = clip_score_folder(fdir1, bundle, app=app, batch_size=batch_size)
    score = result.pop("score")
    result = {**result, "clip_model": clip_model, "score": score}  # the metric, for graders (as sync's evaluate)
    write_eval_json(fdir1, result)
    write_config(fdir1, {"clip_model": clip_model, "clip_reason": reason, "app": app, "device": device,
                         "batch_size": batch_size, "score": result["score"]}, name=EVAL_CONFIG)
    click.echo(f"Cosine similarity {result['score']}")


if __name__ == "__main__":
    main()
