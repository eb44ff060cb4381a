"""Fréchet distance between Gaussians fitted to two sets of features (FID and its toy variants).

FD(a, b) = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))  (Heusel et al. 2017, Eq. 6; Dowson & Landau 1982).

The features are the caller's (toy-clip image embeddings, an untrained conv net, Inception): FDs computed with
different feature nets or at different sample counts are not comparable (FD is biased at small n). Used by the
GAN FID (:mod:`gan.metrics`) and the toy-faces DDPM metrics (:mod:`common.toy.fid`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def compute_features(images: torch.Tensor, features_fn: FeatureFn, batch_size: int = 256) -> torch.Tensor:
    """Features of a batch of images [N, 3, H, W], as float64 [N, D] on the CPU."""
    return torch.cat([features_fn(images[i : i + batch_size]).double().cpu()
                      for i in range(0, len(images), batch_size)])


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix through its eigendecomposition (negative round-off clamped to 0)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """FD between Gaussians fitted to two feature sets [N, D] (float64 math)."""
    a, b = feats_a.double(), feats_b.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Fréchet distance needs at least 2 samples per set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)  # [D]
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)  # [D, D]
    root_a = _sqrtm_psd(cov_a)
    # tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric PSD matrix
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)
