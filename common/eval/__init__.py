"""Evaluation shared by the assignments: CLIP score of generated images (``python -m common.eval``).

See :mod:`common.eval.clip_score` for how it reproduces the assignments' ``eval.py`` and which of its traps are
fixed.
"""

from common.eval.clip_score import (
    clip_cosine,
    clip_score_folder,
    find_final_images,
    is_final_image,
    prompt_from_filename,
    write_eval_json,
)

__all__ = [
    "clip_cosine",
    "clip_score_folder",
    "find_final_images",
    "is_final_image",
    "prompt_from_filename",
    "write_eval_json",
]
