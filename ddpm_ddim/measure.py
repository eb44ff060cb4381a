"""Toy bar: Fréchet distance of DDPM-1000 and DDIM-50 toy-faces samples vs held-out faces.

Bar (issue 5): each sampler's FD within 2x of the data-vs-data FD and far below (here: <= 1/4 of) the
noise-vs-data FD, at the same number of samples. Prints a table; ``--json`` also writes it.

Example:
  python -m ddpm_ddim.measure --num_samples 512 --device cuda
"""

from __future__ import annotations

import click

from common.cli import CONTEXT_SETTINGS, user_errors
from common.gpu import CudaTimer, get_device, seed_everything
from common.runs import write_json_atomic
from common.toy.fid import data_vs_data_spread, face_fd_report, load_feature_extractor
from ddpm_ddim.sampling import load_model, sample_images
from ddpm_ddim.schedulers import make_scheduler


def measure_fd(model: str, num_samples: int, ddpm_steps: int, ddim_steps: int, batch_size: int, device,
               seed: int = 0, progress: bool = True, baseline_draws: int = 5) -> dict:
    """{'rows': {name: {'fd', 'ratio', 'seconds'}}, 'features': label, 'num_samples': n,
    'data_vs_data_draws': [FD of each independent draw of data vs data]}."""
    unet, config = load_model(model, device)
    samples, seconds = {}, {}
    for name, steps in (("DDPM", ddpm_steps), ("DDIM", ddim_steps)):
        if steps <= 0:
            continue
        with CudaTimer(device) as timer:
            samples[f"{name}-{steps}"] = sample_images(unet, make_scheduler(name, config), num_samples, steps,
                                                       seed, batch_size, progress=progress)
        seconds[f"{name}-{steps}"] = timer.ms / 1000
    features = load_feature_extractor(device)
    fds, label = face_fd_report(samples, num_samples, device, features)
    base = fds["data-vs-data"]
    rows = {k: {"fd": v, "ratio": v / base, "seconds": seconds.get(k)} for k, v in fds.items()}
    draws = [base, *data_vs_data_spread(num_samples, baseline_draws, device, features, first=1)]
    return {"rows": rows, "features": label, "num_samples": num_samples, "data_vs_data_draws": draws}


def format_fd_table(result: dict) -> str:
    lines = [f"toy-faces FD ({result['features']}, n={result['num_samples']})",
             f"{'samples':<16}{'FD':>10}{'x data':>9}{'x noise':>9}{'bar':>6}{'seconds':>10}"]
    noise = result["rows"]["noise-vs-data"]["fd"]
    for name, row in result["rows"].items():
        ok = row["ratio"] <= 2 and row["fd"] <= 0.25 * noise
        bar = "" if name.endswith("data") else ("pass" if ok else "FAIL")
        sec = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"{name:<16}{row['fd']:>10.4f}{row['ratio']:>9.2f}{row['fd'] / noise:>9.3f}{bar:>6}{sec:>10}")
    draws = result.get("data_vs_data_draws", [])
    if len(draws) > 1:
        mean = sum(draws) / len(draws)
        lines.append(f"data-vs-data over {len(draws)} independent draws: mean {mean:.4f}, "
                     f"range {min(draws):.4f}-{max(draws):.4f} (how much the baseline itself moves at this n)")
    lines.append("bar: FD <= 2x data-vs-data and <= 0.25x noise-vs-data, at the same n")
    return "\n".join(lines)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", default="toy-faces", show_default=True)
@click.option("--num_samples", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--ddpm_steps", type=click.IntRange(min=0, max=1000), default=1000, show_default=True,
              help="0 skips DDPM.")
@click.option("--ddim_steps", type=click.IntRange(min=0, max=1000), default=50, show_default=True,
              help="0 skips DDIM.")
@click.option("--batch_size", type=click.IntRange(min=1), default=None,
              help="Images per UNet call [default: 256 on a GPU, 16 on a CPU, where small batches stay in cache "
                   "(1.5x faster on 2 cores)].")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--baseline_draws", type=click.IntRange(min=1), default=5, show_default=True,
              help="Independent data-vs-data draws to report the baseline's spread (1 = only the bar's draw).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the numbers.")
@user_errors
def main(model, num_samples, ddpm_steps, ddim_steps, batch_size, device, seed, baseline_draws, json_path):
    """Print the toy-faces sampling bar table (FD of DDPM / DDIM samples vs data and noise baselines).

    \b
    Examples:
      python -m ddpm_ddim.measure --device cuda
      python -m ddpm_ddim.measure --model outputs/faces-next --device cuda --seed 100000 --json fd.json
      python -m ddpm_ddim.measure --device cpu --num_samples 64 --ddpm_steps 0
    """
    seed_everything(seed)
    device = get_device(device)
    batch_size = batch_size or (16 if device.type == "cpu" else 256)
    result = measure_fd(model, num_samples, ddpm_steps, ddim_steps, batch_size, device, seed,
                        baseline_draws=baseline_draws)
    click.echo(format_fd_table(result))
    if json_path:
        write_json_atomic(json_path, result)


if __name__ == "__main__":
    main()
