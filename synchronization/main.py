"""``python -m synchronization.main``: wide images and ambiguous images by diffusion synchronization.

Flags follow the handout (``--prompts P1 P2`` and ``--views_names identity rotate_cw`` take several values;
``--tag T --save_dir_now`` writes to ``outputs/T/<time stamp>`` as the KAIST skeleton does). The options become
one validated :class:`synchronization.config.WideConfig` or :class:`~synchronization.config.AmbiguousConfig`
before any model is loaded or file written; ``config.json`` records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import torch

from common.cli import CONTEXT_SETTINGS, OneLineCommand, UserError, finite, user_errors
from common.compiled import fast_unet, unet_speed_options
from common.gpu import PRECISION_CHOICES, get_device, precision_dtype, seed_everything
from common.images import save_gif, save_image
from common.panels import save_labelled_grid
from common.runs import write_config, write_json_atomic
from synchronization.config import MAX_GUIDANCE, AmbiguousConfig, WideConfig, build_config, output_dir
from synchronization.core import INITS, SYNC_VARIABLES
from synchronization.prompts import prompt_to_name, read_pairs, wide_prompts
from synchronization.views import VIEW_NAMES

APPS = ("wide_image", "ambiguous_image")
MULTI_VALUE = ("--prompts", "--views_names")


class SyncCommand(OneLineCommand):
    """Accept ``--prompts A B`` (argparse nargs='+'); usage errors are one line, exit code 2 (``OneLineCommand``)."""

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


@click.command(cls=SyncCommand, context_settings=CONTEXT_SETTINGS)
@click.option("--app", type=click.Choice(APPS), required=True, help="Application.")
@click.option("--prompt", default=None, help="Wide image: the prompt.")
@click.option("--prompts", multiple=True, help="Ambiguous image: one prompt per view (canonical first).")
@click.option("--negative_prompt", default="", show_default=True, help="Unconditional prompt for CFG.")
@click.option("--model", default=None, help="Registry name or folder [default: toy-sd / toy-pixel; real: sd-2-base, "
              "deepfloyd-if].")
@click.option("--num_inference_steps", type=click.IntRange(min=1), default=None,
              help="DDIM steps [default: 50 wide, 30 ambiguous].")
@click.option("--guidance_scale", type=finite(min=0, max=MAX_GUIDANCE), default=None,
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
@click.option("--rotate_angle", type=finite(min=-360, max=360), default=90.0, show_default=True,
              help="inner_rotate angle, degrees clockwise (multiples of 90 are exact permutations).")
@click.option("--stage2/--no_stage2", default=None, help="Ambiguous: IF stage II 64->256 [default: on for IF].")
@click.option("--stage2_noise_level", type=click.IntRange(0, 999), default=50, show_default=True)
@click.option("--max_batch", type=click.IntRange(min=1), default=None,
              help="Max UNet batch rows per call [default: all views x 2 CFG branches in one call].")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, mps or cpu.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="UNet/VAE weights: auto = fp16 on CUDA, fp32 on CPU; diffusion coefficients are always fp32.")
@unet_speed_options("H200, 41-view panorama x 50 steps: 10.6 s eager and graphs alike (not launch-bound)")
@click.option("--save_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: SAVE_TOP_DIR/TAG].")
@click.option("--tag", default=None, help="Skeleton naming: write to SAVE_TOP_DIR/TAG [default: the app name].")
@click.option("--save_dir_now", is_flag=True, help="Add a time stamp folder (MM-DD-HHMMSS) below the output folder.")
@click.option("--save_top_dir", default="outputs", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder of --tag folders.")
@click.option("--no_progress", is_flag=True, help="Hide the progress bar.")
@user_errors
def main(**opts: Any) -> None:
    """Generate a wide image (SyncTweedies over sliding windows) or an ambiguous image (views of one image).

    \b
    Examples:
      python -m synchronization.main --app wide_image --prompt "a red circle on a blue background" \\
          --save_dir outputs/wide --device cpu
      python -m synchronization.main --app ambiguous_image --prompts "a white circle on a black background" \\
          "a white square on a black background" --tag ambiguous_image --save_dir_now --device cpu
      python -m synchronization.main --app wide_image --model sd-2-base --save_dir outputs/wide_sd \\
          --prompt "A tranquil lake surrounded by misty mountains"
      python -m synchronization.main --app ambiguous_image --model deepfloyd-if --views_names identity \\
          inner_rotate --rotate_angle 90 --sync eps --prompts "a painting of a deer" "a painting of a truck" \\
          --save_dir outputs/amb_if
    """
    cfg = build_config(opts)
    save_dir = output_dir(opts["app"], opts["save_dir"], opts["tag"], opts["save_dir_now"], opts["save_top_dir"])
    run = {"app": opts["app"], "save_dir": save_dir.as_posix(), "tag": opts["tag"],
           "save_dir_now": opts["save_dir_now"]}
    if isinstance(cfg, WideConfig):
        run_wide(cfg, save_dir, run)
    else:
        run_ambiguous(cfg, save_dir, run)


def _device_dtype(cfg: WideConfig | AmbiguousConfig) -> tuple[torch.device, torch.dtype]:
    """Device and weight dtype; also silences the libraries' per-component loading bars (our bar stays)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    device = get_device(cfg.device)
    return device, precision_dtype(cfg.precision, device)


