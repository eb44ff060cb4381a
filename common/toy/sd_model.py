"""toy-sd: a tiny latent text-to-image model in the exact Stable Diffusion folder format.

The folder ``common/toy/models/toy-sd/`` is what ``diffusers.StableDiffusionPipeline.from_pretrained`` expects
(Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"):

- ``tokenizer/``: a ``CLIPTokenizer`` whose ``vocab.json`` / ``merges.txt`` are rebuilt from open_clip's bundled
  ``bpe_simple_vocab_16e6.txt.gz``, padded with ``"!"`` (id 0, as in SD 2), so its ids equal open_clip's;
- ``text_encoder/``: the toy-clip text tower converted exactly to a ``CLIPTextModel`` (frozen, as in SD);
- ``vae/``: a tiny ``AutoencoderKL``, 64x64x3 images <-> 16x16x4 latents (downsampling factor 4);
- ``unet/``: a tiny ``UNet2DConditionModel`` with cross-attention on the text encoder's hidden states;
- ``scheduler/``: ``DDIMScheduler`` with SD's scaled_linear betas (0.00085 -> 0.012, 1000 steps).

Weights are stored as fp16 safetensors; ``from_pretrained(..., torch_dtype=torch.float32)`` upcasts them.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import open_clip
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from common.runs import write_json_atomic

MODEL_NAME = "toy-sd"
DEFAULT_FOLDER = Path(__file__).parent / "models" / MODEL_NAME
TRAIN_COMMAND = "python -m common.toy train sd --device cuda --out common/toy/models/toy-sd --force"
IMAGE_SIZE = 64  # pixels
LATENT_SIZE = 16  # latent side: IMAGE_SIZE / 4
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 0  # open_clip pads with 0, the id of "!" (SD 2 does the same)

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,  # two downsamplings: 64 -> 32 -> 16
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 1.0,  # set after training so scaled latents have ~unit std
}

UNET_CONFIG = {
    "sample_size": LATENT_SIZE,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # 16x16 -> 8x8
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 96],
    "layers_per_block": 1,
    "cross_attention_dim": 64,  # = text encoder hidden size
    "attention_head_dim": 4,  # diffusers' legacy name: this is the number of heads
    "norm_num_groups": 32,
}

# SD's noise schedule and DDIM settings (v1/v2 scheduler_config.json).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer: open_clip's BPE as CLIPTokenizer files


def bpe_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's ``vocab.json`` dict and merge list from open_clip's gzipped BPE file.

    Same construction as open_clip's ``SimpleTokenizer``: 256 byte symbols, the same with ``</w>``, one token per
    merge (48,894 of them), then the two special tokens; HF names them ``<|startoftext|>`` / ``<|endoftext|>``.
    """
    bpe_path = Path(bpe_path) if bpe_path is not None else Path(open_clip.tokenizer.default_bpe())
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # line 0 is a version header
    symbols = list(open_clip.tokenizer.bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab["<|endoftext|>"] != EOT_ID:
        raise ValueError(f"unexpected BPE file {bpe_path}: built {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def write_tokenizer(folder: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = bpe_vocab_and_merges()
    vocab_text = json.dumps(vocab, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    (folder / "vocab.json").write_text(vocab_text, "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "!"}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": CONTEXT_LENGTH, "do_lower_case": True,
              "clean_up_tokenization_spaces": True, "errors": "replace", **special}
    write_json_atomic(folder / "tokenizer_config.json", config)
    write_json_atomic(folder / "special_tokens_map.json", special)
    return folder


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """``CLIPTokenizer.from_pretrained`` on a folder written by :func:`write_tokenizer`."""
    return CLIPTokenizer.from_pretrained(str(folder))


def build_tokenizer() -> CLIPTokenizer:
    """The toy-sd tokenizer, built in memory (through a temporary folder of the shipped files)."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_tokenizer(write_tokenizer(tmp))


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids [B, 77] exactly as StableDiffusionPipeline makes them (pad to max length, truncate)."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------------------------
# Text encoder: open_clip text tower -> CLIPTextModel


def text_config(clip_model) -> CLIPTextConfig:
    """A ``CLIPTextConfig`` with the shape of an open_clip text tower (quick_gelu, pre-LN, causal mask)."""
    width = clip_model.token_embedding.weight.shape[1]
    blocks = clip_model.transformer.resblocks
    return CLIPTextConfig(
        vocab_size=clip_model.token_embedding.weight.shape[0], hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features, num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads, max_position_embeddings=clip_model.positional_embedding.shape[0],
        hidden_act="quick_gelu", layer_norm_eps=clip_model.ln_final.eps, projection_dim=width,
        bos_token_id=SOT_ID, eos_token_id=EOT_ID, pad_token_id=PAD_ID,
    )


def text_state_dict(clip_model) -> dict[str, torch.Tensor]:
    """Rename the open_clip text tower's weights to ``CLIPTextTransformer`` names (fused qkv split into q, k, v)."""
    sd = {
        "embeddings.token_embedding.weight": clip_model.token_embedding.weight,
        "embeddings.position_embedding.weight": clip_model.positional_embedding,
        "final_layer_norm.weight": clip_model.ln_final.weight,
        "final_layer_norm.bias": clip_model.ln_final.bias,
    }
    for i, block in enumerate(clip_model.transformer.resblocks):
        pre = f"encoder.layers.{i}."
        q_w, k_w, v_w = block.attn.in_proj_weight.chunk(3, dim=0)  # nn.MultiheadAttention packs [q; k; v]
        q_b, k_b, v_b = block.attn.in_proj_bias.chunk(3, dim=0)
        pairs = {
            "self_attn.q_proj": (q_w, q_b), "self_attn.k_proj": (k_w, k_b), "self_attn.v_proj": (v_w, v_b),
            "self_attn.out_proj": (block.attn.out_proj.weight, block.attn.out_proj.bias),
            "layer_norm1": (block.ln_1.weight, block.ln_1.bias), "layer_norm2": (block.ln_2.weight, block.ln_2.bias),
            "mlp.fc1": (block.mlp.c_fc.weight, block.mlp.c_fc.bias),
            "mlp.fc2": (block.mlp.c_proj.weight, block.mlp.c_proj.bias),
        }
        for name, (w, b) in pairs.items():
            sd[pre + name + ".weight"], sd[pre + name + ".bias"] = w, b
    return {k: v.detach().float().cpu().clone().contiguous() for k, v in sd.items()}


def convert_text_tower(clip_model) -> CLIPTextModel:
    """The open_clip model's text tower as a frozen ``CLIPTextModel`` (eval mode, fp32, on CPU).

    Its ``last_hidden_state`` equals open_clip's ``ln_final`` output for every token (before pooling and
    ``text_projection``), which is what Stable Diffusion feeds to the UNet's cross-attention.
    """
    if getattr(clip_model, "text_pool_type", "argmax") != "argmax" or clip_model.attn_mask is None:
        raise ValueError("only open_clip text towers with a causal mask and argmax (EOT) pooling can be converted")
    model = CLIPTextModel(text_config(clip_model))
    target = getattr(model, "text_model", model)  # transformers < 5 nests the modules under .text_model
    missing, unexpected = target.load_state_dict(text_state_dict(clip_model), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"text tower conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)


def open_clip_hidden_states(clip_model, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's per-token text features before pooling: ``ln_final(transformer(emb + pos))`` [B, 77, D]."""
    x = clip_model.token_embedding(tokens) + clip_model.positional_embedding
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask)
    return clip_model.ln_final(x)


# ---------------------------------------------------------------------------------------------------------------
# VAE, UNet, scheduler and the folder


def build_vae() -> AutoencoderKL:
    """A randomly initialised tiny ``AutoencoderKL`` (about 1M parameters)."""
    return AutoencoderKL(**VAE_CONFIG)


def build_unet() -> UNet2DConditionModel:
    """A randomly initialised tiny ``UNet2DConditionModel`` (about 2.8M parameters)."""
    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULER_CONFIG)


def assemble_pipeline(vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                      unet: UNet2DConditionModel, scheduler: DDIMScheduler | None = None) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` with no safety checker or feature extractor (as in the saved folder)."""
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or build_scheduler(), safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)


def save_sd_folder(pipe: StableDiffusionPipeline, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Save ``pipe`` as an SD folder: fp16 safetensors, and the tokenizer as vocab.json + merges.txt files.

    Weights are cast to ``dtype`` on the way out; ``pipe`` itself is left unchanged.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, weights in (("vae", "diffusion_pytorch_model"), ("unet", "diffusion_pytorch_model"),
                          ("text_encoder", "model")):
        module = getattr(pipe, name)
        (folder / name).mkdir(exist_ok=True)
        module.config.save_pretrained(folder / name) if name == "text_encoder" else module.save_config(folder / name)
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(folder / name / f"{weights}.safetensors"), metadata={"format": "pt"})
    pipe.scheduler.save_pretrained(folder / "scheduler")
    write_tokenizer(folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": _diffusers_version(),
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    write_json_atomic(folder / "model_index.json", index)
    return folder


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def check_folder(folder: str | Path | None = None) -> Path:
    """Resolve an SD folder (default: the shipped toy-sd); FileNotFoundError naming the fix when incomplete."""
    folder = Path(folder) if folder is not None else DEFAULT_FOLDER
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"):
        if not (folder / name).is_file():
            hint = f" (train it with: {TRAIN_COMMAND})" if folder.resolve() == DEFAULT_FOLDER.resolve() else ""
            raise FileNotFoundError(f"Stable Diffusion folder incomplete: {folder / name} is missing{hint}")
    return folder


def load_sd_pipeline(folder: str | Path | None = None, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """The SD folder (default: the shipped toy-sd) through :func:`common.registry.load_sd` (safetensors only, one
    line for a bad folder) in ``dtype`` on ``device``, progress bar off."""
    from common.registry import load_sd

    pipe = load_sd(str(check_folder(folder)), device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_pipeline(seed: int = 0, clip_model=None) -> StableDiffusionPipeline:
    """An untrained toy-sd pipeline (random VAE/UNet; text tower from ``clip_model`` or a random toy-clip)."""
    from common.toy.clip_model import create_toy_clip

    torch.manual_seed(seed)
    clip_model = clip_model if clip_model is not None else create_toy_clip()
    return assemble_pipeline(build_vae(), convert_text_tower(clip_model), build_tokenizer(), build_unet())
