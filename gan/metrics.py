"""FID for GAN runs, offline: ``common.toy.fid`` features (toy-clip image embeddings when shipped, else a fixed
untrained random-conv net) and its Frechet distance (Heusel et al. 2017, Eq. 6).

The label printed next to every number names the feature net; values are only comparable across runs with the
same label and the same sample counts (FID is biased at small n), never with Inception FIDs from papers.
"""

from __future__ import annotations

import functools

import torch

from common.eval.frechet import compute_features, frechet_distance
from common.toy.fid import load_feature_extractor


@functools.lru_cache(maxsize=4)
def _cached_feature_net(device: str):
    return load_feature_extractor(device)


def load_feature_net(device: torch.device):
    """(features_fn, label) -- see ``common.toy.fid.load_feature_extractor``; loaded once per device."""
    return _cached_feature_net(str(device))


@torch.no_grad()
def generated_images(G: torch.nn.Module, n: int, device, batch: int = 50, seed: int = 123) -> torch.Tensor:
    """n images from G with fixed latents and noise (seeded), so runs are comparable: [n, 3, R, R] on the CPU."""
    gen = torch.Generator(device).manual_seed(seed)
    images = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.cfg.z_dim, generator=gen, device=device)
        images.append(G(z, generator=gen).clamp(-1, 1).cpu())
    return torch.cat(images)


def fid_against(real_images: torch.Tensor, G: torch.nn.Module, n: int, device, feature_net) -> float:
    """FID between ``real_images`` [N, 3, R, R] in [-1, 1] and n samples of G."""
    features_fn, _ = feature_net
    real = compute_features(real_images, features_fn)
    fake = compute_features(generated_images(G, n, device), features_fn)
    return frechet_distance(real, fake)
