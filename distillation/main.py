"""``python -m distillation.main``: 2D score distillation (SDS, VSD, SDI, PDS, ISM, DDS) with the handouts' flags.

The run options (:func:`run_options`) are declared once here and shared by ``python -m distillation.evaluate``,
so every ablation of the main CLI runs through the evaluation set too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from common.cli import CONTEXT_SETTINGS, UserError, finite, user_errors
from common.compiled import unet_speed_options
from common.gpu import PRECISION_CHOICES
from distillation.guidance import METHODS
from distillation.presets import PRESETS, resolve_settings
from distillation.representations import REPRESENTATIONS
from distillation.runner import MAX_PROMPTS, OPTION_NAMES, Item, RunConfig, check_text, run
from distillation.schedules import T_SCHEDULES, W_SCHEDULES

PER_METHOD = "per method: 25 for sds, 7.5 otherwise"
MAX_PROMPTS_FILE_BYTES = 1 << 20  # 1 MiB: MAX_PROMPTS prompts of at most 240 bytes fit easily
MAX_SCALE = 1000.0  # |guidance scale|: the handouts use 7.5-100; beyond 1000 every step saturates


def _parse_line(path: str, number: int, line: str) -> Item:
    """``prompt`` or ``source | edit [| image]`` -> Item; errors name the file and the line."""
    parts = [p.strip() for p in line.split("|")]
    if len(parts) > 3:
        raise ValueError(f"{path} line {number}: expected 'prompt' or 'source | edit [| image]', got {line[:80]!r}")
    for part in parts[:2]:
        check_text(part, f"{path} line {number}: the prompt")
    return Item(parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None)


def read_prompts_file(path: str) -> list[Item]:
    """One prompt per line, or ``source prompt | edit prompt [| source image]`` for PDS/DDS; # comments.

    Refused with one line: a file over 1 MiB or not UTF-8, more than MAX_PROMPTS prompts, and a prompt with a
    control character (NUL, escape, ...) or over the length limit (the message names the line).
    """
    size = Path(path).stat().st_size
    if size > MAX_PROMPTS_FILE_BYTES:
        raise ValueError(f"{path} is {size / 2**20:.1f} MiB; a prompts file holds at most {MAX_PROMPTS} prompts "
                         f"and {MAX_PROMPTS_FILE_BYTES >> 20} MiB")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read {path}: not a UTF-8 text file") from err
    items = []
    for number, raw in enumerate(text.split("\n"), start=1):  # not splitlines(): \x0c, \x1c... are not line ends
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        items.append(_parse_line(path, number, line))
        if len(items) > MAX_PROMPTS:
            raise ValueError(f"{path} has more than {MAX_PROMPTS} prompts (line {number}); split it into several "
                             "runs")
    if not items:
        raise ValueError(f"{path} contains no prompts")
    return items


def build_items(prompts: tuple[str, ...], prompts_file: str | None, edit_prompt: str | None,
                src_img_path: str | None) -> list[Item]:
    """Items from repeated --prompt (sharing --edit_prompt/--src_img_path) and/or --prompts_file."""
    items = [Item(p, edit_prompt, src_img_path) for p in prompts]
    if prompts_file:
        for it in read_prompts_file(prompts_file):
            items.append(Item(it.prompt, it.edit_prompt or edit_prompt, it.src_img_path or src_img_path))
    return items


def settings_from_context(ctx: click.Context, params: dict, loss_type: str, preset: str | None) -> dict:
    """Split the options into those typed on the command line and defaults, then apply the precedence rules."""
    explicit, defaults = {}, {}
    for name in OPTION_NAMES:
        source = ctx.get_parameter_source(name)
        (explicit if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) else defaults)[name] = \
            params[name]
    representation = explicit["representation"] if "representation" in explicit else defaults["representation"]
    settings = resolve_settings(loss_type, representation, preset, explicit, defaults)
    if settings["t_min"] > settings["t_max"]:
        raise UserError(f"--t_min {settings['t_min']} is larger than --t_max {settings['t_max']}")
    if "warmup_steps" in explicit and settings["warmup_steps"] >= settings["steps"]:
        raise UserError(f"--warmup_steps {settings['warmup_steps']} is not below --steps {settings['steps']}: the "
                        "learning rate would never reach its peak; omit it (a fifth of the steps) or lower it")
    return settings


# One declaration of every run option, applied to distillation.main and distillation.evaluate (and read by
# measure_toy's --set): the names are RunConfig's fields (runner.OPTION_NAMES) plus loss_type and preset.
RUN_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option("--loss_type", "--generation_mode", "loss_type", type=click.Choice(METHODS), default="sds",
                 show_default=True, help="Method (--generation_mode: UMich HW5's name)."),
    click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                 help="Assignment settings (model, steps, lr, guidance...); explicit flags override them."),
    click.option("--negative_prompt", default="", show_default=True,
                 help="Unconditional prompt of CFG (the presets use 'low quality')."),
    click.option("--guidance_scale", type=finite(-MAX_SCALE, MAX_SCALE), default=None,
                 help=f"CFG scale s, |s| <= {MAX_SCALE:g} [default: {PER_METHOD}]."),
    click.option("--step", "--steps", "steps", type=click.IntRange(min=1), default=500, show_default=True,
                 help="Optimisation steps."),
    click.option("--lr", type=finite(0, 10, min_open=True), default=None,
                 help="AdamW learning rate in (0, 10] [default: 0.1 for latents, 0.02 for pixels]."),
    click.option("--warmup_steps", type=click.IntRange(min=0), default=100, show_default=True,
                 help="Linear LR warm-up, then cosine decay over 1.5 x steps; unless typed, at most steps / 5."),
    click.option("--log_step", type=click.IntRange(min=0), default=25, show_default=True,
                 help="Save progress every N steps (0: never, and no progress/ files)."),
    click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
                 help="Model weights dtype: auto = fp16 on CUDA, fp32 on CPU (latents and losses stay fp32; "
                      "fp16 falls back to fp32 on CPU)."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 or mps."),
    click.option("--model", default="toy-sd", show_default=True,
                 help="Registry name (toy-sd, sd-2.1-base, ...) or a local Stable Diffusion folder."),
    click.option("--seed", type=int, default=0, show_default=True, help="Base seed (each prompt: seed + hash)."),
    click.option("--t_schedule", type=click.Choice(list(T_SCHEDULES)), default=None,
                 help="Timestep schedule [default: linear for sdi, uniform otherwise]."),
    click.option("--w_schedule", type=click.Choice(list(W_SCHEDULES)), default=None,
                 help="Weight w(t) [default: dreamfusion for sds/vsd, lucid for ism, constant for dds]."),
    click.option("--t_min", type=click.IntRange(0, 999), default=20, show_default=True, help="Smallest timestep."),
    click.option("--t_max", type=click.IntRange(0, 999), default=980, show_default=True, help="Largest timestep."),
    click.option("--representation", type=click.Choice(REPRESENTATIONS), default="latent", show_default=True,
                 help="Optimise SD latents or RGB pixels (encoded through the VAE every step)."),
    click.option("--grad_clip", type=finite(0, 1e4), default=0.0, show_default=True,
                 help="Clip each prompt's gradient norm (0: off; nycu-lab3 uses 1)."),
    click.option("--lora_lr", type=finite(0, 10), default=None,
                 help="VSD LoRA learning rate [default: 1e-3 on toy models, 1e-4 (the handouts') on real SD]."),
    click.option("--lora_rank", type=click.IntRange(1, 256), default=4, show_default=True, help="VSD LoRA rank."),
    click.option("--lora_loss_weight", type=finite(0, 1000), default=1.0, show_default=True,
                 help="Weight of the VSD LoRA loss."),
    click.option("--inversion_n_steps", type=click.IntRange(1, 1000), default=10, show_default=True,
                 help="SDI: DDIM inversion steps from x0 to t."),
    click.option("--inversion_guidance_scale", type=finite(-MAX_SCALE, MAX_SCALE), default=-7.5, show_default=True,
                 help="SDI: CFG scale during inversion (diffusers form eps_u + s (eps_c - eps_u))."),
    click.option("--inversion_eta", type=finite(0, 1), default=None,
                 help="SDI: inversion stochasticity in [0, 1] (0 = deterministic DDIM) [default: the handout's 0.3 "
                      "on real models; 1.0 (DDPM variance) on the toy models, the only value toy-sd passes its bar "
                      "with]."),
    click.option("--sdi_update_interval", type=click.IntRange(min=1), default=25, show_default=True,
                 help="SDI: refresh the target every N steps."),
    click.option("--ism_delta_t", type=click.IntRange(1, 999), default=80, show_default=True, help="ISM: t - s."),
    click.option("--ism_delta_s", type=click.IntRange(1, 999), default=200, show_default=True,
                 help="ISM: inversion step size up to s."),
    click.option("--ism_inv_steps", type=click.IntRange(0, 1000), default=5, show_default=True,
                 help="ISM: most inversion steps up to s."),
    click.option("--ism_grid", type=click.Choice(["2d-sds", "luciddreamer"]), default="2d-sds", show_default=True,
                 help="ISM inversion grid: 2d-sds (noise at s - n delta_s, n = min(s // delta_s, inv_steps)) or "
                      "luciddreamer (noise at the first step, delta_s steps with a partial last step up to s)."),
    click.option("--pds_posterior", type=click.Choice(["official", "exact"]), default="official", show_default=True,
                 help="PDS posterior: official (the PDS code's one-step beta_t with alpha_bar_{t-2}; pulls the "
                      "edit toward the source) or exact (t -> t-delta posterior; a time-weighted DDS)."),
    click.option("--sdi_inversion_form", type=click.Choice(["authors", "ddim"]), default=None,
                 help="SDI inversion step with eta > 0: authors (sqrt(1 - alpha_bar_next) eps_hat + sigma z, the SDI "
                      "code's, which the NYCU settings were tuned with) or ddim (sqrt(1 - alpha_bar_next - sigma^2) "
                      "eps_hat + sigma z) [default: authors on real models, ddim on the toy models]."),
    click.option("--batch_size", type=click.IntRange(1, MAX_PROMPTS), default=32, show_default=True,
                 help=f"Prompts optimised together; more run in consecutive batches (at most {MAX_PROMPTS} per "
                      "run). VSD's LoRA is shared within a batch only."),
    unet_speed_options("H200, SD 2.1, 1 prompt: SDS step 33 -> 11.5 ms, VSD 201 -> 42 ms"),
    click.option("--threads", type=click.IntRange(0, 1024), default=None,
                 help="CPU threads of torch (0: torch's default) [default: 1 for the embedded toy models, whose "
                      "tiny convolutions run fastest on one thread, 0 otherwise]."),
)


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Apply :data:`RUN_OPTIONS` (in their order in ``--help``) to a click command function."""
    for option in reversed(RUN_OPTIONS):
        command = option(command)
    return command


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--prompt", "prompts", multiple=True, help="Text prompt (PDS/DDS: the source prompt); repeat it to "
              "optimise several prompts together in one batch.")
