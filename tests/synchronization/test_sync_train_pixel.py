"""toy-pixel training: a CPU smoke run with a tiny UNet, and the shipped architecture's size budget."""

import json

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from common.toy import train_pixel


def test_shipped_architecture_fits_6_mb_in_fp16():
    unet = train_pixel.build_unet()
    params = sum(p.numel() for p in unet.parameters())
    assert 2 * params < 6e6, f"{params} parameters do not fit 6 MB in fp16"
    assert unet.config.sample_size == 64 and unet.config.cross_attention_dim == 64  # toy-sd text encoder width


def test_train_pixel_smoke_writes_a_loadable_folder(tiny_pixel_folder, tmp_path):
    out = tmp_path / "toy-pixel"
    metrics = train_pixel.train(out, device="cpu", steps=12, seed=0, batch_size=4, image_size=16, eval_captions=2,
                                eval_steps=2, warmup=2, text_from=tiny_pixel_folder,
                                unet={"block_out_channels": [8, 16, 16], "norm_num_groups": 4,
                                      "attention_head_dim": 2, "cross_attention_dim": 16})
    assert metrics["steps_done"] == 12 and torch.isfinite(torch.tensor(metrics["final_loss"]))
    weights = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())
    unet = UNet2DConditionModel.from_pretrained(out / "unet", torch_dtype=torch.float32)
    assert unet.config.sample_size == 16
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler" and sched["beta_schedule"] == "squaredcos_cap_v2"
    assert json.loads((out / "model_index.json").read_text())["text_from"] == "toy-sd"
