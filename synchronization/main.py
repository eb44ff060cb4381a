"""``python -m synchronization.main``: wide images and ambiguous images by diffusion synchronization.

Flags follow the handout (``--prompts P1 P2`` and ``--views_names identity rotate_cw`` take several values).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch

from common.cli import UserError, user_errors
from common.gpu import get_device, precision_dtype, seed_everything
from common.images import save_gif, save_grid, save_image
from common.runs import write_config, write_json_atomic
from synchronization.core import INITS, SYNC_VARIABLES
from synchronization.prompts import prompt_to_name, wide_prompts
from synchronization.views import VIEW_NAMES, get_view

APPS = ("wide_image", "ambiguous_image")
DEFAULTS = {  # handout defaults per app: model, steps, guidance
    "wide_image": {"model": "toy-sd", "num_inference_steps": 50, "guidance_scale": 7.5},
    "ambiguous_image": {"model": "toy-pixel", "num_inference_steps": 30, "guidance_scale": 10.0},
}
MULTI_VALUE = ("--prompts", "--views_names")


class SyncCommand(click.Command):
    """Accept ``--prompts A B`` (argparse nargs='+') and print usage errors as one line with exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        expanded, current = [], None
        for arg in args:
            if arg.startswith("--"):
                current = arg if arg in MULTI_VALUE else None
                expanded.append(arg)
            elif current is not None and expanded[-1] != current:
                expanded += [current, arg]  # a further value of a multi-value flag
            else:
                expanded.append(arg)
        return super().parse_args(ctx, expanded)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:
            raise UserError(err.format_message()) from err


@click.command(cls=SyncCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app", type=click.Choice(APPS), required=True, help="Application.")
@click.option("--prompt", default=None, help="Wide image: the prompt.")
@click.option("--prompts", multiple=True, help="Ambiguous image: one prompt per view (canonical first).")
@click.option("--negative_prompt", default="", show_default=True, help="Unconditional prompt for CFG.")
@click.option("--model", default=None, help="Registry name or folder [default: toy-sd / toy-pixel; real: sd-2-base, "
              "deepfloyd-if].")
@click.option("--num_inference_steps", type=click.IntRange(min=1), default=None,
              help="DDIM steps [default: 50 wide, 30 ambiguous].")
@click.option("--guidance_scale", type=click.FloatRange(min=0), default=None,
              help="CFG scale [default: 7.5 wide, 10 ambiguous].")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--sync", type=click.Choice(SYNC_VARIABLES), default="x0", show_default=True,
              help="Synchronized variable: x0 (SyncTweedies), eps, xt, or none (independent instances).")
@click.option("--canonical_denoising", is_flag=True,
              help="Denoise one canonical sample, averaging in canonical space.")
@click.option("--init", type=click.Choice(INITS), default="canonical", show_default=True,
              help="Initial noise: crops/views of one canonical noise, or independent per instance.")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="Wide: image width px [default: 6 windows: 3072 for SD, 384 for toy-sd].")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Wide: image height px [default: 1 window].")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Wide: window stride in latent px [default: window/8: 8 for SD, 2 for toy-sd].")
@click.option("--circular", is_flag=True, help="Wide: wrap windows around (360-degree panorama).")
@click.option("--decode", type=click.Choice(["full", "windows"]), default="full", show_default=True,
              help="Wide: decode the whole latent once, or each window with RGB averaging (skeleton).")
@click.option("--eval_pos", default=None, help="Wide: crop offsets px, e.g. 0,128 [default: the handout's for its "
              "prompts (scaled to the crop size), else 8 evenly spaced].")
@click.option("--views_names", multiple=True, help=f"Ambiguous: views, one per prompt ({', '.join(VIEW_NAMES)}) "
              "[default: identity rotate_cw].")
@click.option("--rotate_angle", type=float, default=90.0, show_default=True,
              help="inner_rotate angle, degrees clockwise (multiples of 90 are exact permutations).")
