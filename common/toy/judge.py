"""Zero-shot judge for the shapes domain: toy-clip scores an image against all 168 valid captions.

Each image gets the caption with the highest CLIP similarity among ``a {color} {shape} on a {background}
background`` (background != color), i.e. CLIP's zero-shot classification (Radford et al. 2021, Sec. 3.1.2)
over the joint label set; its colour, shape and background are the predictions. This is a learned judge, not a
pixel-level one: it sees what toy-clip's image encoder sees, so a blob halfway between two shapes can pass as
either (the pixel-level check, palette colours and an IoU shape fit, is :mod:`common.toy.shape_judge`). The
quality bars of the toy world (toy-clip accuracy, toy-sd samples, ...) are measured with this judge.

Images are tensors [B, 3, H, W] in [-1, 1] (resized to 64 px when needed) or lists of PIL images.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from common.images import pil_to_tensor
from common.toy import shapes
from common.toy.clip_model import check_folder, encode_text_trimmed, images_to_clip_input, load_toy_clip

ATTRIBUTES = ("color", "shape", "background")


def caption_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """[168, 3] long tensor: (color, shape, background) indices of :func:`shapes.all_captions`."""
    rows = [(shapes.COLORS.index(c), shapes.SHAPES.index(s), shapes.COLORS.index(b))
            for c, s, b in shapes.all_attributes()]
    return torch.tensor(rows, dtype=torch.long, device=device)


@torch.no_grad()
def caption_features(model, tokenizer, device: torch.device | str = "cpu") -> torch.Tensor:
    """L2-normalised text embeddings of all valid captions: [168, D]."""
    tokens = tokenizer(shapes.all_captions()).to(device)
    return encode_text_trimmed(model, tokens).float()  # == model.encode_text(tokens, normalize=True)


@torch.no_grad()
def caption_logits(model, text_features: torch.Tensor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Cosine similarities [B, 168] between images ([-1, 1]) and the caption embeddings."""
    device = text_features.device
    out = []
    for chunk in images.split(batch_size):
        x = images_to_clip_input(chunk.to(device))
        out.append(model.encode_image(x, normalize=True).float() @ text_features.T)
    return torch.cat(out)


def predict_indices(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Joint argmax over captions -> attribute indices {'color', 'shape', 'background'}: long [B] each."""
    table = caption_table(logits.device)[logits.argmax(dim=1)]  # [B, 3]
    return {name: table[:, i] for i, name in enumerate(ATTRIBUTES)}


def attribute_accuracy(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-attribute accuracy and ``all`` (every attribute right) for index dicts like :func:`predict_indices`."""
    hits = {k: pred[k].cpu() == target[k].cpu() for k in ATTRIBUTES}
    acc = {k: v.float().mean().item() for k, v in hits.items()}
    acc["all"] = (hits["color"] & hits["shape"] & hits["background"]).float().mean().item()
    return acc


# ---------------------------------------------------------------------------------------------------------------
# The judge with the shipped weights (cached per folder and device)


@functools.lru_cache(maxsize=4)
def _judge(folder: str, device: str):
    model, _, tokenizer = load_toy_clip(folder, device=device)
    return model, caption_features(model, tokenizer, device)


def _as_tensor(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images if images.ndim == 4 else images.unsqueeze(0)
    return torch.stack([pil_to_tensor(img) for img in images])  # PIL -> [B, 3, H, W] in [-1, 1]


def predict(images, folder: str | Path | None = None, device: torch.device | str | None = None,
            batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Attribute indices predicted by the shipped toy-clip (see :func:`predict_indices`)."""
    images = _as_tensor(images)
    device = str(device if device is not None else images.device)
    model, text_features = _judge(str(check_folder(folder).resolve()), device)
    return predict_indices(caption_logits(model, text_features, images, batch_size))


def classify(images, folder: str | Path | None = None, device: torch.device | str | None = None,
             batch_size: int = 256) -> dict[str, list[str]]:
    """Predicted names: ``{'color': [...], 'shape': [...], 'background': [...]}``, one entry per image."""
    pred = predict(images, folder, device, batch_size)
    names = {"color": shapes.COLORS, "shape": shapes.SHAPES, "background": shapes.COLORS}
    return {k: [names[k][i] for i in pred[k].tolist()] for k in ATTRIBUTES}


def targets_to_indices(targets: Sequence[shapes.ShapeSpec | str]) -> dict[str, torch.Tensor]:
    """Specs or captions -> attribute index tensors (ValueError on text that is not a shapes caption)."""
    rows = []
    for t in targets:
        color, shape, background = (t.color, t.shape, t.background) if isinstance(t, shapes.ShapeSpec) \
            else shapes.parse_caption(t)
        rows.append((shapes.COLORS.index(color), shapes.SHAPES.index(shape), shapes.COLORS.index(background)))
    table = torch.tensor(rows, dtype=torch.long).view(-1, 3)
    return {name: table[:, i] for i, name in enumerate(ATTRIBUTES)}


def fully_correct(images, targets: Sequence[shapes.ShapeSpec | str], folder: str | Path | None = None,
                  device: torch.device | str | None = None, batch_size: int = 256) -> torch.Tensor:
    """Bool [B] (on CPU): colour, shape and background all judged equal to the spec or caption."""
    images = _as_tensor(images)
    if len(targets) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(targets)} targets")
    target = targets_to_indices(targets)
    pred = {k: v.cpu() for k, v in predict(images, folder, device, batch_size).items()}
    return (pred["color"] == target["color"]) & (pred["shape"] == target["shape"]) & \
        (pred["background"] == target["background"])