def run_wide(cfg: WideConfig, save_dir: Path, run: dict[str, Any]) -> None:
    from common.registry import load_sd
    from synchronization.wide_image import generate_wide, geometry

    device, dtype = _device_dtype(cfg)
    seed_everything(cfg.seed)
    pipe = load_sd(cfg.model, device, dtype)
    pipe.unet = fast_unet(pipe.unet, device, cfg.cuda_graphs, cfg.compile)
    pipe.set_progress_bar_config(disable=True)
    geo = geometry(pipe, cfg.width, cfg.height, cfg.stride, cfg.circular)  # sizes checked before sampling
    eval_pos = _eval_positions(cfg, geo)
    out = generate_wide(pipe, cfg)
    mapping, image = out["mapping"], out["image"]
    name = prompt_to_name(cfg.prompt)
    crop = geo.window * geo.factor
    save_image(image, save_dir / f"{name}.png")
    for pos in eval_pos:
        save_image(image[:, :crop, pos : pos + crop], save_dir / f"{name}_{pos}.png")
    offsets = [(h0 * geo.factor, w0 * geo.factor) for h0, w0 in mapping.views]  # window origins, image px
    windows = mapping.scaled(geo.factor).forward_mapping(image.unsqueeze(0))  # [N, 3, crop, crop]
    labels = [f"{i}: x={x}" + (f" y={y}" if geo.height > crop else "") for i, (y, x) in enumerate(offsets)]
    save_labelled_grid(save_dir / "extra" / "windows.png", windows, labels, nrow=min(8, len(windows)))
    write_config(save_dir, {**run, **cfg.record(), "num_views": len(mapping), "latent_hw": list(geo.latent_hw),
                            "window": geo.window, "stride": geo.stride, "width": geo.width, "height": geo.height,
                            "vae_factor": geo.factor, "eval_pos": eval_pos, "window_offsets_px": offsets,
                            "unet_calls": out["denoiser"].calls})
    click.echo(f"wide image {geo.width}x{geo.height} ({len(mapping)} views) -> {save_dir / (name + '.png')}")


def _eval_positions(cfg: WideConfig, geo: Any) -> list[int]:
    """--eval_pos, else the handout's positions of its prompt (scaled to this crop size), else 8 evenly spaced."""
    from synchronization.wide_image import crop_positions, default_positions

    crop = geo.window * geo.factor
    if cfg.eval_pos is None:
        handout = wide_prompts().get(" ".join(cfg.prompt.split()))
        return crop_positions(handout, geo) if handout else default_positions(geo)
    bad = [p for p in cfg.eval_pos if p + crop > geo.width]
    if bad:
        raise UserError(f"--eval_pos {bad} outside the panorama: offsets must be in [0, {geo.width - crop}] "
                        f"({crop}-px crops of a {geo.width}-px image)")
    return list(cfg.eval_pos)


def run_ambiguous(cfg: AmbiguousConfig, save_dir: Path, run: dict[str, Any]) -> None:
    from common.registry import load_pixel, load_pixel_upscaler, resolve
    from synchronization.ambiguous_image import animation_frames, generate_ambiguous

    spec = resolve(cfg.model, "pixel")
    stage2 = cfg.stage2 if cfg.stage2 is not None else spec.stage2_hub_id is not None
    if stage2 and spec.stage2_hub_id is None:
        raise UserError(f"model {cfg.model!r} has no stage II upscaler; drop --stage2")
    pairs = read_pairs(save_dir / "pairs.json")  # a malformed file is refused before the run, not after it
    device, dtype = _device_dtype(cfg)
    seed_everything(cfg.seed)
    model = load_pixel(cfg.model, device, dtype)
    model = model._replace(unet=fast_unet(model.unet, device, cfg.cuda_graphs, cfg.compile))
    upscaler = load_pixel_upscaler(cfg.model, device, dtype) if stage2 else None
    out = generate_ambiguous(model, cfg, upscaler)
    views = cfg.views()
    prompts = list(cfg.prompts)
    for prompt, image in zip(prompts, out["views"]):
        save_image(image, save_dir / f"{prompt_to_name(prompt)}.png")
    extra = save_dir / "extra"
    save_image(out["image"], extra / "canonical.png")
    labels = [f"{name}: {prompt}" for name, prompt in zip(cfg.views_names, prompts)]
    save_labelled_grid(extra / "panel.png", out["views"], labels)
    if upscaler is not None:
        save_image(out["stage1"], extra / "stage1.png")
    save_gif(animation_frames(out["image"], views), extra / "animation.gif")
    entry = {"prompts": prompts, "views": list(cfg.views_names)}
    write_json_atomic(save_dir / "pairs.json", [p for p in pairs if p["prompts"] != prompts] + [entry])
    write_config(save_dir, {**run, **cfg.record(), "stage2": stage2})
    click.echo(f"ambiguous image ({' / '.join(cfg.views_names)}) -> {save_dir}")


if __name__ == "__main__":
    main()
