"""Scores of generated images for grading: end-to-end images and the submission's reported CLIP scores.

Both use the handouts' ``eval.py`` score (``common.eval``): raw cosine of each image with the prompt of its file
name (end-to-end: of its caption), mean per prompt, then mean over prompts; toy images also get the toy judge's
share fully correct (shown only). End-to-end images are quantised to 8 bits first, as their PNGs would be.

Reported scores: the final PNGs of a result folder (regular files, PNG format, at most :data:`MAX_PIXELS` with
PIL's own decompression-bomb cap on as well, 8-bit RGB only) are re-scored with the metric the folder's
``eval.json`` names (``clip_model``/``metric``; else toy-clip when it carries the toy judge or ``config.json``
names a toy model; else the handouts' OpenAI CLIP ViT-B/32, loaded only when the grader asks for it) and compared
with its ``score``: |delta| > :data:`REPORT_TOL` fails. ``eval.json`` is strict JSON (no NaN/Infinity), at most
1 MB and an object with a finite ``score``; anything else is a failed check with one line, never a crash. Nothing
here unpickles.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

TOY_CLIP, REAL_CLIP = "toy-clip", "clip-vit-b-32"
REPORT_TOL = 1e-3  # |re-scored - reported| above this fails "Reported CLIP score reproduces"
MAX_PIXELS = 4096 * 4096  # per submitted PNG
MAX_IMAGES = 200  # PNGs re-scored per result folder
MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class Scored:
    """A CLIP score: the mean over prompts of each prompt's mean cosine, the cosines, and the toy judge's share."""

    score: float
    cosines: tuple[float, ...]
    judge: float | None = None


@functools.lru_cache(maxsize=2)
def _clip(name: str):
    from common.registry import load_clip

    return load_clip(name, "cpu")


def score_pils(pils: list, prompts: list[str], metric: str = TOY_CLIP, judge: bool = False) -> Scored:
    """Raw cosine of each image with its prompt under ``metric`` (eval.py's aggregation); optional toy judge."""
    from common.eval import clip_cosine

    with torch.inference_mode():
        cos = clip_cosine(pils, prompts, _clip(metric)).tolist()
    if not all(math.isfinite(c) for c in cos):
        raise ValueError(f"{metric} gives non-finite cosines")
    per_prompt: dict[str, list[float]] = {}
    for prompt, c in zip(prompts, cos):
        per_prompt.setdefault(prompt, []).append(c)
    score = statistics.fmean(statistics.fmean(v) for v in per_prompt.values())
    share = None
    if judge:
        from common.toy.judge import fully_correct

        share = float(fully_correct(pils, prompts).float().mean())
    return Scored(score, tuple(cos), share)


def images_problem(out: dict | None, k: int, size: int) -> str:
    """"" when ``out`` is ``{"images": float32 [k, 3, size, size]}``, finite and in [-1, 1]; else the problem."""
    if out is None or set(out) != {"images"}:
        return f"the case must return only 'images', got {sorted(out or {})}"
    x = out["images"]
    if x.dtype != torch.float32 or tuple(x.shape) != (k, 3, size, size):
        return f"images: {x.dtype} {tuple(x.shape)}, expected torch.float32 {(k, 3, size, size)}"
    if not bool(torch.isfinite(x).all()):
        return "images hold NaN/inf values"
    if float(x.abs().max()) > 1.0 + 1e-4:
        return f"images leave [-1, 1] (max |x| = {float(x.abs().max()):.3g})"
    return ""


def score_images(images: torch.Tensor, captions: tuple[str, ...], metric: str = TOY_CLIP) -> Scored:
    """Score end-to-end images [K, 3, S, S] as their PNGs would be (8-bit quantised), with the toy judge."""
    from common.images import tensor_to_pil

    return score_pils([tensor_to_pil(x) for x in images], list(captions), metric, judge=metric == TOY_CLIP)


# ---------------------------------------------------------------------------------------------- reported scores


@dataclass(frozen=True)
class Reported:
    """The reported-score check of one result folder. ``ok`` None: not checked (nothing to check, or a metric
    this session does not load); False: the reported score does not reproduce (the band points become 0)."""

    ok: bool | None
    message: str
    score: float | None = None  # eval.json's score
    per_image: tuple[tuple[str, float], ...] = ()  # (file stem, reported cosine)
    metric: str = TOY_CLIP


def _regular_file(path: Path, max_bytes: int) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    if st.st_size > max_bytes:
        raise ValueError(f"{path.name} is {st.st_size / 2**20:.1f} MB, over {max_bytes / 2**20:g} MB")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _metric_of(data: dict, folder: Path) -> str:
    """The metric eval.json names ('clip_model'/'metric'), else toy-clip for toy outputs, else the real CLIP."""
    named = data.get("clip_model") or data.get("metric")  # synchronization.evaluate writes clip_model
    if named is not None:
        return str(named)[:80]
    if "toy_judge" in data:  # distillation.evaluate --model toy-sd writes it
        return TOY_CLIP
    try:
        _regular_file(folder / "config.json", MAX_JSON_BYTES)
        model = json.loads((folder / "config.json").read_text(), parse_constant=_no_constant).get("model", "")
    except (OSError, ValueError, AttributeError, RecursionError):
        model = ""
    return TOY_CLIP if str(model).startswith("toy-") else REAL_CLIP


def read_eval(folder: Path) -> tuple[float, tuple[tuple[str, float], ...], str]:
    """(score, per-image cosines, metric) of ``folder/eval.json``; ValueError with one line if unusable."""
    path = folder / "eval.json"
    _regular_file(path, MAX_JSON_BYTES)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("eval.json is nested too deeply") from None
    except ValueError as err:
        raise ValueError(f"eval.json is not valid JSON ({str(err)[:80]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"eval.json holds a JSON {type(data).__name__}, not an object")
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"eval.json's 'score' is {str(score)[:40]!r}, not a finite number")
    per_image = tuple((Path(k).stem, float(v)) for k, v in data.items() if str(k).lower().endswith(".png")
                      and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    return float(score), per_image, _metric_of(data, folder)


def open_png(path: Path):
    """A submitted PNG as a PIL image: a regular file, PNG format, at most MAX_PIXELS, 8-bit RGB only."""
    from PIL import Image

    _regular_file(path, 64 << 20)
    try:
        with Image.open(path, formats=["PNG"]) as img:  # PIL's own decompression-bomb cap stays on
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{path.name} is {img.width}x{img.height}, over {MAX_PIXELS} pixels")
            if img.mode != "RGB":
                raise ValueError(f"{path.name} is a {img.mode} image, not 8-bit RGB")
            img.load()
            return img.copy()
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path.name} is not a readable PNG ({type(err).__name__})") from None


def rescore_folder(folder: Path, metric: str, app: str = "default") -> tuple[float, int]:
    """(score, number of images) of the final PNGs of ``folder`` under ``metric``, as eval.py computes it."""
    from common.eval import find_final_images, prompt_from_filename

    paths = find_final_images(folder, app)
    if len(paths) > MAX_IMAGES:
        raise ValueError(f"{len(paths)} images, over {MAX_IMAGES}")
    pils = [open_png(p) for p in paths]
    return score_pils(pils, [prompt_from_filename(p, app) for p in paths], metric).score, len(pils)


def reported_check(results: str, items: Path, clip_model: str | None = None, app: str = "default") -> Reported:
    """Re-score ``items/results``'s PNGs with the metric its eval.json names and compare with the reported score."""
    folder = Path(items) / results
    if not (folder / "eval.json").exists() and not (folder / "eval.json").is_symlink():
        return Reported(None, f"No {results}/eval.json in the submission: no reported score to check.")
    try:
        score, per_image, metric = read_eval(folder)
    except (OSError, ValueError) as err:
        return Reported(False, f"{results}/eval.json cannot be used: {err}.")
    if metric not in (TOY_CLIP, REAL_CLIP):  # the handouts score with ViT-B/32 (toy outputs: toy-clip) only
        return Reported(False, f"{results}/eval.json reports {score:.4f} with the CLIP {metric!r}; the handout's "
                               f"score is {REAL_CLIP} ({TOY_CLIP} for toy outputs).", score, per_image, metric)
    if metric == REAL_CLIP and clip_model != REAL_CLIP:
        return Reported(None, f"{results}/eval.json reports {score:.4f} with {REAL_CLIP}; real-CLIP scores are "
                              f"re-scored only when grading with --clip_model {REAL_CLIP}.", score, per_image, metric)
    try:
        _clip(metric)
    except (OSError, ValueError) as err:
        return Reported(None, f"{metric} cannot be loaded here ({str(err)[:120]}): not re-scored.", score,
                        per_image, metric)
    try:
        got, n = rescore_folder(folder, metric, app)
    except (OSError, ValueError) as err:
        return Reported(False, f"The images in {results}/ cannot be re-scored: {err}.", score, per_image, metric)
    ok = abs(got - score) <= REPORT_TOL
    text = (f"{metric} re-score of the {n} submitted images in {results}/: {got:.4f}; {results}/eval.json reports "
            f"{score:.4f} (|delta| {abs(got - score):.1e}, tolerance {REPORT_TOL:g}).")
    return Reported(ok, text if ok else text + " The reported CLIP score does not reproduce: the band points of "
                    "this task are 0.", score, per_image, metric)


def reproduce_check(captions: tuple[str, ...], scored: Scored, reported: Reported,
                    tolerance: float | None) -> tuple[bool | None, str]:
    """--reproduce toy: the reported cosines of ``captions`` (else the reported score) must not exceed the
    end-to-end score ``scored`` of the student's own code by more than the calibrated ``tolerance``."""
    if reported.score is None or reported.metric != TOY_CLIP:
        return None, "Not compared: no reported toy-clip score."
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool):
        return None, "Not compared: the toy bands are not calibrated."
    cosines = dict(reported.per_image)
    stems = [c.replace(" ", "_") for c in captions]
    each = all(s in cosines for s in stems)
    claimed = statistics.fmean(cosines[s] for s in stems) if each else reported.score
    what = f"the reported cosines of these {len(stems)} captions" if each else "the reported score"
    ok = claimed - scored.score <= tolerance
    text = (f"{what}: {claimed:.4f}; the end-to-end run of this code: {scored.score:.4f} (allowed excess "
            f"{tolerance:.3f}, calibrated).")
    return ok, text if ok else text + " Failing to reproduce the reported CLIP score: the band points are 0."
