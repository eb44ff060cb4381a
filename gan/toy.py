"""The toy few-shot set: 100 procedurally drawn 64x64 cartoon faces (``common.toy.faces``), seed fixed.

It stands in for the handout's few-shot dog set (389 AnimalFace dogs at 256 px): small enough that a GAN
over-fits it quickly, which is exactly the regime where R1 and DiffAugment matter.
"""

from __future__ import annotations

import functools

import torch

from common.toy.faces import render_faces

TOY_SIZE = 100
TOY_SEED = 7_000  # fixed: every run, test and shipped checkpoint sees the same 100 faces


def toy_dataset(n: int = TOY_SIZE, resolution: int = 64, seed: int = TOY_SEED) -> torch.Tensor:
    """The few-shot set as uint8 [n, 3, R, R] (what ``gan.dataset.load_images`` returns for a folder)."""
    return _render(n, resolution, seed).clone()


@functools.lru_cache(maxsize=4)
def _render(n: int, resolution: int, seed: int) -> torch.Tensor:
    images = render_faces(n, seed=seed, size=resolution)  # [-1, 1]
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
