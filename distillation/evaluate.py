"""``python -m distillation.evaluate``: the handouts' evaluation set, then CLIP score into ``eval.json``.

Real models: the 10 prompts of KAIST A4 / NYCU Lab 3 (``eval_prompts.json``, shipped as package data), or for
PDS/DDS the 10 source/edit pairs with KAIST's source images ``<data_dir>/<key>.png``; scored with OpenAI CLIP
ViT-B/32 like the handouts' eval.py. ``--model toy-sd``: a toy evaluation set of held-out shapes captions
(``common.toy.shapes`` test split; edits change the object colour) scored with toy-clip, plus the toy judge.
All prompts are optimised together in one batch (``--batch_size`` splits them).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, UserError, user_errors
from common.runs import write_json_atomic
from distillation.guidance import METHODS
from distillation.main import OPTION_NAMES
from distillation.presets import PRESETS, resolve_settings
from distillation.runner import EDIT_METHODS, Item, RunConfig, run

PROMPTS_FILE = Path(__file__).with_name("eval_prompts.json")
PER_METHOD_KEYS = ("guidance_scale", "lr", "t_schedule", "w_schedule", "lora_lr")


def handout_items(loss_type: str, data_dir: str | None) -> list[Item]:
    """The handouts' 10 prompts, or the 10 PDS pairs with their source images from ``data_dir``."""
    data = json.loads(PROMPTS_FILE.read_text())
    if loss_type not in EDIT_METHODS:
        return [Item(p) for p in data["prompts"]]
    if data_dir is None:
        raise UserError(f"{loss_type} evaluation edits the KAIST source images: pass --data_dir with "
                        "<key>.png files (Diffusion-Assignment4-Distillation/data/imgs), or use --model toy-sd")
    items = [Item(p["source"], p["edit"], str(Path(data_dir) / f"{p['key']}.png")) for p in data["pds_pairs"]]
    missing = [it.src_img_path for it in items if not Path(it.src_img_path).is_file()]
    if missing:
        raise UserError(f"{len(missing)} source images missing in {data_dir}, e.g. {missing[0]}")
    return items


def toy_specs(n: int, split: str = "test") -> tuple[list, list]:
    """``n`` held-out shapes specs and, for edits, the same specs with a new object colour (!= background)."""
    from dataclasses import replace

    from common.toy import shapes

    candidates = shapes.sample_specs(20 * n, shapes.split_seed(split))
    g = torch.Generator().manual_seed(shapes.split_seed(split, 1))
    specs, edits, seen = [], [], set()
    for spec in candidates:  # distinct captions: each final image is named after its (edit) prompt
        choices = [c for c in shapes.COLORS if c not in (spec.color, spec.background)]
        edit = replace(spec, color=choices[int(torch.randint(len(choices), (1,), generator=g))])
        if shapes.caption(spec) in seen or shapes.caption(edit) in seen:
            continue
        seen.update((shapes.caption(spec), shapes.caption(edit)))
        specs.append(spec)
        edits.append(edit)
        if len(specs) == n:
            return specs, edits
    raise ValueError(f"cannot draw {n} distinct toy captions; use --n {len(specs)} or fewer")


def toy_items(loss_type: str, n: int) -> tuple[list[Item], list[str]]:
    """Toy evaluation items and the captions each final image should match."""
    from common.toy import shapes

    specs, edits = toy_specs(n)
    if loss_type not in EDIT_METHODS:
        captions = [shapes.caption(s) for s in specs]
        return [Item(c) for c in captions], captions
    images = shapes.render(specs, size=64)
    items = [Item(shapes.caption(s), shapes.caption(e), src_image=img) for s, e, img in zip(specs, edits, images)]
    return items, [shapes.caption(e) for e in edits]


