"""``python -m distillation.measure_toy``: the toy quality bars of issue 4 on the shipped toy-sd, as a table.

- SDS (guidance 25), VSD and SDI (guidance 7.5) on 30 held-out captions: fraction judged fully correct by
  toy-clip (colour, shape and background; ``common.toy.judge``). Bar: >= 80 %.
- PDS and DDS edits that change the object colour of a rendered held-out image: fraction whose result is judged
  to be the edit caption (new colour, same shape and background). Bar: >= 80 %.
- Wall time of the default single-prompt command (500 steps). Bar: < 60 s on a 2-core CPU.
All prompts of a method run in one batch (VSD: one LoRA shared by the batch).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from common.cli import CONTEXT_SETTINGS, user_errors
from distillation.evaluate import judge_accuracy, make_config, toy_items
from distillation.main import main as distill_main
from distillation.runner import MAX_PROMPTS, OPTION_NAMES, run

BARS = (("sds", 25.0), ("vsd", 7.5), ("sdi", 7.5), ("pds", 7.5), ("dds", 7.5))


def time_default_command(save_dir: str, steps: int, device: str, model: str) -> float:
    """Seconds for ``python -m distillation.main --prompt "a red circle on a blue background"`` in a fresh process."""
    cmd = [sys.executable, "-m", "distillation.main", "--prompt", "a red circle on a blue background",
           "--steps", str(steps), "--save_dir", save_dir, "--device", device, "--model", model]
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise ValueError(f"the default command failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``("lr=0.05", "t_schedule=hifa")`` -> settings converted and range-checked by the option types of
    ``python -m distillation.main`` (so ``lr=nan`` or ``guidance_scale=1e30`` is refused like on its command line)."""
    types = {p.name: p.type for p in distill_main.params}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in OPTION_NAMES:
            raise ValueError(f"--set expects KEY=VALUE with KEY one of {', '.join(OPTION_NAMES)}; got {pair!r}")
        try:
            out[key] = types[key].convert(value, None, None)
        except click.BadParameter as err:
            raise ValueError(f"--set {key}: {err.message}") from err
    return out


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--n", type=click.IntRange(1, MAX_PROMPTS), default=30, show_default=True, help="Held-out captions.")
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True, help="Steps per run.")
@click.option("--methods", default=",".join(m for m, _ in BARS), show_default=True, help="Comma-separated.")
@click.option("--model", default="toy-sd", show_default=True, help="toy-sd or a folder in the same domain.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Keep the images here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed.")
@click.option("--timing/--no-timing", default=True, show_default=True,
              help="Also time the default single-prompt command on the CPU (the 60 s bar).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a run setting for every method, e.g. --set lora_lr=1e-4 --set lr=0.05.")
@user_errors
def main(n: int, steps: int, methods: str, model: str, device: str, out: str | None, seed: int,
         timing: bool, overrides: tuple[str, ...]) -> None:
    """Measure the toy quality bars and the speed of the default command; print a table.

    \b
    Examples:
      python -m distillation.measure_toy
      python -m distillation.measure_toy --methods sds,pds --n 10 --steps 200
      python -m distillation.measure_toy --methods vsd --set lora_lr=1e-4 --device cuda   # the handouts' LoRA LR
    """
    extra = parse_overrides(overrides)
    root = Path(out or tempfile.mkdtemp(prefix="measure-toy-"))
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    rows = []
    for method, scale in BARS:
        if method not in wanted:
            continue
        items, captions = toy_items(method, n)
        explicit = {"guidance_scale": scale, "steps": steps, "model": model, "device": device, "seed": seed,
                    "log_step": 0, "batch_size": n} | extra
        start = time.perf_counter()
        paths = run(make_config(method, None, explicit, items, str(root / method)), progress=True)
        seconds = time.perf_counter() - start
        acc = judge_accuracy(paths, captions)
        rows.append((method, scale, acc, seconds))
    click.echo(f"\n{'method':<8}{'guidance':>9}{'correct':>9}{'color':>7}{'shape':>7}{'bg':>7}{'bar':>5}{'pass':>6}"
               f"{'seconds':>9}   (n={n}, {steps} steps, one batch)")
    for method, scale, acc, seconds in rows:
        click.echo(f"{method:<8}{scale:>9.1f}{acc['all']:>9.1%}{acc['color']:>7.0%}{acc['shape']:>7.0%}"
                   f"{acc['background']:>7.0%}{'80%':>5}{'yes' if acc['all'] >= 0.8 else 'NO':>6}{seconds:>9.1f}")
    click.echo(f"images: {root}")
    if not timing:
        return
    secs = time_default_command(str(root / "timing"), steps, "cpu", model)
    click.echo(f"default command, {steps} steps: {secs:.1f} s (CPU; bar: < 60 s on a 2-core CPU)")


if __name__ == "__main__":
    main()
