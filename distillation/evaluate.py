"""``python -m distillation.evaluate``: the handouts' evaluation set, then CLIP score into ``eval.json``.

Real models: the 10 prompts of KAIST A4 / NYCU Lab 3 (``eval_prompts.json``, shipped as package data), or for
PDS/DDS the 10 source/edit pairs with KAIST's source images ``<data_dir>/<key>.png``; scored with OpenAI CLIP
ViT-B/32 like the handouts' eval.py. ``--model toy-sd``: a toy evaluation set of held-out shapes captions
(``common.toy.shapes`` test split; edits change the object colour) scored with toy-clip, plus two toy judges
(toy-clip's zero-shot caption, ``common.toy.judge``, and the pixel-level ``common.toy.shape_judge``).
All prompts are optimised together in one batch (``--batch_size`` splits them). Every option of
``python -m distillation.main`` is accepted (the same declarations, :func:`distillation.main.run_options`), so
ablations (``--inversion_n_steps``, ``--pds_posterior``, ``--ism_grid``, ...) run on the evaluation set too.
Writes ``SAVE_ROOT/<loss_type>/eval.json`` (strict JSON) and ``SAVE_ROOT/<loss_type>_contact_sheet.png``: every
final image with its prompt, CLIP score and (toy) judges' verdicts; kept outside the scored folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from common.cli import CONTEXT_SETTINGS, UserError, user_errors
from common.runs import json_number, write_json_atomic
from distillation.main import run_options, settings_from_context
from distillation.presets import resolve_settings
from distillation.runner import EDIT_METHODS, OPTION_NAMES, Item, RunConfig, run

PROMPTS_FILE = Path(__file__).with_name("eval_prompts.json")
PER_METHOD_KEYS = ("guidance_scale", "lr", "t_schedule", "w_schedule", "lora_lr", "threads")  # layered defaults


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


def judge_images(paths: list[Path], captions: list[str]) -> tuple[dict[str, float], list[str]]:
    """Both toy judges on the final images: toy-clip's per-attribute accuracy with ``all`` (colour, shape and
    background right; :mod:`common.toy.judge`) and ``pixel_all``, the fraction the pixel-level
    :mod:`common.toy.shape_judge` passes (palette colours and a shape fit of IoU >= 0.8); and per image one
    verdict line per judge (what it saw)."""
    from common.images import load_image
    from common.toy import shapes
    from common.toy.judge import attribute_accuracy, predict, targets_to_indices
    from common.toy.shape_judge import verdict

    images = torch.stack([load_image(p, size=64) for p in paths])  # [n, 3, 64, 64] in [-1, 1]
    pred, target = predict(images), targets_to_indices(captions)
    verdicts, pixel_right = [], 0
    for i, caption in enumerate(captions):
        color, shape, bg = (int(pred[k][i]) for k in ("color", "shape", "background"))
        right = (color, shape, bg) == tuple(int(target[k][i]) for k in ("color", "shape", "background"))
        pixel = verdict(images[i], caption)
        pixel_right += bool(pixel["correct"])
        seen = f"{pixel['color']} {pixel['shape']} on {pixel['background']}" if pixel["shape"] else "no object"
        verdicts.append(f"toy-clip: {shapes.COLORS[color]} {shapes.SHAPES[shape]} on {shapes.COLORS[bg]} "
                        f"({'right' if right else 'WRONG'})\npixel: {seen}, IoU {float(pixel['iou']):.2f} "
                        f"({'right' if pixel['correct'] else 'WRONG'})")
    return {**attribute_accuracy(pred, target), "pixel_all": pixel_right / len(paths)}, verdicts


def judge_accuracy(paths: list[Path], captions: list[str]) -> dict[str, float]:
    """Toy judge accuracies only (see :func:`judge_images`)."""
    return judge_images(paths, captions)[0]


def contact_sheet(paths: list[Path], result: dict, verdicts: list[str] | None, path: Path) -> Path:
    """One PNG: every final image (toy-size images enlarged x4, nearest) over its prompt, CLIP score and the
    judges' verdicts (:func:`common.panels.save_labelled_grid`)."""
    from common.eval.clip_score import prompt_from_filename
    from common.images import load_image
    from common.panels import save_labelled_grid

    labels = []
    for i, p in enumerate(paths):
        score = json_number(result.get(Path(result["source_dir"], p.name).as_posix()))
        lines = [prompt_from_filename(p), "CLIP: n/a (not finite)" if score is None else f"CLIP {score:.3f}"]
        labels.append("\n".join(lines + ([verdicts[i]] if verdicts else [])))
    images = torch.stack([load_image(p) for p in paths])  # [n, 3, H, W]: the run's final images, one size
    return save_labelled_grid(path, images, labels, nrow=min(len(paths), 5))


