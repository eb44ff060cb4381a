"""Trusted building blocks of the kaist-a5 (SyncTweedies) cases: seeded inputs, a stub denoiser, and oracle maps.

Nothing here imports the assignment package at import time (the case modules import ``synchronization`` inside
``run``, in the sandboxed worker). The oracles are written independently of the reference solutions: the reverse
step (phi, psi) in float64 from the handout's formulas, the window maps as one-hot matrices built from
``WindowMapping.index`` (set up in ``__init__``, outside every region), the views with ``torch.rot90``/negation.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

import torch
import torch.nn.functional as F

from common.schedules import make_alphas_cumprod

Outputs = dict[str, torch.Tensor]
# Stable Diffusion 2 (scaled_linear, 0.00085..0.012) and DeepFloyd IF (squaredcos_cap_v2): the apps' schedules
SD_ALPHAS_CUMPROD = make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)  # [1000] float32
IF_ALPHAS_CUMPROD = make_alphas_cumprod("squaredcos_cap_v2", 1000)  # [1000] float32
FP16_PARTIAL = ((1e-3, 1.0), (1e-2, 0.5))  # half precision: a few ulps of reordering keep full credit


def generator(seed: int, salt: str) -> torch.Generator:
    """CPU generator for one case: the grading seed mixed with the case id (so cases draw unrelated inputs)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(salt.encode())) % (2**63))


def randint(g: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def timesteps(g: torch.Generator, n: int, include: tuple[int, ...] = ()) -> torch.Tensor:
    """[n] int64 timesteps in [0, 999]: ``include`` first (edge values), the rest random."""
    rest = torch.randint(0, 1000, (n - len(include),), generator=g)
    return torch.cat([torch.tensor(include, dtype=torch.int64), rest])


def step_alpha_bars(g: torch.Generator, alphas_cumprod: torch.Tensor = SD_ALPHAS_CUMPROD,
                    gap: int = 20) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(t, alpha_bar_t, alpha_bar_prev) of a random DDIM step t -> t - gap, as 0-d float32 tensors."""
    t = randint(g, gap, 999)
    return t, alphas_cumprod[t].clone(), alphas_cumprod[t - gap].clone()


def output(x: torch.Tensor) -> torch.Tensor:
    """A returned tensor: detached float64 CPU, contiguous, owning its memory (safetensors refuses shared storage)."""
    return x.detach().to("cpu", torch.float64).contiguous().clone()


# ---------------------------------------------------------------------------------------------------------------
# A stub denoiser


def eps_stub(seed: int, channels: int, out_channels: int | None = None) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A deterministic, non-linear, position-dependent eps_fn(x_t [N, C, H, W], t) -> [N, out_channels, H, W].

    eps = tanh(W x_t + ramp(h, w) t / 1000) with a seeded channel mix W; ``out_channels = 2 C`` mimics DeepFloyd IF
    (eps followed by C learned-variance channels). Computed in float64, returned in x_t's dtype.
    """
    out_channels = out_channels or channels
    weight = randn(generator(seed, "eps-stub"), out_channels, channels) / channels**0.5  # [C_out, C]

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        h, w = x_t.shape[-2:]
        ramp = (torch.linspace(-1, 1, w, dtype=torch.float64).view(1, 1, 1, w)
                + torch.linspace(0, 0.5, h, dtype=torch.float64).view(1, 1, h, 1))  # [1, 1, H, W]
        mixed = torch.einsum("oc,nchw->nohw", weight, x_t.double())  # [N, C_out, H, W]
        return torch.tanh(mixed + ramp * (t / 1000.0)).to(x_t.dtype)

    return eps_fn


# ---------------------------------------------------------------------------------------------------------------
# Oracle reverse step (handout Task 0), float64


def _coef(alpha_bar: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return a if a.ndim == 0 else a.reshape(-1, *([1] * (x.ndim - 1)))


def phi(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """Tweedie: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t); eps_hat's first C channels."""
    x, eps = x_t.double(), eps_hat[:, : x_t.shape[1]].double()  # [N, C, H, W]
    a = _coef(alpha_bar_t, x)
    return ((x - (1 - a).sqrt() * eps) / a.sqrt()).to(x_t.dtype)


def psi(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_bar_t: float | torch.Tensor,
        alpha_bar_prev: float | torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (handout Task 0): sqrt(a_prev) x0 + sqrt((1 - a_prev) / (1 - a_t)) (x_t - sqrt(a_t) x0)."""
    x, x0 = x_t.double(), x0_hat.double()
    a_t, a_prev = _coef(alpha_bar_t, x), _coef(alpha_bar_prev, x)
    return (a_prev.sqrt() * x0 + ((1 - a_prev) / (1 - a_t)).sqrt() * (x - a_t.sqrt() * x0)).to(x_t.dtype)


@contextmanager
def oracle_reverse_step(core) -> Iterator[None]:
    """Run ``synchronization.core`` with the oracle phi/psi, so a one-step case scores ``one_step_process`` alone."""
    with mock.patch.object(core, "compute_tweedie", phi), mock.patch.object(core, "compute_prev_state", psi):
        yield


# ---------------------------------------------------------------------------------------------------------------
# Oracle mappings


class DenseWindows:
    """f / g of a ``WindowMapping``'s windows as a one-hot matrix P [N*wh*ww, H*W]: f = P z, g = P^T x / P^T 1."""

    def __init__(self, windows) -> None:  # a synchronization.windows.WindowMapping (its __init__ has no region)
        self.n, self.window = len(windows), tuple(windows.window)
        self.height, self.width = windows.height, windows.width
        self.onehot = F.one_hot(windows.index.flatten(), self.height * self.width).double()  # [N*wh*ww, H*W]

    def forward_mapping(self, z: torch.Tensor) -> torch.Tensor:  # [1, C, H, W] -> [N, C, wh, ww]
        c = z.shape[1]
        crops = z[0].reshape(c, -1).double() @ self.onehot.T  # [C, N*wh*ww]
        return crops.reshape(c, self.n, *self.window).permute(1, 0, 2, 3).to(z.dtype)

    def inverse_mapping(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, wh, ww] -> [1, C, H, W]
        c = x.shape[1]
        flat = x.permute(1, 0, 2, 3).reshape(c, -1).double()  # [C, N*wh*ww]
        z = flat @ self.onehot / self.onehot.sum(0).clamp(min=1)  # [C, H*W] mean over covering windows
        return z.reshape(1, c, self.height, self.width).to(x.dtype)


class OracleRotateCW:
    """view: a quarter turn clockwise (y down), exactly; inverse_view: a quarter turn counter-clockwise."""

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, -1, (-2, -1))

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, 1, (-2, -1))


class OracleIdentity:
    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    inverse_view = view


class OracleNegate:
    def view(self, x: torch.Tensor) -> torch.Tensor:
        return -x

    inverse_view = view


def oracle_views():
    """identity, rotate_cw, negate as a ``ViewMapping`` (three instances of one canonical image)."""
    from synchronization.views import ViewMapping

    return ViewMapping([OracleIdentity(), OracleRotateCW(), OracleNegate()])
