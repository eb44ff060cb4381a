"""Test helpers for the distillation package: a tiny random Stable Diffusion folder and stub UNets."""

from __future__ import annotations

import contextlib
import functools
import json
import string
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

TINY_SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    tokens = ["!", "<|startoftext|>", "<|endoftext|>"] + list(string.ascii_lowercase) + \
        [c + "</w>" for c in string.ascii_lowercase]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!",
                         model_max_length=16)


def tiny_sd_pipeline(tmp: Path, seed: int = 0):
    """A random StableDiffusionPipeline: 16x16 pixels <-> 8x8x4 latents, 16-dim text, tiny UNet (CPU, fp32)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, norm_num_groups=4, cross_attention_dim=16,
                                attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8), norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, layers_per_block=1, sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2,
                                                max_position_embeddings=16, bos_token_id=1, eos_token_id=2,
                                                pad_token_id=0))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=_tokenizer(tmp / "_tok"),
                                   unet=unet, scheduler=DDIMScheduler(**TINY_SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return pipe


def save_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline as a diffusers folder (safetensors) that ``--model <folder>`` loads."""
    pipe = tiny_sd_pipeline(folder.parent, seed)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def sd_alphas_cumprod() -> torch.Tensor:
    """alpha_bar_t of the SD scheduler, from diffusers itself (independent of common.schedules)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**TINY_SD_SCHEDULER).alphas_cumprod.float()


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


@functools.lru_cache(maxsize=1)
def tiny_sd_folder() -> Path:
    """The tiny random SD folder, written once per test session."""
    root = Path(tempfile.mkdtemp(prefix="tiny-sd-"))
    return save_tiny_sd(root / "tiny-sd")


def load_tiny_pipe():
    """A fresh pipeline from the tiny folder (fresh, because VSD adds a LoRA adapter to the UNet)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(tiny_sd_folder()), use_safetensors=True)


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