def write_results(folder: Path, result: dict, toy_judge: dict | None) -> dict:
    """eval.json as strict JSON: a number that is not finite becomes null, flagged by ``not_finite`` (its keys),
    never 0."""
    data = {k: (json_number(v) if isinstance(v, float) else v) for k, v in result.items()}
    if toy_judge is not None:
        data["toy_judge"] = {k: json_number(v) for k, v in toy_judge.items()}
    missing = [k for k, v in result.items() if isinstance(v, float) and data[k] is None]
    if missing:
        data["not_finite"] = missing
    write_json_atomic(folder / "eval.json", data)
    return data


@click.command(context_settings=CONTEXT_SETTINGS)
@run_options
@click.option("--save_root", type=click.Path(file_okay=False), default="./outputs", show_default=True,
              help="Images go to SAVE_ROOT/<loss_type>/ with eval.json; the contact sheet to "
                   "SAVE_ROOT/<loss_type>_contact_sheet.png.")
@click.option("--data_dir", type=click.Path(file_okay=False), default=None,
              help="PDS/DDS with real models: folder of KAIST's source images <key>.png.")
@click.option("--clip_model", default=None, help="CLIP for the score [default: toy-clip for toy-sd, else "
              "clip-vit-b-32].")
@click.option("--n_toy", type=click.IntRange(1, 200), default=10, show_default=True, help="Toy evaluation size.")
@click.pass_context
@user_errors
def main(ctx: click.Context, loss_type: str, preset: str | None, save_root: str, data_dir: str | None,
         clip_model: str | None, n_toy: int, **params) -> None:
    """Run the evaluation set of a method and write SAVE_ROOT/<loss_type>/eval.json (raw CLIP cosine).

    Takes every option of python -m distillation.main (same defaults and presets).

    \b
    Examples:
      python -m distillation.evaluate --loss_type sds --save_root outputs
      python -m distillation.evaluate --loss_type sdi --inversion_n_steps 5 --sdi_update_interval 10
      python -m distillation.evaluate --loss_type vsd --preset nycu-lab3 --save_root outputs --device cuda
      python -m distillation.evaluate --loss_type pds --preset kaist-a4 --data_dir data/imgs --save_root outputs
    """
    from common.eval import clip_score_folder
    from common.registry import load_clip, resolve

    settings = settings_from_context(ctx, params, loss_type, preset)
    toy = resolve(settings["model"], "sd").toy
    items, captions = toy_items(loss_type, n_toy) if toy else (handout_items(loss_type, data_dir), [])
    clip = load_clip(clip_model or ("toy-clip" if toy else "clip-vit-b-32"), "cpu")  # refused before optimising
    folder = Path(save_root) / loss_type
    cfg = RunConfig(loss_type=loss_type, preset=preset, save_dir=str(folder), items=items,
                    **{k: settings[k] for k in OPTION_NAMES})
    paths = run(cfg)
    result = clip_score_folder(folder, clip)
    accuracy, verdicts = judge_images(paths, captions) if toy else (None, None)
    data = write_results(folder, result, accuracy)
    if toy:
        write_json_atomic(folder / "toy_captions.json", captions)
    sheet = contact_sheet(paths, result, verdicts, Path(save_root) / f"{loss_type}_contact_sheet.png")
    click.echo(f"Cosine similarity {data['score']}")
    if toy:
        click.echo(f"Toy judges: toy-clip all attributes right {accuracy['all']:.3f}, pixel judge right "
                   f"{accuracy['pixel_all']:.3f}")
    click.echo(f"Contact sheet: {sheet}")


if __name__ == "__main__":
    main()
