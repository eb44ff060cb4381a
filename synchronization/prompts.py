"""The handout's prompt lists (package data) and the file-name convention of its evaluation.

``data/wide_image_prompts.json``: 10 prompts, each with 8 ``eval_pos`` = x offsets (px) of 512 x 512 crops of the
512 x 3072 panorama. ``data/ambiguous_image_prompts.json``: 10 (canonical, instance) prompt pairs.
Images are named after their prompt with spaces replaced by underscores; wide crops append ``_<pos>``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


@lru_cache(maxsize=1)
def wide_prompts() -> dict[str, list[int]]:
    """prompt -> eval_pos (handout order)."""
    data = json.loads((DATA_DIR / "wide_image_prompts.json").read_text(encoding="utf-8"))
    return {row["prompt"]: list(row["eval_pos"]) for row in data["prompts"]}


@lru_cache(maxsize=1)
def ambiguous_pairs() -> list[tuple[str, str]]:
    """(canonical prompt, instance prompt) pairs."""
    data = json.loads((DATA_DIR / "ambiguous_image_prompts.json").read_text(encoding="utf-8"))
    return [(row["canonical"], row["instance"]) for row in data["pairs"]]


def prompt_to_name(prompt: str) -> str:
    """File stem of a prompt: spaces -> underscores (path separators become '-')."""
    return "_".join(prompt.split()).replace("/", "-").replace("\\", "-")
