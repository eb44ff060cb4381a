"""Test helpers for the distillation package: stub UNets with closed forms (the tiny SD folder is the
``tiny_sd_folder`` / ``load_tiny_sd`` fixtures of tests/conftest.py)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch


def sd_alphas_cumprod() -> torch.Tensor:
    """alpha_bar_t of the SD scheduler, from diffusers itself (independent of common.schedules)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod.float()


class StubUNet(torch.nn.Module):
    """Deterministic eps prediction with a closed form: eps(x, t, y) = k(t) x + mean(y) (+ lora_shift if enabled).

    k(t) = t / 1000; mean(y) is the mean of each sample's embedding, broadcast over the latent; the "LoRA" adds
    a trainable scalar ``lora_shift`` while adapters are enabled.
    """

    def __init__(self, channels: int = 4, size: int = 4):
        super().__init__()
        self.config = SimpleNamespace(in_channels=channels, sample_size=size)
        self.lora_shift = torch.nn.Parameter(torch.tensor(0.25))
        self.adapters = False

    def disable_adapters(self) -> None:
        self.adapters = False

    def enable_adapters(self) -> None:
        self.adapters = True

    @staticmethod
    def closed_form(x, t, emb, lora_shift=0.0):
        k = (t.float() / 1000).view(-1, 1, 1, 1)
        return k * x + emb.float().mean(dim=(1, 2)).view(-1, 1, 1, 1) + lora_shift

    def forward(self, x, t, encoder_hidden_states):
        shift = self.lora_shift if self.adapters else 0.0
        return SimpleNamespace(sample=self.closed_form(x, t, encoder_hidden_states, shift))


class DeltaOracleUNet(StubUNet):
    """Exact eps of a data distribution concentrated on x_star: eps = (x_t - sqrt(a_t) x_star) / sqrt(1 - a_t)."""

    def __init__(self, x_star: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__(x_star.shape[1], x_star.shape[2])
        self.x_star, self.alphas_cumprod = x_star, alphas_cumprod

    def forward(self, x, t, encoder_hidden_states):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_star = self.x_star.repeat(x.shape[0] // self.x_star.shape[0], 1, 1, 1)  # CFG doubles the batch
        return SimpleNamespace(sample=(x - a.sqrt() * x_star) / (1 - a).sqrt())


@contextlib.contextmanager
def one_thread():
    """Tiny models run fastest on one intra-op thread (a busy 2-core CPU makes 2 threads 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PointMassUNet(StubUNet):
    """Exact eps of prompt-dependent point masses: uncond (embedding mean 0) -> x_u, cond (mean 1) -> x_c.

    eps(x_t, t, y) = (x_t - sqrt(a_t) x_y) / sqrt(1 - a_t), x_y = x_u + mean(y) (x_c - x_u), so CFG with scale s
    is the exact eps of a point mass at x_u + s (x_c - x_u).
    """

    def __init__(self, x_u: torch.Tensor, x_c: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__(x_u.shape[1], x_u.shape[2])
        self.x_u, self.x_c, self.alphas_cumprod = x_u, x_c, alphas_cumprod

    def forward(self, x, t, encoder_hidden_states):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        sel = encoder_hidden_states.float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        reps = x.shape[0] // self.x_u.shape[0]
        x_y = self.x_u.repeat(reps, 1, 1, 1) + sel * (self.x_c - self.x_u).repeat(reps, 1, 1, 1)
        return SimpleNamespace(sample=(x - a.sqrt() * x_y) / (1 - a).sqrt())
