"""``python -m common.toy train <model>``: one click command per toy model, each with only its own options.

Each command validates everything (output folder, toy-clip folder, widths) into a frozen config dataclass before
it imports its trainer (lazily: the trainers pull in diffusers), so a bad option costs no training time.
``python -m common.toy.train_sd`` is :func:`train_sd` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from common.cli import CONTEXT_SETTINGS, IntListType, UserError, finite, user_errors
from common.files import check_overwrite
from common.hub import check_weight_files

DEVICES = ("auto", "cuda", "cpu", "mps")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options every toy trainer takes: output folder, device, step count (None: the trainer's own) and seed."""

    out: Path
    device: str = "auto"
    steps: int | None = None
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the trainer's ``train``; None (the trainer's default) is left out, except
        ``steps``, which every trainer takes."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "steps"}


@dataclasses.dataclass(frozen=True)
class SdConfig(TrainConfig):
    stage: str = "all"  # vae | unet | all
    clip: Path | None = None  # toy-clip folder of the frozen text encoder; None: the shipped one

    def kwargs(self) -> dict[str, Any]:
        return {**super().kwargs(), "clip": self.clip}


@dataclasses.dataclass(frozen=True)
class FacesConfig(TrainConfig):
    init_from: Path | None = None  # continue from this toy-faces folder
    lr: float | None = None
    batch_size: int | None = None
    dc_weight: float | None = None
    compile_model: bool | None = None
    low_snr_cap: float | None = None
    block_out_channels: tuple[int, ...] | None = None  # --widths
    time_budget_s: float | None = None

    def kwargs(self) -> dict[str, Any]:
        return {**super().kwargs(), "init_from": self.init_from}


def common_options(model: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device --out --force --steps --seed`` with ``outputs/toy-<model>`` as the default output folder."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                         help="Training device."),
            click.option("--out", type=click.Path(file_okay=False), default=f"outputs/toy-{model}",
                         show_default=True, help="Output folder. The shipped weights live in common/toy/models/; "
                         "replacing them needs --force."),
            click.option("--force", is_flag=True, default=False, help="Allow --out to replace shipped weights."),
            click.option("--steps", type=click.IntRange(min=1), default=None,
                         help="Training steps [default: the model's own]."),
            click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        )):
            fn = option(fn)
        return user_errors(fn)
    return decorate


def _checked_out(out: str, force: bool) -> Path:
    check_overwrite(out, force)
    return Path(out)


@click.group(context_settings=CONTEXT_SETTINGS)
def train() -> None:
    """Retrain a toy model (seeded), with a progress bar and a metrics table.

    \b
    Examples:
      python -m common.toy train clip --device cuda --out common/toy/models/toy-clip --force
      python -m common.toy train sd --stage vae --device cuda --out common/toy/models/toy-sd --force
      python -m common.toy train faces --device cuda --batch_size 1024 --compile --out outputs/faces-a
      python -m common.toy train pixel --device cuda --out common/toy/models/toy-pixel --force
    """


def toy_clip_folder(clip: str | None, needed: bool = True) -> Path | None:
    """``--clip`` as a toy-clip folder (a folder, or a registry name with a local folder); None: the shipped one.

    Checked before training starts, so ``--clip toy-nope`` is one line at once, not after the VAE stage.
    """
    from common.registry import resolve
    from common.toy.clip_model import check_folder

    if clip is None:
        if needed:
            check_folder(None)
        return None
    spec = resolve(clip, "clip")
    if spec.folder is None:
        raise UserError(f"--clip {clip}: toy-sd's text encoder is converted from a local open_clip folder such as "
                        f"toy-clip; {clip!r} ({spec.source}) is a Hub model")
    return check_folder(spec.folder)


@train.command("sd", context_settings=CONTEXT_SETTINGS)
@click.option("--stage", type=click.Choice(["all", "vae", "unet"]), default="all", show_default=True,
              help="vae: stage 1 only; unet: stage 2 only (needs OUT/vae and toy-clip); all: both.")
@click.option("--clip", default=None,
              help="toy-clip (registry name or open_clip folder) for the frozen text encoder "
                   "[default: the shipped common/toy/models/toy-clip].")
@common_options("sd")
def train_sd(stage: str, clip: str | None, device: str, out: str, force: bool, steps: int | None,
             seed: int) -> None:
    """Train toy-sd: the VAE (stage 1), then the UNet on frozen latents and toy-clip text (stage 2).

    \b
    Examples:
      python -m common.toy train sd --stage vae --device cuda --out common/toy/models/toy-sd --force
      python -m common.toy train sd --stage unet --device cuda --out common/toy/models/toy-sd --force
      python -m common.toy train sd --device cuda   # both stages into outputs/toy-sd
    """
    cfg = SdConfig(_checked_out(out, force), device, steps, seed, stage, toy_clip_folder(clip, stage != "vae"))
    from common.toy.train_sd import train as run

    run(**cfg.kwargs())


