"""``python -m synchronization.evaluate``: the handout's CLIP-score evaluation, plus Visual Anagrams' metrics.

Wide images: the 512 x 512 crops at each prompt's ``eval_pos`` named ``{Prompt}_{pos}.png`` are scored against
their prompt (mean over a prompt's crops, then over prompts); the panorama ``{Prompt}.png`` in the same folder
is not scored (the handout's eval.py scored it as an extra prompt with its last word chopped). A panorama of a
handout prompt without crops is cropped here first (positions scaled by its height / 512).

Ambiguous images: every view image ``{prompt}.png`` is scored against its prompt (handout score), and each
illusion (the prompts of one run, from ``pairs.json`` written by main.py, else the handout pairs present) gets
Visual Anagrams' (Geng et al. 2024, Sec. 5.1) alignment A = min_i S_ii and concealment
C = (1/N) tr(softmax(S / tau)), with S_ij = cos(view_i image, prompt_j) and tau = 1 / CLIP's logit scale;
the softmax is taken over prompts (rows) and over images (columns) and the two traces averaged. (The KAIST
helper divided by the logit scale instead of multiplying, flattening the softmax to ~uniform.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from PIL import Image

from common.cli import UserError, user_errors
from common.eval import clip_score_folder, write_eval_json
from common.gpu import get_device
from common.images import load_image, save_image
from synchronization.prompts import ambiguous_pairs, prompt_to_name, wide_prompts

APPS = {"wide_image": "wide_images", "ambiguous_image": "ambiguous_images"}


def default_clip_model(fdir: Path) -> str:
    """toy-clip for runs of toy (or local-folder) models, per the folder's config.json; else OpenAI ViT-B/32."""
    config = fdir / "config.json"
    if config.is_file():
        model = str(json.loads(config.read_text()).get("model", ""))
        if model.startswith("toy-") or Path(model).is_dir():
            return "toy-clip"
        return "clip-vit-b-32"
    return "toy-clip"


def crop_missing(fdir: Path) -> list[Path]:
    """Crop panoramas of handout prompts that have no crops yet; returns the written crop paths."""
    written = []
    for prompt, positions in wide_prompts().items():
        name = prompt_to_name(prompt)
        pano = fdir / f"{name}.png"
        if not pano.is_file() or any(fdir.glob(f"{name}_*.png")):
            continue
        image = load_image(pano)  # [3, H, W] in [-1, 1]
        crop = image.shape[1]
        for pos in positions:
            p = min(round(pos * crop / 512), image.shape[2] - crop)
            written.append(save_image(image[:, :, p : p + crop], fdir / f"{name}_{p}.png"))
    return written


@torch.no_grad()
def similarity_matrix(images: list[Image.Image], prompts: list[str], bundle: Any) -> torch.Tensor:
    """S [N, N]: cosine of image i with prompt j (normalised CLIP features)."""
    param = next(bundle.model.parameters())
    pixels = torch.stack([bundle.preprocess(img) for img in images]).to(param.device, param.dtype)
    img = bundle.model.encode_image(pixels).float()
    txt = bundle.model.encode_text(bundle.tokenizer(list(prompts)).to(param.device)).float()
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return img @ txt.T


def anagram_metrics(sim: torch.Tensor, logit_scale: float) -> dict[str, float]:
    """Alignment min_i S_ii and concealment mean of diag(softmax(S * logit_scale)) over rows and columns."""
    logits = sim * logit_scale
    rows = logits.softmax(dim=1).diagonal()
    cols = logits.softmax(dim=0).diagonal()
    return {"alignment": float(sim.diagonal().min()), "concealment": float((rows + cols).mean() / 2)}


def illusions(fdir: Path) -> list[list[str]]:
    """Prompt tuples of the illusions in ``fdir`` whose view images all exist."""
    pairs_file = fdir / "pairs.json"
    groups = [e["prompts"] for e in json.loads(pairs_file.read_text())] if pairs_file.is_file() \
        else [list(p) for p in ambiguous_pairs()]
    return [g for g in groups if all((fdir / f"{prompt_to_name(p)}.png").is_file() for p in g)]


def evaluate(fdir: Path, app: str, bundle: Any, batch_size: int = 32) -> dict[str, Any]:
    if app == "wide_image":
        crop_missing(fdir)
    result = clip_score_folder(fdir, bundle, app=APPS[app], batch_size=batch_size)
    if app == "ambiguous_image":
        scale = float(bundle.model.logit_scale.detach().exp()) if hasattr(bundle.model, "logit_scale") else 100.0
        rows = []
        for group in illusions(fdir):
            images = [Image.open(fdir / f"{prompt_to_name(p)}.png").convert("RGB") for p in group]
            rows.append({"prompts": group, **anagram_metrics(similarity_matrix(images, group, bundle), scale)})
        result["illusions"] = rows
        if rows:
            result["alignment"] = sum(r["alignment"] for r in rows) / len(rows)
            result["concealment"] = sum(r["concealment"] for r in rows) / len(rows)
    result["clip_model"] = bundle.name
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app", type=click.Choice(list(APPS)), required=True, help="Which application's outputs.")
@click.option("--fdir", required=True, type=click.Path(file_okay=False), help="Folder of generated images.")
@click.option("--clip_model", default=None, help="CLIP registry name or open_clip folder [default: toy-clip for toy "
              "runs, clip-vit-b-32 (the handout's ViT-B/32) otherwise].")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch_size", type=click.IntRange(min=1), default=32, show_default=True)
@user_errors
def main(app: str, fdir: str, clip_model: str | None, device: str, batch_size: int) -> None:
    """Write FDIR/eval.json and print the CLIP score (and, for ambiguous images, alignment and concealment).

    \b
    Examples:
      python -m synchronization.evaluate --app wide_image --fdir outputs/wide
      python -m synchronization.evaluate --app ambiguous_image --fdir outputs/amb --clip_model toy-clip
    """
    from common.registry import load_clip

    folder = Path(fdir)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    bundle = load_clip(clip_model or default_clip_model(folder), get_device(device))
    result = evaluate(folder, app, bundle, batch_size)
    write_eval_json(folder, result)
    click.echo(f"CLIP score ({bundle.name}): {result['score']:.4f}")
    for row in result.get("illusions", []):
        click.echo(f"  {' | '.join(row['prompts'])}: alignment {row['alignment']:.4f}  "
                   f"concealment {row['concealment']:.4f}")


if __name__ == "__main__":
    main()
