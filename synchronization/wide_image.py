"""Wide images (handout Task 1): a panorama latent denoised as overlapping windows with a latent diffusion model.

Canonical space: the latent [1, 4, H/f, W/f] of an H x W image (SD 2 base: f = 8, 512 x 3072 -> 64 x 384);
instances: windows of the UNet's sample size (64 for SD, 16 for toy-sd) every ``stride`` latent px (8 -> 41
views). All views and both CFG branches go through the UNet in one batched call per step (chunked by
``max_batch``).

Decoding (``decode="full"``, default): the final canonical latent is decoded once as a whole. The VAE decoder is
convolutional (plus one global attention block), so a single decode has no window borders at all and costs one
decode of the panorama instead of 41 window decodes; this is what MultiDiffusion and diffusers do. With
``circular`` the latent is wrapped by a few columns on both sides before decoding and the padding cropped, so
the left and right edges meet without a seam. ``decode="windows"`` reproduces the skeleton (decode every window,
average the RGB windows), which needs less memory for very wide images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from common.gpu import host_to_device
from synchronization.config import WideConfig
from synchronization.core import initial_noise, sample, schedule_from_config
from synchronization.denoisers import TextDenoiser, encode_text
from synchronization.windows import WindowMapping


@dataclass
class WideGeometry:
    """Pixel and latent sizes of a panorama run (all derived from the model and the CLI flags)."""

    height: int  # image px
    width: int
    factor: int  # VAE downsampling factor
    window: int  # latent px (UNet sample size)
    stride: int  # latent px

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.factor, self.width // self.factor


def vae_factor(pipe: Any) -> int:
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def geometry(pipe: Any, width: int | None = None, height: int | None = None, stride: int | None = None,
             circular: bool = False) -> WideGeometry:
    """Defaults: window = UNet sample size, stride = window / 8 (8 for SD), height = one window, width = 6 windows
    (512 x 3072 for SD 2 base: 41 views; 64 x 384 for toy-sd). Raises ValueError for unreachable sizes, stated in
    image px (the unit of ``--width`` / ``--height``; ``--stride`` is in latent px)."""
    factor, window = vae_factor(pipe), int(pipe.unet.config.sample_size)
    height = window * factor if height is None else height
    width = 6 * window * factor if width is None else width
    stride = max(1, window // 8) if stride is None else stride
    for name, value in (("width", width), ("height", height)):
        check_side(name, value, factor, window, stride, circular and name == "width")
    geo = WideGeometry(height, width, factor, window, stride)
    WindowMapping(*geo.latent_hw, window, stride, circular)  # the same conditions in latent px
    return geo


def check_side(name: str, pixels: int, factor: int, window: int, stride: int, circular: bool = False) -> None:
    """One-line ValueError unless ``pixels`` (image px) is covered exactly by windows of ``window`` latent px
    every ``stride`` latent px: pixels = f * (window + k * stride), or with wrap-around f * k * stride >= f * window.
    """
    win_px, step_px = window * factor, stride * factor  # the window and stride in image px
    what = f"--{name} {pixels} px"
    if pixels <= 0 or pixels % factor:
        raise ValueError(f"{what} must be a positive multiple of the VAE factor {factor}")
    if circular:
        if pixels < win_px or pixels % step_px:
            raise ValueError(f"{what} must be >= one window ({win_px} px) and a multiple of the stride "
                             f"{step_px} px ({stride} latent px x VAE factor {factor}) with --circular")
        return
    if pixels < win_px or (pixels - win_px) % step_px:
        k = max(0, round((pixels - win_px) / step_px))
        near = sorted({win_px + k * step_px, win_px + (k + 1) * step_px} - {pixels})
        raise ValueError(f"{what} is not reachable with windows of {win_px} px ({window} latent px) every "
                         f"{step_px} px (--stride {stride} latent px x VAE factor {factor}): need {name} = "
                         f"{win_px} + k * {step_px} px, e.g. {' or '.join(map(str, near))}")


@torch.no_grad()
def decode_latent(pipe: Any, z: torch.Tensor, mapping: WindowMapping, decode: str = "full",
                  max_batch: int | None = None) -> torch.Tensor:
    """Canonical latent [1, 4, h, w] -> image [3, H, W] in [-1, 1] (see the module docstring)."""
    vae = pipe.vae
    param = next(vae.parameters())
    scale = float(vae.config.scaling_factor)
    factor = vae_factor(pipe)
    if decode == "full":
        pad = max(1, mapping.window[1] // 8) if mapping.circular else 0
        zz = torch.cat([z[..., z.shape[-1] - pad :], z, z[..., :pad]], dim=-1) if pad else z
        image = vae.decode((zz / scale).to(param.device, param.dtype)).sample.float()
        if pad:
            image = image[..., pad * factor : image.shape[-1] - pad * factor]
        return image[0].clamp(-1, 1)
    if decode == "windows":
        views = mapping.forward_mapping(z)
        chunk = max_batch or len(views)
        rgb = torch.cat([vae.decode((v / scale).to(param.device, param.dtype)).sample.float()
                         for v in views.split(chunk)])
        return mapping.scaled(factor).inverse_mapping(rgb)[0].clamp(-1, 1)
    raise ValueError(f"unknown decode mode {decode!r}; choose full or windows")


@torch.no_grad()
def generate_wide(pipe: Any, cfg: WideConfig) -> dict[str, Any]:
    """Generate one panorama; returns ``image`` [3, H, W], ``latent`` [1, 4, h, w], ``mapping``, ``geometry``,
    ``denoiser`` (for call counts) and ``x0`` (final window latents [N, 4, window, window])."""
    geo = geometry(pipe, cfg.width, cfg.height, cfg.stride, cfg.circular)
    mapping = WindowMapping(*geo.latent_hw, geo.window, geo.stride, cfg.circular)
    device = pipe.unet.device
    n = len(mapping)
    cond = encode_text(pipe.tokenizer, pipe.text_encoder, [cfg.prompt]).expand(n, -1, -1)
    uncond = encode_text(pipe.tokenizer, pipe.text_encoder, [cfg.negative_prompt]).expand(n, -1, -1)
    schedule = schedule_from_config(dict(pipe.scheduler.config), cfg.num_inference_steps)
    eps_fn = TextDenoiser(pipe.unet, cond, uncond, cfg.guidance_scale, schedule, cfg.max_batch)
    channels = int(pipe.unet.config.in_channels)
    generator = torch.Generator("cpu").manual_seed(cfg.seed)
    x_T = initial_noise(mapping, (1, channels, *geo.latent_hw), n, (channels, geo.window, geo.window), cfg.init,
                        generator)  # on the CPU generator: the same noise on every device
    x_T = host_to_device(x_T, device)  # pinned: the copy does not wait for the GPU
    z0, x0 = sample(mapping, eps_fn, schedule, x_T, cfg.sync, cfg.canonical_denoising, cfg.progress,
                    desc="wide image")
    image = decode_latent(pipe, z0, mapping, cfg.decode, cfg.max_batch)
    return {"image": image.cpu(), "latent": z0.cpu(), "x0": x0.cpu(), "mapping": mapping, "geometry": geo,
            "denoiser": eps_fn}


def crop_positions(eval_pos: list[int], geo: WideGeometry, reference_crop: int = 512) -> list[int]:
    """The handout's eval_pos (x offsets of 512-px crops in a 3072-px panorama) on this run's pixel grid.

    Positions scale by crop / 512 (the toy's 64-px crops: x / 8) and are clamped to the last valid offset.
    """
    crop = geo.window * geo.factor
    scale = crop / reference_crop
    return [min(max(0, round(p * scale)), geo.width - crop) for p in eval_pos]


def default_positions(geo: WideGeometry, count: int = 8) -> list[int]:
    """``count`` evenly spaced crop offsets across the panorama (for prompts without handout eval_pos)."""
    crop = geo.window * geo.factor
    last = geo.width - crop
    return sorted({round(i * last / max(1, count - 1)) for i in range(count)})
