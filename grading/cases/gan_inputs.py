"""Trusted building blocks of the umich-hw5-gan cases: seeded inputs, tiny stub networks, and cutout box readers.

Nothing here imports ``gan`` at import time (the case modules import it inside ``run``, in the sandboxed worker),
and nothing calls a helper that ``umich-hw5-gan`` strips from ``common`` (``common.r1``, the random cutout of
``common.diffaugment``). The stub networks are float64 and deterministic given their generator, so the reference and
a student see bit-identical inputs; each D treats every sample on its own (no minibatch-std), which the batched
R1 gradient ``grad(sum_b D(x_b), x)`` relies on.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from unittest import mock

import torch
import torch.nn.functional as F

from grading.case import Case

Outputs = dict[str, torch.Tensor]


def generator(seed: int, salt: str) -> torch.Generator:
    """CPU generator for one case: the grading seed mixed with the case's salt (so cases draw unrelated inputs)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(salt.encode())) % (2**63))


def randint(g: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def choice(g: torch.Generator, values: tuple[int, ...]) -> int:
    return values[randint(g, 0, len(values) - 1)]


def output(x: torch.Tensor | float | bool) -> torch.Tensor:
    """A returned tensor: detached float64 CPU, contiguous, owning its memory (safetensors refuses shared storage)."""
    return torch.as_tensor(x).detach().to("cpu", torch.float64).contiguous().clone()


def flag(ok: bool | torch.Tensor) -> torch.Tensor:
    """A property check as a 0-d float64 tensor, 1.0 when it holds (the reference's value), 0.0 otherwise.

    Only in a ``Case.derive`` (the trusted parent): a flag built in the worker, after student code ran, can be faked.
    """
    return output(1.0 if bool(ok) else 0.0)


def scale_points(cases: tuple[Case, ...], total: float) -> tuple[Case, ...]:
    """The cases with their ``points`` (relative weights) rescaled to sum to ``total`` (the task's points)."""
    weight = sum(c.points for c in cases)
    return tuple(replace(c, points=total * c.points / weight) for c in cases)


# ---------------------------------------------------------------------------------------------------------------
# Stub networks


class StubG:
    """A linear "StyleGAN2": mapping z [B, z_dim] -> ws [B, num_ws, w_dim], synthesis ws -> images in (-1, 1).

    Only the two calls ``StyleGAN2Loss.run_G`` makes (``mapping(z, update_w_avg=...)`` and
    ``synthesis(ws, generator=...)``); float64, deterministic (the synthesis draws no noise).
    """

    def __init__(self, g: torch.Generator, img_shape: tuple[int, int, int], z_dim: int = 6, w_dim: int = 5,
                 num_ws: int = 3):
        self.z_dim, self.w_dim, self.num_ws, self.img_shape = z_dim, w_dim, num_ws, img_shape
        self.mapping_weight = torch.randn(z_dim, w_dim, generator=g, dtype=torch.float64) / math.sqrt(z_dim)
        self.synthesis_weight = torch.randn(w_dim, math.prod(img_shape), generator=g, dtype=torch.float64)

    def mapping(self, z: torch.Tensor, update_w_avg: bool = False) -> torch.Tensor:
        w = z.to(torch.float64) @ self.mapping_weight  # [B, w_dim]
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]

    def synthesis(self, ws: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        flat = torch.tanh(ws.mean(dim=1) @ self.synthesis_weight / math.sqrt(self.w_dim))  # [B, C*H*W]
        return flat.view(-1, *self.img_shape)  # [B, C, H, W]


class RecordingD(torch.nn.Module):
    """D(x)_b = 3 tanh(<w, x_b> / sqrt(CHW)) + bias; keeps a detached copy of every input it is called on.

    ``seen`` lists the inputs in call order, so a case can check which images the real and fake terms saw.
    """

    def __init__(self, g: torch.Generator, img_shape: tuple[int, int, int]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(*img_shape, generator=g, dtype=torch.float64))  # [C, H, W]
        self.bias = torch.nn.Parameter(torch.tensor(0.25, dtype=torch.float64))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B]
        self.seen.append(x.detach().clone())
        score = (x * self.weight).sum(dim=[1, 2, 3]) / math.sqrt(self.weight.numel())
        return 3 * torch.tanh(score) + self.bias


