"""Fréchet distance (FD) of image features for the toy faces, with data-vs-data and noise baselines.

FD(a, b) = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))  (Heusel et al. 2017, Eq. 6, on other features),
computed by :func:`common.eval.frechet.frechet_distance`.

Features: the toy-clip image tower (``common/toy/models/toy-clip``) when it is shipped, else a fixed, seeded,
*untrained* random-conv net (labelled ``random-conv-64``). FDs with different feature nets are not comparable,
and FD is biased at small sample counts, so always compare a model against the baselines at the same n:
``data-vs-data`` (val faces vs held-out test faces) and ``noise-vs-data`` (clipped Gaussian noise vs test faces).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from common.eval.frechet import FeatureFn, compute_features, frechet_distance
from common.registry import load_clip
from common.toy.faces import heldout_faces, render_faces, split_seed

TOY_CLIP_DIR = Path(__file__).resolve().parent / "models" / "toy-clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class RandomConvFeatures(torch.nn.Module):
    """Untrained 4-layer conv net with seeded weights: [B, 3, H, W] in [-1, 1] -> [B, 64] features."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        widths = (3, 32, 64, 128, 64)
        self.convs = torch.nn.ModuleList()
        for c_in, c_out in zip(widths, widths[1:]):
            conv = torch.nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (c_in * 16)) ** 0.5)
                conv.bias.zero_()
            self.convs.append(conv)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False) if x.shape[-1] != 64 else x
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return x.mean(dim=(2, 3))


def load_feature_extractor(device: torch.device | str = "cpu",
                           prefer_toy_clip: bool = True) -> tuple[FeatureFn, str]:
    """``(features_fn, label)``: toy-clip image embeddings when shipped, else :class:`RandomConvFeatures`."""
    if prefer_toy_clip and (TOY_CLIP_DIR / "open_clip_model.safetensors").is_file():
        model = load_clip("toy-clip", device).model
        size = 64
        mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

        @torch.no_grad()
        def clip_features(x: torch.Tensor) -> torch.Tensor:
            x = (x.to(device).float() + 1) / 2  # [-1, 1] -> [0, 1]
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
            return model.encode_image((x - mean) / std).float()

        return clip_features, "toy-clip"
    net = RandomConvFeatures().to(device).eval()
    return (lambda x: net(x.to(device).float())), "random-conv-64 (untrained fallback)"


def noise_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """The 'untrained' baseline: N(0, I) images clipped to [-1, 1]."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def face_fd_report(samples: dict[str, torch.Tensor], n: int | None = None, device: torch.device | str = "cpu",
                   features: tuple[FeatureFn, str] | None = None) -> tuple[dict[str, float], str]:
    """FD vs n held-out test faces for each named sample set, plus ``data-vs-data`` and ``noise-vs-data``.

    Returns ``({name: fd}, feature_label)``. n defaults to the size of the smallest sample set.
    """
    if n is None:
        n = min((len(v) for v in samples.values()), default=256)
    features_fn, label = features or load_feature_extractor(device)
    reference = compute_features(heldout_faces(n, device=device), features_fn)
    sets = dict(samples)
    sets["data-vs-data"] = render_faces(n, split_seed("val"), device=device)
    sets["noise-vs-data"] = noise_images(n).to(device)
    return {name: frechet_distance(compute_features(x[:n], features_fn), reference) for name, x in sets.items()}, label


def data_vs_data_spread(n: int, draws: int, device: torch.device | str = "cpu",
                        features: tuple[FeatureFn, str] | None = None, first: int = 0) -> list[float]:
    """FD against the n test faces of n val faces for each val seed offset in ``first .. draws - 1``.

    Offset 0 is :func:`face_fd_report`'s ``data-vs-data`` (pass ``first=1`` when that is already known); the others
    show how much that baseline moves at this n (at n = 512 with toy-clip features: 0.97-1.54 over eleven draws),
    which a ratio bar should be read against.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if first >= draws:
        return []
    features_fn, _ = features or load_feature_extractor(device)
    reference = compute_features(heldout_faces(n, device=device), features_fn)
    return [frechet_distance(compute_features(render_faces(n, split_seed("val", k), device=device), features_fn),
                             reference) for k in range(first, draws)]