@click.option("--stage2/--no_stage2", default=None, help="Ambiguous: IF stage II 64->256 [default: on for IF].")
@click.option("--stage2_noise_level", type=click.IntRange(0, 999), default=50, show_default=True)
@click.option("--max_batch", type=click.IntRange(min=1), default=None,
              help="Max UNet batch rows per call [default: all views x 2 CFG branches in one call].")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, mps or cpu.")
@click.option("--precision", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True,
              help="UNet/VAE weights (fp32 on CPU); diffusion coefficients are always fp32.")
@click.option("--save_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--no_progress", is_flag=True, help="Hide the progress bar.")
@user_errors
def main(**opts: Any) -> None:
    """Generate a wide image (SyncTweedies over sliding windows) or an ambiguous image (views of one image).

    \b
    Examples:
      python -m synchronization.main --app wide_image --prompt "a red circle on a blue background" \\
          --save_dir outputs/wide --device cpu
      python -m synchronization.main --app ambiguous_image --prompts "a white circle on a black background" \\
          "a white square on a black background" --save_dir outputs/amb --device cpu
      python -m synchronization.main --app wide_image --model sd-2-base --save_dir outputs/wide_sd \\
          --prompt "A tranquil lake surrounded by misty mountains"
      python -m synchronization.main --app ambiguous_image --model deepfloyd-if --views_names identity \\
          inner_rotate --rotate_angle 90 --sync eps --prompts "a painting of a deer" "a painting of a truck" \\
          --save_dir outputs/amb_if
    """
    app = opts["app"]
    for key, value in DEFAULTS[app].items():
        if opts[key] is None:
            opts[key] = value
    if opts["canonical_denoising"] and (opts["init"] != "canonical" or opts["sync"] == "none"):
        raise UserError("--canonical_denoising needs --init canonical and --sync x0, eps or xt")
    if app == "wide_image":
        run_wide(opts)
    else:
        run_ambiguous(opts)


