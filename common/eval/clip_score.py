"""CLIP score of a folder of generated images against the prompts in their file names.

Reproduces the assignments' ``eval.py`` (KAIST CS492D = NYCU, byte-identical; see
``shared/reference/distillation.md`` (d) and ``synchronization.md`` (d)):

- model: OpenAI CLIP ViT-B/32 (``clip.load("ViT-B/32")``, fp32); here open_clip ``ViT-B-32``/``openai`` with
  QuickGELU through :func:`common.registry.load_clip` (registry name ``clip-vit-b-32``);
- preprocessing: the model's own eval transform (shortest side to 224 bicubic, centre crop, RGB, CLIP mean/std);
  texts tokenized with truncation to 77 tokens;
- score: raw cosine similarity ``cos(f_img, f_txt)`` of image and text features (no x100, no clamp at 0, no
  logit scale; the 0.26 / 0.28 grading thresholds are on this scale), averaged over the images of each prompt,
  then an unweighted mean over prompts;
- file name -> prompt: underscores -> spaces, case kept (``A_red_bus.png`` -> "A red bus");
- output ``<folder>/eval.json``: ``source_dir``, one entry per scored image path, ``score`` (strict JSON, written
  atomically; indent 2 where eval.py used 4); the CLI prints ``Cosine similarity <score>``.

The CLI's default CLIP follows the images: toy-clip when the ``config.json`` next to them names a toy model
(:attr:`common.registry.ModelSpec.toy`, e.g. ``"model": "toy-sd"``), else ViT-B/32 (:func:`clip_for_images`).

Traps of eval.py that are fixed here:

- eval.py scores every ``*.png`` in the folder, so step snapshots (``0.png``, ``25.png``) and ``src_img.png``
  became prompts "0", "25", "src img"; here only final images are scored (see :func:`is_final_image`);
- eval.py splits paths on "/" (breaks on Windows) and cuts names at the first "." (``a_v1.5_car.png`` became
  "a v1"); here the full :attr:`pathlib.Path.stem` is used and JSON paths are POSIX-style on every OS;
- eval.py keys each prompt's *mean* under its first image path; with one image per prompt (the usual case) that
  is the image's cosine, and here every image gets its own entry (its own cosine) while the score keeps
  eval.py's mean-per-prompt-then-mean-over-prompts;
- wide-image crops (``--app wide_images``, prompt = name without its trailing ``_<x offset>``): eval.py also
  scored the full panorama in the same folder as an extra prompt with its last word chopped; here files without
  a numeric offset suffix are skipped in that mode.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from common.images import read_pil
from common.registry import ClipBundle, ModelLoadError, resolve
from common.runs import write_json_atomic

APPS = ("default", "ambiguous_images", "wide_images")
TOY_CLIP, REAL_CLIP = "toy-clip", "clip-vit-b-32"
_WIDE_CROP = re.compile(r"^(?P<prompt>.+)_(?P<pos>\d+)$")


HANDOUT_COPIES = ("generated_image", "generated_progressive")  # distillation.main's HW5 names, not prompts


def is_final_image(path: str | os.PathLike, app: str = "default") -> bool:
    """True for a final image to score: a ``.png`` that is not a step snapshot (all-digit name such as
    ``25.png``), a source image (``src_img*.png``) nor a UMich HW5 deliverable copy (``generated_image.png``,
    ``generated_progressive.png``); with ``app="wide_images"`` only ``<prompt>_<pos>.png``."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return False
    stem = path.stem
    if stem.isdigit() or stem.lower().startswith("src_img") or stem == "" or stem in HANDOUT_COPIES:
        return False
    if app == "wide_images":
        return _WIDE_CROP.match(stem) is not None
    return True


def prompt_from_filename(path: str | os.PathLike, app: str = "default") -> str:
    """Prompt encoded in an image's file name: the full stem (dots kept) with underscores as spaces, case kept.

    ``A_red_bus_driving_on_a_desert_road.png`` -> "A red bus driving on a desert road";
    ``a_v1.5_car.png`` -> "a v1.5 car"; with ``app="wide_images"``, ``A_city_skyline_1667.png`` -> "A city
    skyline" (the trailing crop offset is dropped, as eval.py does for wide images).
    """
    stem = Path(path).stem
    if app == "wide_images":
        match = _WIDE_CROP.match(stem)
        if match is None:
            raise ValueError(f"{Path(path).name}: wide-image crops are named <prompt>_<x offset>.png")
        stem = match.group("prompt")
    return stem.replace("_", " ")


