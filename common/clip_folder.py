"""open_clip model folders: the one writer and reader of ``open_clip_config.json`` + ``open_clip_model.safetensors``.

The format is open_clip's Hub folder format (a ``{"model_cfg", "preprocess_cfg"}`` JSON next to safetensors
weights), which ``open_clip.create_model_and_transforms('local-dir:<folder>')`` loads. Both
:mod:`common.registry` (any CLIP folder, including toy-clip) and :mod:`common.toy.clip_model` (training and
judging toy-clip) use this module; it imports neither of them, so the dependency is one-way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
_TOKENIZERS: dict[str, Any] = {}  # canonical JSON of a text_cfg -> its open_clip tokenizer


def save_clip_folder(model: torch.nn.Module, model_cfg: dict[str, Any], folder: str | os.PathLike,
                     preprocess_cfg: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write an open_clip model in open_clip's Hub folder format: ``open_clip_config.json``
    (``{"model_cfg", "preprocess_cfg"}``) + ``open_clip_model.safetensors`` (weights cast to ``dtype`` if given).

    ``preprocess_cfg`` defaults to OpenAI's CLIP mean/std, bicubic, shortest-side resize to the model's size.
    """
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    preprocess.update(preprocess_cfg or {})
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def folder_tokenizer(folder: str | os.PathLike) -> Any:
    """open_clip's tokenizer for a CLIP folder. Built once per text config (~0.5 s for the BPE tokenizer), unless
    the config names a Hugging Face tokenizer, whose files live in the folder itself."""
    import open_clip

    folder = Path(folder)
    text_cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["model_cfg"].get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.get_tokenizer(f"local-dir:{folder}")
    key = json.dumps(text_cfg, sort_keys=True)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = open_clip.get_tokenizer(f"local-dir:{folder}")
    return _TOKENIZERS[key]


def load_clip_folder(folder: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Any, Any, Any]:
    """``(model in eval mode, eval preprocess (PIL -> tensor), tokenizer)`` of an open_clip folder.

    Callers check the files first (the registry and toy-clip word their own one-line errors).
    """
    import open_clip

    folder = Path(folder)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
    return model.eval(), preprocess, folder_tokenizer(folder)
