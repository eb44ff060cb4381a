"""Tiny random diffusers models saved as local folders (the registry loads them like the toy models)."""

from __future__ import annotations

import json

import pytest
import torch


def _write_char_tokenizer(folder):
    """A CLIPTokenizer with only byte-level symbols (no merges): fast to load, ids < 514, pads with '!' (id 0)."""
    from open_clip.tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "!"}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    return len(tokens)


def _text_parts(folder):
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = _write_char_tokenizer(folder / "tokenizer")
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                            bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0)
    CLIPTextModel(config).save_pretrained(folder / "text_encoder", safe_serialization=True)


def _tiny_unet(sample_size: int, in_channels: int, out_channels: int, **kw):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(1)
    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(8, 16),
                                layers_per_block=1, cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
                                **kw)


SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon"}


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """StableDiffusionPipeline folder: 8x8x4 latents (window 8), VAE factor 2 (16 px images)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_sd")
    _text_parts(folder)
    torch.manual_seed(2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8], layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
                                   tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                                   unet=_tiny_unet(8, 4, 4), scheduler=DDIMScheduler(**SCHEDULER),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_pixel_folder(tmp_path_factory):
    """Pixel text-to-image folder (16x16x3, IF-like 6 output channels = eps + variance)."""
    from diffusers import DDIMScheduler

    folder = tmp_path_factory.mktemp("tiny_pixel")
    _text_parts(folder)
    _tiny_unet(16, 3, 6).save_pretrained(folder / "unet", safe_serialization=True)
    DDIMScheduler(**{**SCHEDULER, "beta_schedule": "squaredcos_cap_v2", "steps_offset": 0}).save_pretrained(
        folder / "scheduler")
    index = {"_class_name": "ToyPixelPipeline", "_diffusers_version": "0.32.0",
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
