"""The shipped starting checkpoint: small, loads with its own architecture, and generates faces, not noise."""

import torch

from gan.dataset import to_float
from gan.generate import load_generator
from gan.make_toy_checkpoint import SHIPPED
from gan.metrics import fid_against, load_feature_net
from gan.toy import toy_dataset


def test_shipped_checkpoint_is_small_and_loads():
    assert SHIPPED.is_file(), "run `python -m gan.make_toy_checkpoint --device cuda` to create it"
    assert SHIPPED.stat().st_size < 3 * 2**20
    G = load_generator(SHIPPED, torch.device("cpu")).eval()
    assert G.cfg.resolution == 64


def test_shipped_checkpoint_beats_noise_in_fid():
    device = torch.device("cpu")
    G = load_generator(SHIPPED, device).eval()
    reals = to_float(toy_dataset())  # the 100 toy few-shot faces, [100, 3, 64, 64] in [-1, 1]
    features = load_feature_net(device)
    fid_g = fid_against(reals, G, 500, device, features)  # 500 fakes, as in training logs

    class Noise(torch.nn.Module):  # a "generator" of smooth colour noise, same interface as G
        cfg = G.cfg

        def forward(self, z, generator=None):
            low = torch.randn(z.shape[0], 3, 8, 8, generator=generator, device=z.device)
            return torch.nn.functional.interpolate(low, size=64, mode="bilinear").clamp(-1, 1)

    fid_noise = fid_against(reals, Noise(), 500, device, features)
    assert fid_g < 0.5 * fid_noise, (fid_g, fid_noise)
    images = G(torch.randn(8, G.cfg.z_dim, generator=torch.Generator().manual_seed(0)))
    assert images.std(dim=0).mean() > 0.05  # different latents give different faces