@train.command("clip", context_settings=CONTEXT_SETTINGS)
@common_options("clip")
def train_clip(device: str, out: str, force: bool, steps: int | None, seed: int) -> None:
    """Train toy-clip (CLIP on the shapes domain) and report its zero-shot accuracy.

    \b
    Examples:
      python -m common.toy train clip --device cuda --out common/toy/models/toy-clip --force
      python -m common.toy train clip --device cpu --steps 300 --out outputs/toy-clip-cpu
    """
    cfg = TrainConfig(_checked_out(out, force), device, steps, seed)
    from common.toy.train_clip import train as run

    run(**cfg.kwargs())


@train.command("pixel", context_settings=CONTEXT_SETTINGS)
@common_options("pixel")
def train_pixel(device: str, out: str, force: bool, steps: int | None, seed: int) -> None:
    """Train toy-pixel (pixel-space text-to-image on the shapes domain, toy-sd's text encoder).

    \b
    Examples:
      python -m common.toy train pixel --device cuda --out common/toy/models/toy-pixel --force
    """
    cfg = TrainConfig(_checked_out(out, force), device, steps, seed)
    from common.toy.train_pixel import train as run

    run(**cfg.kwargs())


def _check_widths(widths: list[int] | None, init_from: str | None) -> tuple[int, ...] | None:
    """``--widths`` as toy-faces ``block_out_channels`` (GroupNorm of 8 groups; 32-wide heads on the last two)."""
    if widths is None:
        return None
    if init_from is not None:
        raise UserError("--widths builds a new UNet; a run with --init_from keeps that folder's widths")
    if len(widths) != 4 or any(w < 8 or w % 8 for w in widths) or any(w % 32 for w in widths[2:]):
        raise UserError(f"--widths needs four multiples of 8, the last two multiples of 32; got {widths}")
    return tuple(widths)


@train.command("faces", context_settings=CONTEXT_SETTINGS)
@click.option("--init_from", type=click.Path(file_okay=False, exists=True), default=None,
              help="Continue training from this toy-faces folder.")
@click.option("--lr", type=finite(min=0, min_open=True), default=None, help="Peak learning rate [default: 1e-3].")
@click.option("--batch_size", type=click.IntRange(min=1), default=None, help="Batch size [default: 256].")
@click.option("--dc_weight", type=finite(min=0), default=None,
              help="Extra weight on the per-channel mean of the eps error [default: 20].")
@click.option("--compile", "compile_model", is_flag=True, default=False,
              help="Train through torch.compile (faster on a GPU after ~90 s of compiling).")
@click.option("--low_snr_cap", type=finite(min=1), default=None,
              help="Weight the noisiest steps' eps loss up to this factor (common.schedules.low_snr_weight) "
                   "[default: off].")
@click.option("--widths", type=IntListType(), default=None,
              help="From scratch: the UNet's four block widths, multiples of 8, the last two of 32 "
                   "[default: 32,32,64,96].")
@click.option("--time_budget", type=finite(min=60), default=None,
              help="Wall-time budget in seconds; training, compilation included, gets 40 s less (the rest is for "
                   "the FD evaluation), and fewer steps are run if they would not fit [default: 500].")
@common_options("faces")
def train_faces(init_from: str | None, lr: float | None, batch_size: int | None, dc_weight: float | None,
                compile_model: bool, low_snr_cap: float | None, widths: list[int] | None, time_budget: float | None,
                device: str, out: str, force: bool, steps: int | None, seed: int) -> None:
    """Train toy-faces (unconditional pixel DDPM on procedural faces), from scratch or from a folder.

    \b
    Examples:
      python -m common.toy train faces --device cuda --batch_size 1024 --low_snr_cap 30 --compile \\
          --time_budget 1450 --out outputs/faces-a
      python -m common.toy train faces --device cuda --init_from outputs/faces-a --lr 3e-4 --seed 1 \\
          --batch_size 1024 --low_snr_cap 30 --compile --time_budget 1250 --out outputs/faces-b
      python -m common.toy train faces --device cuda --widths 16,32,64,96 --batch_size 1024 --out outputs/w16
    """
    if init_from is not None:
        check_weight_files(init_from)  # pickles and corrupt safetensors refused before training starts
    cfg = FacesConfig(_checked_out(out, force), device, steps, seed,
                      init_from=None if init_from is None else Path(init_from), lr=lr, batch_size=batch_size,
                      dc_weight=dc_weight, compile_model=compile_model or None, low_snr_cap=low_snr_cap,
                      block_out_channels=_check_widths(widths, init_from), time_budget_s=time_budget)
    from common.toy.train_faces import train as run

    run(**cfg.kwargs())
