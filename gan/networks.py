"""StyleGAN2 generator (mapping + skip synthesis) and residual discriminator with minibatch stddev.

Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN": Fig. 7 (skip G, residual D),
Sec. 2.2 (weight demodulation); minibatch standard deviation from Karras et al. 2018 (ProGAN) Sec. 3.
Channels at resolution r are min(channel_base // r, channel_max), so a small ``channel_base`` gives toy
networks that train on a CPU, and channel_base 32768 / channel_max 512 at 256 px is the paper / HW5 size.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from gan.layers import Conv2dLayer, FullyConnected, SynthesisLayer, ToRGB
from gan.ops import setup_filter, upsample2d


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Everything that fixes parameter shapes; stored in checkpoints and compared on load."""

    resolution: int = 64
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    channel_base: int = 1024
    channel_max: int = 64
    mbstd_group: int = 4
    conv_clamp: float | None = 256.0

    def __post_init__(self):
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 4, got {self.resolution}")

    @classmethod
    def default_for(cls, resolution: int, **overrides) -> ArchConfig:
        """Toy size up to 64 px (CPU-friendly), the HW5 low_shot size (fmaps=1, 512-d latents) above."""
        big = resolution >= 128
        base = dict(resolution=resolution, z_dim=512 if big else 128, w_dim=512 if big else 128,
                    channel_base=32768 if big else 1024, channel_max=512 if big else 64)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z -> w: pixel-norm then an MLP (lr multiplier 0.01); tracks w_avg for the truncation trick."""

    def __init__(self, cfg: ArchConfig, num_ws: int, w_avg_beta: float = 0.995):
        super().__init__()
        self.num_ws, self.w_avg_beta = num_ws, w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(FullyConnected(a, b, activation="lrelu", lr_multiplier=0.01)
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z)  # [B, z_dim]
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up-conv) -> conv -> tRGB, img = up(img) + tRGB(x)."""

    def __init__(self, cfg: ArchConfig, res: int):
        super().__init__()
        out_ch = cfg.channels(res)
        self.res = res
        if res == 4:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
            self.conv0 = None
        else:
            in_ch = cfg.channels(res // 2)
            self.conv0 = SynthesisLayer(in_ch, out_ch, cfg.w_dim, res, up=2, conv_clamp=cfg.conv_clamp)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, res, conv_clamp=cfg.conv_clamp)
        self.torgb = ToRGB(out_ch, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.num_ws = 2 if res == 4 else 3  # ws consumed: conv0 (if any), conv1, torgb (shared with next conv0)

    def forward(self, x, img, ws, noise_mode="random", generator=None):
        if self.conv0 is None:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, generator)
            y = self.torgb(x, ws[:, 1])
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)
            x = self.conv1(x, ws[:, 1], noise_mode, generator)
            y = self.torgb(x, ws[:, 2])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class Generator(nn.Module):
    """G(z) = synthesis(mapping(z)); images [B, 3, R, R] roughly in [-1, 1]."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(SynthesisBlock(cfg, res) for res in cfg.block_resolutions)
        self.num_ws = 2 * len(self.blocks)  # 2 per resolution (the tRGB w is shared with the next conv0)
        self.mapping = MappingNetwork(cfg, self.num_ws)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random", generator=None) -> torch.Tensor:
        assert ws.shape[1:] == (self.num_ws, self.cfg.w_dim), ws.shape
        x = img = None
        for i, block in enumerate(self.blocks):
            start = 0 if i == 0 else 2 * i - 1
            x, img = block(x, img, ws[:, start:start + block.num_ws], noise_mode, generator)
        return img

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "random",
                generator=None) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode, generator)


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the std over groups of samples, averaged over C, H, W (ProGAN Sec. 3)."""
    B, C, H, W = x.shape
    G = min(group_size, B)
    if B % G:
        raise ValueError(f"batch size {B} must be divisible by the minibatch-std group size {G}")
    y = x.reshape(G, B // G, C, H, W)  # sample b belongs to group b % (B // G)
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group  [B/G, C, H, W]
    y = (y + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [B/G]
    y = y.reshape(1, B // G, 1, 1, 1).expand(G, -1, 1, H, W).reshape(B, 1, H, W)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsamples), 1x1 downsampling skip, both scaled by sqrt(1/2)."""

    def __init__(self, in_ch: int, out_ch: int, conv_clamp):
        super().__init__()
        self.conv0 = Conv2dLayer(in_ch, in_ch, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_ch, out_ch, 3, down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(in_ch, out_ch, 1, activation="linear", down=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return x + y


class Discriminator(nn.Module):
    """D(x) -> logits [B]: fromRGB, residual blocks down to 4x4, minibatch std, conv, two FC layers."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        resolutions = cfg.block_resolutions[::-1]  # R, R/2, ..., 4
        self.fromrgb = Conv2dLayer(3, cfg.channels(cfg.resolution), 1, conv_clamp=cfg.conv_clamp)
        self.blocks = nn.ModuleList(DiscriminatorBlock(cfg.channels(r), cfg.channels(r // 2), cfg.conv_clamp)
                                    for r in resolutions[:-1])
        ch4 = cfg.channels(4)
        self.conv = Conv2dLayer(ch4 + 1, ch4, 3, conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnected(ch4 * 16, ch4, activation="lrelu")
        self.out = FullyConnected(ch4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        R = self.cfg.resolution
        if img.shape[1:] != (3, R, R):
            raise ValueError(f"discriminator expects [B, 3, {R}, {R}] images, got {tuple(img.shape)}")
        x = self.fromrgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_stddev(x, self.cfg.mbstd_group))  # [B, ch4, 4, 4]
        return self.out(self.fc(x.flatten(1))).squeeze(1)  # [B]


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """Parameters: ema <- beta * ema + (1 - beta) * model; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def ema_beta(batch: int, ema_kimg: float) -> float:
    """Per-step decay for a half-life of ``ema_kimg`` thousand images: 0.5 ** (batch / (ema_kimg * 1000))."""
    return 0.5 ** (batch / max(ema_kimg * 1000, 1e-8))
