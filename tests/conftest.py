"""Fixtures shared by every test folder: a tiny random Stable Diffusion pipeline, saved once per session.

``tiny_sd_folder``: a diffusers folder (safetensors) that ``--model <folder>`` and ``common.registry.load_sd``
load like the toy models: 16x16 pixels <-> 8x8x4 latents (VAE factor 2), a 16-dim CLIP text encoder with a
letters-only tokenizer (16 tokens), a two-level UNet with cross-attention and SD's DDIM scheduler.
``load_tiny_sd()``: a fresh pipeline from that folder (fresh, because VSD adds a LoRA adapter to the UNet).
A folder's own conftest.py may define a fixture of the same name for a model of another shape.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

TINY_SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def _letters_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    tokens = ["!", "<|startoftext|>", "<|endoftext|>"] + list(string.ascii_lowercase) + \
        [c + "</w>" for c in string.ascii_lowercase]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!",
                         model_max_length=16)


def make_tiny_sd_pipeline(tmp: Path, seed: int = 0):
    """A random StableDiffusionPipeline (CPU, fp32); ``tmp`` receives the tokenizer files."""
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
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=_letters_tokenizer(tmp / "_tok"),
                                   unet=unet, scheduler=DDIMScheduler(**TINY_SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory) -> Path:
    """The tiny random SD pipeline as a diffusers folder, written once per test session."""
    root = tmp_path_factory.mktemp("tiny-sd")
    make_tiny_sd_pipeline(root).save_pretrained(str(root / "tiny-sd"), safe_serialization=True)
    return root / "tiny-sd"


@pytest.fixture
def load_tiny_sd(tiny_sd_folder):
    """``load_tiny_sd()`` -> a fresh StableDiffusionPipeline from :func:`tiny_sd_folder`."""
    from diffusers import StableDiffusionPipeline

    return lambda: StableDiffusionPipeline.from_pretrained(str(tiny_sd_folder), use_safetensors=True)
