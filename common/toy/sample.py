"""``python -m common.toy sample``: one image from a Stable Diffusion pipeline (default: the embedded toy-sd).

The model is resolved through :mod:`common.registry`: ``toy-sd`` (shipped folder), a local diffusers folder,
or a real model name such as ``sd-2.1-base`` (needs the hub cache; offline it fails with one clear line).
Sampling is ``StableDiffusionPipeline.__call__`` itself: DDIM (Song et al. 2021) with classifier-free guidance
(Ho & Salimans 2022) and the scheduler stored in the folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common import registry
from common.gpu import get_device, seed_everything
from common.images import save_image
from common.runs import write_config


def load_text_to_image(model: str, device: torch.device):
    """A ``StableDiffusionPipeline`` for a registry name or folder; fp16 on CUDA for real models, else fp32."""
    spec = registry.resolve(model, "sd")
    dtype = torch.float16 if (spec.is_real and device.type == "cuda") else torch.float32
    return registry.load_sd(model, device=device, dtype=dtype)


@torch.no_grad()
def sample_cli_impl(prompt: str, out: str | Path, seed: int = 0, steps: int = 50, guidance_scale: float = 7.5,
                    model: str = "toy-sd", device: str = "auto") -> Path:
    """Sample ``prompt`` with ``steps`` DDIM steps and guidance ``guidance_scale``; write the image to ``out`` and
    the configuration (seed, library versions) to ``<out stem>.config.json`` next to it."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ValueError(f"--out must be an image file name ending in .png, .jpg or .webp, got {str(out)!r}")
    config_path = out.with_name(out.stem + ".config.json")
    for path in (out, config_path):
        if path.is_dir():
            raise ValueError(f"cannot write {path}: it is a folder")
    dev = get_device(device)
    seed_everything(seed)
    pipe = load_text_to_image(model, dev)
    generator = torch.Generator(dev).manual_seed(seed)
    image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generator,
                 output_type="pt").images[0]  # [3, H, W] in [0, 1]
    if not torch.isfinite(image).all():
        raise ValueError("sampling produced NaN or infinite values; try --device cpu (fp32)")
    path = save_image(image.float().cpu(), out, value_range=(0.0, 1.0))
    write_config(out.parent, {"prompt": prompt, "out": str(out), "seed": seed, "steps": steps,
                              "guidance_scale": guidance_scale, "model": model, "device": str(dev)},
                 name=config_path.name)
    print(f"wrote {path} ({image.shape[-1]}x{image.shape[-2]}, {steps} steps, guidance {guidance_scale}, seed {seed})")
    return path