def make_config(loss_type: str, preset: str | None, explicit: dict, items: list[Item], save_dir: str) -> RunConfig:
    """RunConfig with the same precedence as the main CLI (explicit > preset > per-method > defaults)."""
    base = RunConfig()
    defaults = {k: (None if k in PER_METHOD_KEYS else getattr(base, k)) for k in OPTION_NAMES}
    representation = explicit.get("representation") or base.representation
    settings = resolve_settings(loss_type, representation, preset, explicit, defaults)
    return RunConfig(loss_type=loss_type, preset=preset, save_dir=save_dir, items=items,
                     **{k: settings[k] for k in OPTION_NAMES})


def judge_accuracy(paths: list[Path], captions: list[str]) -> dict[str, float]:
    """Toy judge on the final images: per-attribute accuracy and ``all`` (colour, shape and background right)."""
    from common.images import load_image
    from common.toy.judge import attribute_accuracy, predict, targets_to_indices

    images = torch.stack([load_image(p, size=64) for p in paths])
    return attribute_accuracy(predict(images), targets_to_indices(captions))


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--loss_type", type=click.Choice(METHODS), default="sds", show_default=True, help="Method.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="Assignment settings.")
@click.option("--model", default=None, help="toy-sd, sd-2.1-base, ... or a folder [default: toy-sd or preset's].")
@click.option("--save_root", type=click.Path(file_okay=False), default="./outputs", show_default=True,
              help="Images go to SAVE_ROOT/<loss_type>/ with eval.json.")
@click.option("--data_dir", type=click.Path(file_okay=False), default=None,
              help="PDS/DDS with real models: folder of KAIST's source images <key>.png.")
@click.option("--clip_model", default=None, help="CLIP for the score [default: toy-clip for toy-sd, else "
              "clip-vit-b-32].")
@click.option("--n_toy", type=click.IntRange(min=1), default=10, show_default=True, help="Toy evaluation size.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the steps.")
@click.option("--guidance_scale", type=float, default=None, help="Override the guidance scale.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the LR.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, help="Weights dtype.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed.")
@click.option("--batch_size", type=click.IntRange(min=1), default=None, help="Prompts per batch [default: all].")
@user_errors
def main(loss_type: str, preset: str | None, model: str | None, save_root: str, data_dir: str | None,
         clip_model: str | None, n_toy: int, batch_size: int | None, **overrides) -> None:
    """Run the evaluation set of a method and write SAVE_ROOT/<loss_type>/eval.json (raw CLIP cosine).

    \b
    Examples:
      python -m distillation.evaluate --loss_type sds --save_root outputs
      python -m distillation.evaluate --loss_type vsd --preset nycu-lab3 --save_root outputs --device cuda
      python -m distillation.evaluate --loss_type pds --preset kaist-a4 --data_dir data/imgs --save_root outputs
    """
    from common.eval import clip_score_folder, write_eval_json
    from common.registry import load_clip

    model = model or (PRESETS[preset]["common"]["model"] if preset else "toy-sd")
    toy = model == "toy-sd"
    items, captions = toy_items(loss_type, n_toy) if toy else (handout_items(loss_type, data_dir), [])
    explicit = {k: v for k, v in overrides.items() if v is not None} | {"model": model}
    folder = Path(save_root) / loss_type
    paths: list[Path] = []
    size = batch_size or len(items)
    for start in range(0, len(items), size):
        paths += run(make_config(loss_type, preset, explicit, items[start:start + size], str(folder)))
    clip = clip_model or ("toy-clip" if toy else "clip-vit-b-32")
    result = clip_score_folder(folder, load_clip(clip, "cpu"))
    if toy:
        result["toy_judge"] = judge_accuracy(paths, captions)
    write_eval_json(folder, result)
    if toy:
        write_json_atomic(folder / "toy_captions.json", captions)
    click.echo(f"Cosine similarity {result['score']}")
    if toy:
        click.echo(f"Toy judge: all attributes right {result['toy_judge']['all']:.3f}")


if __name__ == "__main__":
    main()