class ConvD(torch.nn.Module):
    """D(x)_b = sum_{k,h,w} v_k softplus(conv3x3(x_b)_{k,h,w}) / sqrt(HW) + bias: smooth and twice differentiable,
    with every parameter except ``bias`` inside grad_x D (so R1's parameter gradients test ``create_graph``)."""

    def __init__(self, g: torch.Generator, channels: int, features: int = 4):
        super().__init__()
        self.conv_weight = torch.nn.Parameter(
            torch.randn(features, channels, 3, 3, generator=g, dtype=torch.float64) / math.sqrt(9 * channels))
        self.conv_bias = torch.nn.Parameter(torch.randn(features, generator=g, dtype=torch.float64) * 0.5)
        self.head = torch.nn.Parameter(torch.randn(features, generator=g, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B]
        feat = F.softplus(F.conv2d(x, self.conv_weight, self.conv_bias, padding=1))  # [B, K, H, W]
        return torch.einsum("bkhw,k->b", feat, self.head) / math.sqrt(x.shape[2] * x.shape[3]) + self.bias


def reference_discriminator_loss(real_logits: torch.Tensor, gen_logits: torch.Tensor) -> torch.Tensor:
    """Handout Eq. (2), per sample: softplus(-D(x)) + softplus(D(G(z))) (the cases' own copy of the formula)."""
    return F.softplus(-real_logits) + F.softplus(gen_logits)


@contextmanager
def oracle_discriminator_loss(loss_module) -> Iterator[None]:
    """Run ``gan.loss`` with the formula above in place of ``discriminator_loss``, so a D-main case scores the
    ``gan-d-real`` region alone (a wrong or missing ``gan-d-loss`` does not cost its points twice)."""
    with mock.patch.object(loss_module, "discriminator_loss", reference_discriminator_loss):
        yield


# ---------------------------------------------------------------------------------------------------------------
# Cutout boxes read back from the output


def positive_images(g: torch.Generator, batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Images in [1, 2) [B, C, H, W] float64: a cutout's zeros are exactly its box."""
    return torch.rand(batch, channels, height, width, generator=g, dtype=torch.float64) + 1


def zero_boxes(x: torch.Tensor, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each image's zeroed pixels and their bounding box, for ``out = cutout(x)`` with x > 0.

    Returns ``is_box`` [B] (the zeros are a non-empty filled rectangle, the same in every channel, and every other
    pixel equals x), and ``top``, ``left``, ``h``, ``w`` [B] of the bounding box (int64).
    """
    B, _, H, W = out.shape
    zero_any, zero_all = (out == 0).any(dim=1), (out == 0).all(dim=1)  # [B, H, W]
    rows, cols = zero_any.any(dim=2), zero_any.any(dim=1)  # [B, H], [B, W]
    r_idx, c_idx = torch.arange(H), torch.arange(W)
    top = torch.where(rows, r_idx, H).amin(dim=1)  # [B]
    left = torch.where(cols, c_idx, W).amin(dim=1)
    h = torch.where(rows, r_idx, -1).amax(dim=1) - top + 1  # [B] (<= 0 for an image without zeros)
    w = torch.where(cols, c_idx, -1).amax(dim=1) - left + 1
    box = ((r_idx.view(1, H, 1) >= top.view(B, 1, 1)) & (r_idx.view(1, H, 1) < (top + h).view(B, 1, 1))
           & (c_idx.view(1, 1, W) >= left.view(B, 1, 1)) & (c_idx.view(1, 1, W) < (left + w).view(B, 1, 1)))
    kept = (out == x).all(dim=1)  # [B, H, W] pixels passed through unchanged
    is_box = ((h > 0) & (w > 0) & (zero_any == box).flatten(1).all(dim=1) & (zero_all == box).flatten(1).all(dim=1)
              & (kept | box).flatten(1).all(dim=1))
    return {"is_box": is_box, "top": top, "left": left, "h": h, "w": w}
