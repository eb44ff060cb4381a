"""The handout's prompt lists (package data) and the file-name convention of its evaluation.

``data/wide_image_prompts.json``: 10 prompts, each with 8 ``eval_pos`` = x offsets (px) of 512 x 512 crops of the
512 x 3072 panorama. ``data/ambiguous_image_prompts.json``: 10 (canonical, instance) prompt pairs.
Images are named after their prompt with spaces replaced by underscores; wide crops append ``_<pos>``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

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


def read_json(path: Path, what: str) -> Any:
    """Strict JSON of a user-side file (``config.json``, ``pairs.json``); one-line ValueError when unreadable."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"{path} ({what}) is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} ({what}) is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} ({what}) is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
                         "fix or delete it") from None


def _refuse_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def read_pairs(path: Path) -> list[dict[str, list[str]]]:
    """``pairs.json`` (written by main.py): a list of ``{"prompts": [str, ...], "views": [str, ...]}``; [] when the
    file is absent, a one-line ValueError when it is malformed."""
    if not path.is_file():
        return []
    data = read_json(path, "the illusions' prompt lists")
    ok = isinstance(data, list) and all(
        isinstance(e, dict) and isinstance(e.get("prompts"), list) and e["prompts"]
        and all(isinstance(p, str) and p.strip() for p in e["prompts"])
        and all(isinstance(v, str) for v in e.get("views", [])) for e in data)
    if not ok:
        raise ValueError(f"{path} must be a list of {{\"prompts\": [text, ...], \"views\": [name, ...]}} objects; "
                         "fix or delete it")
    return data