@click.option("--prompts_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help=f"One prompt per line, or 'source | edit [| image]' per line for PDS/DDS (at most {MAX_PROMPTS} "
                   "prompts; split into batches of --batch_size).")
@click.option("--edit_prompt", default=None, help="Target prompt of PDS/DDS editing.")
@click.option("--src_img_path", type=click.Path(dir_okay=False), default=None, help="Source image of PDS/DDS.")
@click.option("--save_dir", "--store_dir", "save_dir", type=click.Path(file_okay=False), default="./outputs",
              show_default=True, help="Final images go here as <prompt_with_underscores>.png; progress/ holds "
              "snapshots (--store_dir: UMich HW5's name).")
@run_options
@click.pass_context
@user_errors
def main(ctx: click.Context, prompts: tuple[str, ...], prompts_file: str | None, edit_prompt: str | None,
         src_img_path: str | None, save_dir: str, loss_type: str, preset: str | None, **params) -> None:
    """Optimise an image (SD latents or pixels) with a score distillation loss.

    Several prompts are optimised together in one batch; with the same flags each prompt's result equals its
    single-prompt run (except VSD, whose LoRA is shared by the batch). Writes SAVE_DIR/<prompt>.png (PDS/DDS:
    the edit prompt), SAVE_DIR/config.json and SAVE_DIR/progress/<prompt>/ (snapshots | x0_hat | gradient
    heatmap strips, progress.gif and progressive.png: the snapshots with their step numbers). A single-prompt
    run also writes UMich HW5's SAVE_DIR/generated_image.png (the final image) and generated_progressive.png
    (unless --log_step 0). Every input is checked before anything is written.

    \b
    Examples:
      python -m distillation.main --prompt "a red circle on a blue background"
      python -m distillation.main --prompt "a red circle on a blue background" --loss_type vsd --guidance_scale 7.5
      python -m distillation.main --generation_mode=sds --store_dir=SDS_results --prompt "a red circle"
      python -m distillation.main --preset kaist-a4 --prompt "A castle next to a river"
      python -m distillation.main --preset nycu-lab3 --loss_type sdi --prompt "A dog sitting on grass"
      python -m distillation.main --loss_type pds --prompt "a red circle on a blue background" \\
          --edit_prompt "a green circle on a blue background" --src_img_path src.png
    """
    if not prompts and not prompts_file:
        raise UserError("give at least one --prompt (or --prompts_file)")
    settings = settings_from_context(ctx, params, loss_type, preset)
    items = build_items(prompts, prompts_file, edit_prompt, src_img_path)
    cfg = RunConfig(loss_type=loss_type, preset=preset, save_dir=save_dir, items=items,
                    **{k: settings[k] for k in OPTION_NAMES})
    for path in run(cfg, handout_files=True):
        click.echo(str(path))


if __name__ == "__main__":
    main()