def find_final_images(folder: str | os.PathLike, app: str = "default") -> list[Path]:
    """Final images directly in ``folder`` (not in subfolders such as ``progress/``), sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(2, "No such folder", str(folder))
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    paths = sorted((p for p in folder.iterdir() if p.is_file() and is_final_image(p, app)), key=lambda p: p.name)
    if not paths:
        raise ValueError(f"no final images (*.png) to score in {folder}; step snapshots (0.png, 25.png, ...) and "
                         "src_img*.png are skipped")
    return paths


def clip_for_images(folder: str | os.PathLike) -> tuple[str, str]:
    """``(registry name, reason)`` of the CLIP that matches a folder's images: toy-clip when the ``config.json``
    next to them names a toy model (``ModelSpec.toy``), else ViT-B/32, the assignments' eval.py model."""
    config = Path(folder) / "config.json"
    try:
        model = json.loads(config.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return REAL_CLIP, f"no readable {config.name} next to the images"
    if not isinstance(model, str):
        return REAL_CLIP, f"{config.name} names no model"
    try:
        spec = resolve(model)
    except ModelLoadError:
        return REAL_CLIP, f"{config.name} names {model!r}, not a registry model"
    if spec.toy:
        return TOY_CLIP, f"{config.name} names the toy model {model!r}"
    return REAL_CLIP, f"{config.name} names {model!r}"


@torch.no_grad()
def clip_cosine(images: Sequence[Image.Image], texts: Sequence[str], bundle: ClipBundle,
                batch_size: int = 32) -> torch.Tensor:
    """Cosine similarity of each image with its text: ``cos(E_img(x_i), E_txt(y_i))`` -> float32 ``[N]``.

    Images go through the bundle's CLIP preprocessing, texts through its tokenizer (truncated to the context
    length). Raw cosine in [-1, 1]: no x100, no clamp, no logit scale (as eval.py's ``F.cosine_similarity``).
    """
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts")
    model = bundle.model
    param = next(model.parameters())
    out = []
    for i in range(0, len(images), batch_size):
        pixels = torch.stack([bundle.preprocess(img) for img in images[i:i + batch_size]])  # [b, 3, S, S]
        tokens = bundle.tokenizer(list(texts[i:i + batch_size]))  # [b, context_length]
        img_feat = model.encode_image(pixels.to(param.device, param.dtype)).float()  # [b, D]
        txt_feat = model.encode_text(tokens.to(param.device)).float()  # [b, D]
        out.append(F.cosine_similarity(img_feat, txt_feat, dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def clip_score_folder(folder: str | os.PathLike, clip_bundle: ClipBundle, app: str = "default",
                      batch_size: int = 32) -> dict[str, Any]:
    """Score the final images of ``folder`` against their file-name prompts; returns the eval.json content.

    ``{"source_dir": folder, "<folder>/<image>.png": cosine, ..., "score": mean over prompts of the mean
    cosine of that prompt's images}``. Raises ``FileNotFoundError``/``ValueError`` with one line on bad input.
    """
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}; choose one of {', '.join(APPS)}")
    paths = find_final_images(folder, app)
    prompts = [prompt_from_filename(p, app) for p in paths]
    images = [read_pil(p) for p in paths]  # 8-bit RGB; decompression bombs and bad files are one line
    cosines = clip_cosine(images, prompts, clip_bundle, batch_size=batch_size)
    if not torch.isfinite(cosines).all():
        raise ValueError(f"CLIP features are not finite for some images in {folder}; check the CLIP model")
    per_prompt: dict[str, list[float]] = {}
    result: dict[str, Any] = {"source_dir": Path(folder).as_posix()}
    for path, prompt, cos in zip(paths, prompts, cosines.tolist()):
        result[(Path(folder) / path.name).as_posix()] = cos
        per_prompt.setdefault(prompt, []).append(cos)
    means = [sum(v) / len(v) for v in per_prompt.values()]
    result["score"] = sum(means) / len(means)
    return result


def write_eval_json(folder: str | os.PathLike, result: dict[str, Any], name: str = "eval.json") -> Path:
    """Write ``result`` to ``folder/eval.json``: strict JSON, atomically (a refusal or crash leaves no file)."""
    return write_json_atomic(Path(folder) / name, result)