def _device_dtype(opts: dict[str, Any]) -> tuple[torch.device, torch.dtype]:
    """Device and weight dtype; also silences the libraries' per-component loading bars (our bar stays)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    device = get_device(opts["device"])
    return device, precision_dtype(opts["precision"], device)


def run_wide(opts: dict[str, Any]) -> None:
    from common.registry import load_sd
    from synchronization.wide_image import crop_positions, default_positions, generate_wide

    if not opts["prompt"] or opts["prompts"]:
        raise UserError("--app wide_image takes one --prompt (not --prompts)")
    if opts["views_names"]:
        raise UserError("--views_names is for --app ambiguous_image")
    eval_pos = _parse_positions(opts["eval_pos"])
    device, dtype = _device_dtype(opts)
    seed_everything(opts["seed"])
    pipe = load_sd(opts["model"], device, dtype)
    pipe.set_progress_bar_config(disable=True)
    out = generate_wide(pipe, opts["prompt"], opts["negative_prompt"], opts["width"], opts["height"], opts["stride"],
                        opts["num_inference_steps"], opts["guidance_scale"], opts["sync"], opts["canonical_denoising"],
                        opts["init"], opts["circular"], opts["seed"], opts["max_batch"], opts["decode"],
                        progress=not opts["no_progress"])
    geo, mapping, image = out["geometry"], out["mapping"], out["image"]
    if eval_pos is None:
        handout = wide_prompts().get(" ".join(opts["prompt"].split()))
        eval_pos = crop_positions(handout, geo) if handout else default_positions(geo)
    crop = geo.window * geo.factor
    bad = [p for p in eval_pos if p < 0 or p + crop > geo.width]
    if bad:
        raise UserError(f"--eval_pos {bad} outside the panorama: offsets must be in [0, {geo.width - crop}]")
    save_dir = Path(opts["save_dir"])
    name = prompt_to_name(opts["prompt"])
    save_image(image, save_dir / f"{name}.png")
    for pos in eval_pos:
        save_image(image[:, :crop, pos : pos + crop], save_dir / f"{name}_{pos}.png")
    rgb_views = mapping.scaled(geo.factor).forward_mapping(image.unsqueeze(0))
    for i, (h0, w0) in enumerate(mapping.views):
        y, x = h0 * geo.factor, w0 * geo.factor
        save_image(rgb_views[i], save_dir / "extra" / "views" / f"view_{i:02d}_y{y}_x{x}.png")
    config = {**opts, "num_views": len(mapping), "latent_hw": list(geo.latent_hw), "window": geo.window,
              "stride": geo.stride, "width": geo.width, "height": geo.height, "vae_factor": geo.factor,
              "eval_pos": eval_pos, "unet_calls": out["denoiser"].calls}
    write_config(save_dir, config)
    click.echo(f"wide image {geo.width}x{geo.height} ({len(mapping)} views) -> {save_dir / (name + '.png')}")


def _parse_positions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError as err:
        raise UserError(f"--eval_pos must be comma-separated integers, got {text!r}") from err


def run_ambiguous(opts: dict[str, Any]) -> None:
    from common.registry import load_pixel, load_pixel_upscaler, resolve
    from synchronization.ambiguous_image import animation_frames, generate_ambiguous

    if opts["prompt"]:
        raise UserError("--app ambiguous_image takes --prompts (one per view), not --prompt")
    names = list(opts["views_names"]) or ["identity", "rotate_cw"]
    views = [get_view(n, opts["rotate_angle"]) for n in names]
    prompts = list(opts["prompts"])
    if len(prompts) != len(views):
        raise UserError(f"got {len(prompts)} prompt(s) for {len(views)} views ({' '.join(names)}); "
                        "give one --prompts value per view")
    spec = resolve(opts["model"], "pixel")
    stage2 = opts["stage2"] if opts["stage2"] is not None else spec.stage2_hub_id is not None
    if stage2 and spec.stage2_hub_id is None:
        raise UserError(f"model {opts['model']!r} has no stage II upscaler; drop --stage2")
    device, dtype = _device_dtype(opts)
    seed_everything(opts["seed"])
    model = load_pixel(opts["model"], device, dtype)
    upscaler = load_pixel_upscaler(opts["model"], device, dtype) if stage2 else None
    out = generate_ambiguous(model, prompts, views, opts["negative_prompt"], opts["num_inference_steps"],
                             opts["guidance_scale"], opts["sync"], opts["canonical_denoising"], opts["init"],
                             opts["seed"], opts["max_batch"], upscaler, opts["stage2_noise_level"],
                             progress=not opts["no_progress"])
    save_dir = Path(opts["save_dir"])
    for prompt, image in zip(prompts, out["views"]):
        save_image(image, save_dir / f"{prompt_to_name(prompt)}.png")
    extra = save_dir / "extra"
    save_image(out["image"], extra / "canonical.png")
    save_grid(out["views"], extra / "panel.png", nrow=len(views))
    if upscaler is not None:
        save_image(out["stage1"], extra / "stage1.png")
    save_gif(animation_frames(out["image"], views), extra / "animation.gif")
    _record_pair(save_dir, prompts, names)
    write_config(save_dir, {**opts, "views_names": names, "prompts": prompts, "stage2": stage2})
    click.echo(f"ambiguous image ({' / '.join(names)}) -> {save_dir}")


def _record_pair(save_dir: Path, prompts: list[str], views: list[str]) -> None:
    """Append the run's prompt tuple to ``pairs.json`` so evaluate.py knows which images form one illusion."""
    path = save_dir / "pairs.json"
    pairs = json.loads(path.read_text()) if path.is_file() else []
    entry = {"prompts": prompts, "views": views}
    pairs = [p for p in pairs if p.get("prompts") != prompts] + [entry]
    write_json_atomic(path, pairs)


if __name__ == "__main__":
    main()
