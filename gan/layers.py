"""StyleGAN2 building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

- Equalized learning rate (Karras et al. 2018, Sec. 4.1): weights are stored ~ N(0, 1) / lr_multiplier and
  scaled at run time by lr_multiplier / sqrt(fan_in).
- Modulated convolution (StyleGAN2 Sec. 2.2, Eq. 1-3): w'_ijk = s_i w_ijk, demodulated by
  sigma_j = sqrt(sum_ik w'_ijk^2 + eps), computed as one grouped convolution over the batch.
- Noise inputs: per-pixel N(0, 1) noise scaled by a learned per-layer strength (initialised to 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.ops import bias_act, downsample2d, setup_filter, upsample2d
from gan.ops.bias_act import ACTIVATIONS


class FullyConnected(nn.Module):
    """y = act(x W^T * gain_w + b * lr_multiplier); equalized learning rate."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", bias_init: float = 0.0,
                 lr_multiplier: float = 1.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in] -> [B, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Discriminator convolution: optional low-pass downsample by 2, conv k x k, bias + activation + clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "lrelu",
                 down: int = 1, bias: bool = True, conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        if self.down > 1:
            x = downsample2d(x, self.resample_filter, down=self.down)
        x = F.conv2d(x, (self.weight * self.weight_gain).to(x.dtype), padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        act_gain = ACTIVATIONS[self.activation][1] * gain  # sqrt(2) for lrelu keeps unit variance
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 0) -> torch.Tensor:
    """StyleGAN2 Eq. 1-3. x [B, I, H, W], weight [O, I, k, k], styles s [B, I] -> [B, O, H, W].

    Computed without per-sample weights: conv(x * s, w) * (1 / sigma) equals conv(x, w' / sigma) because the
    scales are per input / output channel; one ordinary batched conv is much faster than a grouped one.
    """
    B, I = x.shape[:2]
    x = x * styles.to(x.dtype).reshape(B, I, 1, 1)  # modulation (Eq. 1) applied to the input
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)  # [B, O, H, W]
    if demodulate:  # sigma_bo = sqrt(sum_ik (s_bi w_oik)^2 + eps)  (Eq. 3)
        sigma_inv = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B, O]
        x = x * sigma_inv.to(x.dtype).reshape(B, -1, 1, 1)
    return x


def modulated_conv2d_grouped(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                             padding: int = 0) -> torch.Tensor:
    """The literal form of Eq. 1-3 (per-sample weights, one grouped conv); used by tests as the definition."""
    B, I, H, W = x.shape
    O = weight.shape[0]
    w = weight.unsqueeze(0) * styles.reshape(B, 1, I, 1, 1)  # w'_boi = s_bi w_oi   [B, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    w = w.reshape(B * O, I, *weight.shape[2:]).to(x.dtype)
    out = F.conv2d(x.reshape(1, B * I, H, W), w, padding=padding, groups=B)  # [1, B*O, H, W]
    return out.reshape(B, O, *out.shape[2:])


class SynthesisLayer(nn.Module):
    """Affine style -> modulated 3x3 conv (optionally after a 2x low-pass upsample) -> + noise -> lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)  # style s = A(w), starts at 1
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        styles = self.affine(w)  # [B, I]
        if self.up > 1:
            x = upsample2d(x, self.resample_filter, up=self.up)
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, padding=1)  # [B, O, res, res]
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, generator=generator,
                                device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation (StyleGAN2 Fig. 7 'tRGB')."""

    def __init__(self, in_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)
