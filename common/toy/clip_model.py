"""toy-clip: a tiny open_clip CLIP (ViT 64px / 8px patches, 4+4 layers) trained on the shapes domain.

The architecture is an ordinary open_clip model config named ``toy-clip`` (``configs/toy-clip.json``), so
after :func:`register_toy_clip` open_clip builds it by name, and the shipped folder
``common/toy/models/toy-clip/`` (``open_clip_config.json`` + ``open_clip_model.safetensors``) loads with
``open_clip.create_model_and_transforms('local-dir:<folder>')`` or with
``open_clip.create_model_and_transforms('toy-clip', pretrained='<folder>/open_clip_model.safetensors')``.
The tokenizer is open_clip's standard CLIP BPE tokenizer (context 77, padded with id 0). Folders are written
and read by :mod:`common.clip_folder`, which the registry uses too (neither imports the other).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from common.clip_folder import CONFIG_FILE, WEIGHTS_FILE, load_clip_folder, save_clip_folder
from common.hub import check_weight_files

MODEL_NAME = "toy-clip"
CONFIG_PATH = Path(__file__).parent / "configs" / f"{MODEL_NAME}.json"
DEFAULT_FOLDER = Path(__file__).parent / "models" / MODEL_NAME
IMAGE_SIZE = 64
TRAIN_COMMAND = "python -m common.toy train clip --device cuda --out common/toy/models/toy-clip --force"


def model_config() -> dict:
    """The open_clip model config of ``toy-clip`` (embed_dim, quick_gelu, vision_cfg, text_cfg)."""
    return json.loads(CONFIG_PATH.read_text())


def preprocess_config() -> dict:
    """open_clip preprocess config: 64 px, bicubic, CLIP mean/std."""
    return {"size": IMAGE_SIZE, "mode": "RGB", "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


def register_toy_clip() -> None:
    """Make ``open_clip.create_model('toy-clip')`` work (idempotent)."""
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


def create_toy_clip(device: torch.device | str = "cpu") -> open_clip.CLIP:
    """A randomly initialised toy-clip (for training)."""
    register_toy_clip()
    return open_clip.create_model(MODEL_NAME, device=device)


@functools.cache
def get_tokenizer():
    """open_clip's standard CLIP BPE tokenizer with toy-clip's context length (77); built once (~0.5 s)."""
    register_toy_clip()
    return open_clip.get_tokenizer(MODEL_NAME)


def save_toy_clip(model: torch.nn.Module, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` (weights cast to ``dtype``)."""
    return save_clip_folder(model, model_config(), folder, preprocess_config(), dtype=dtype)


def check_folder(folder: str | Path | None = None) -> Path:
    """Resolve the weights folder (default: the shipped one); FileNotFoundError with the fix if it is missing."""
    folder = Path(folder) if folder is not None else DEFAULT_FOLDER
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"toy-clip weights missing: {folder / name} (train them with: {TRAIN_COMMAND})")
    check_weight_files(folder)  # a truncated or pickled weights file: one line now, not after training starts
    return folder


def load_toy_clip(folder: str | Path | None = None, device: torch.device | str = "cpu"):
    """Load toy-clip through open_clip's local-dir loader: ``(model, preprocess, tokenizer)``, model in eval mode.

    ``preprocess`` is open_clip's validation transform (PIL image -> normalised [3, 64, 64] tensor).
    """
    return load_clip_folder(check_folder(folder), device)  # the tokenizer is built once per text config


def images_to_clip_input(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] images in [-1, 1] -> CLIP-normalised [B, 3, 64, 64] (bicubic resize when H, W != 64).

    For 64x64 inputs this equals open_clip's ``preprocess`` applied to the PIL image (up to 8-bit rounding).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    x = (images.float().clamp(-1, 1) + 1) / 2  # [0, 1]
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, 1)
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_text_trimmed(model: open_clip.CLIP, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the tokens cut after the last EOT token (training speed-up).

    Exact, not an approximation: CLIP's text mask is causal and the feature is read at the EOT token, so the
    padding after it never influences the result (tested against ``encode_text``).
    """
    if model.text_pool_type != "argmax" or isinstance(model.text_projection, torch.nn.Linear):
        return model.encode_text(tokens, normalize=normalize)
    length = int(tokens.argmax(dim=1).max()) + 1  # up to the last EOT (EOT has the largest id)
    tokens = tokens[:, :length]  # [K, L]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]  # [K, L, width]
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ model.text_projection  # EOT feature
    return F.normalize(x, dim=-1) if normalize else x
