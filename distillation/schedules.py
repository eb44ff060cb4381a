"""Timestep and weight schedules for score distillation, as small pure functions.

A t-schedule returns the timestep of every optimisation step at once, ``LongTensor[n_steps]`` in
[t_min, t_max] (precomputed like the 2D SDS framework), drawing its randomness from the ``generator`` passed in,
so each prompt of a batch can own its generator. A w-schedule maps alpha_bar_t to the weight w(t).

t-schedules:
- ``uniform``: t ~ U{t_min..t_max} every step (DreamFusion, Poole et al. 2023, Sec. 3; KAIST/NYCU: U[20, 980]).
- ``linear``: deterministic linear anneal t_max -> t_min (SDI, Lukoianov et al. 2024, Sec. 5).
- ``hifa``: t_i = floor(t_max - (t_max - t_min) sqrt(i / n)) (HiFA, Zhu et al. 2024, Eq. 11).
- ``random_decay``: t ~ U{t_min..U_i} with the upper bound U_i decaying linearly from t_max to the middle of the
  range (ProlificDreamer's 0.98 -> 0.5 annealing, Wang et al. 2023, Sec. 5).
- ``dreamtime``: t_i = argmin_t |sum_{tau >= t} W(tau) - i/n| with W = W_d W_p / Z,
  W_d = sqrt((1 - alpha_bar_t) / alpha_bar_t), W_p = exp(-(t - m)^2 / (2 s^2)), m = 800, s = 300
  (DreamTime, Huang et al. 2024, Eq. 6-8; alpha_bar is *not* flipped, unlike the 2D framework).
- ``constant``: t = (t_min + t_max) // 2.

w-schedules (w(t) multiplies the score difference):
- ``dreamfusion``: 1 - alpha_bar_t (DreamFusion's default, Poole et al. 2023, App. A.4).
- ``lucid``: sqrt((1 - alpha_bar_t) / alpha_bar_t) (LucidDreamer's ISM weight, Liang et al. 2024, Eq. 16).
- ``fantasia3d``: sqrt(alpha_bar_t) (1 - alpha_bar_t) (Fantasia3D, Chen et al. 2023).
- ``constant``: 1.

``python -m distillation.schedules --plot FILE.png`` draws every t-schedule and w over the steps.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import torch

from common.cli import CONTEXT_SETTINGS, user_errors

TScheduleFn = Callable[[int, int, int, torch.Generator | None, torch.Tensor | None], torch.Tensor]


def uniform_t(n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
              alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """t_i ~ U{t_min, ..., t_max}, independently for every step."""
    return torch.randint(t_min, t_max + 1, (n_steps,), generator=generator)


def linear_t(n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
             alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """t_i = round(t_max - (t_max - t_min) i / (n - 1)): deterministic anneal from t_max to t_min."""
    return torch.linspace(t_max, t_min, n_steps, dtype=torch.float64).round().long()


def hifa_t(n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
           alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """t_i = floor(t_max - (t_max - t_min) sqrt(i / n)) (HiFA's square-root anneal)."""
    i = torch.arange(n_steps, dtype=torch.float64)
    return (t_max - (t_max - t_min) * (i / max(n_steps, 1)).sqrt()).floor().long()


def random_decay_t(n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
                   alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """t_i ~ U{t_min, ..., U_i}, U_i decaying linearly from t_max to (t_min + t_max) / 2."""
    frac = torch.linspace(0, 1, n_steps, dtype=torch.float64)
    upper = (t_max - frac * (t_max - t_min) / 2).floor()
    u = torch.rand(n_steps, generator=generator, dtype=torch.float64)
    return (t_min + (u * (upper - t_min + 1)).floor()).long().clamp(t_min, t_max)


def dreamtime_weights(alphas_cumprod: torch.Tensor, m: float = 800.0, s: float = 300.0) -> torch.Tensor:
    """DreamTime's normalised W(t) = W_d(t) W_p(t) / Z over t = 0..T-1 (float64 [T])."""
    a = alphas_cumprod.double()
    t = torch.arange(a.numel(), dtype=torch.float64)
    w = ((1 - a) / a).sqrt() * torch.exp(-((t - m) ** 2) / (2 * s**2))
    return w / w.sum()


def dreamtime_t(n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
                alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """t_i = argmin_t |sum_{tau >= t} W(tau) - i/n|, restricted to [t_min, t_max] (monotone non-increasing)."""
    if alphas_cumprod is None:
        raise ValueError("the dreamtime schedule needs alphas_cumprod")
    w = dreamtime_weights(alphas_cumprod)[t_min:t_max + 1]
    tail = w.flip(0).cumsum(0).flip(0) / w.sum()  # tail[k] = sum_{tau >= t_min + k} W(tau), normalised
    targets = torch.arange(n_steps, dtype=torch.float64) / max(n_steps, 1)
    idx = (tail[None, :] - targets[:, None]).abs().argmin(dim=1)
    return (t_min + idx).long()


def constant_t(n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
               alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """t_i = (t_min + t_max) // 2 for every step."""
    return torch.full((n_steps,), (t_min + t_max) // 2, dtype=torch.long)


T_SCHEDULES: dict[str, TScheduleFn] = {
    "uniform": uniform_t, "linear": linear_t, "hifa": hifa_t, "random_decay": random_decay_t,
    "dreamtime": dreamtime_t, "constant": constant_t,
}


def w_dreamfusion(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """w(t) = 1 - alpha_bar_t."""
    return 1 - alpha_bar_t


def w_lucid(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """w(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t), the inverse square-root SNR."""
    return ((1 - alpha_bar_t) / alpha_bar_t).sqrt()


def w_fantasia3d(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """w(t) = sqrt(alpha_bar_t) (1 - alpha_bar_t)."""
    return alpha_bar_t.sqrt() * (1 - alpha_bar_t)


def w_constant(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """w(t) = 1."""
    return torch.ones_like(alpha_bar_t)


W_SCHEDULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "dreamfusion": w_dreamfusion, "lucid": w_lucid, "fantasia3d": w_fantasia3d, "constant": w_constant,
}


def make_t_schedule(name: str, n_steps: int, t_min: int, t_max: int, generator: torch.Generator | None = None,
                    alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """Timesteps of all ``n_steps`` steps (LongTensor [n_steps]) for the named schedule."""
    if name not in T_SCHEDULES:
        raise ValueError(f"unknown t schedule {name!r}; choose one of {', '.join(T_SCHEDULES)}")
    if not 0 <= t_min <= t_max:
        raise ValueError(f"need 0 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    return T_SCHEDULES[name](n_steps, t_min, t_max, generator, alphas_cumprod)


def weight(name: str, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """w(t) of the named w-schedule at alpha_bar_t (float, 0-d or [B])."""
    if name not in W_SCHEDULES:
        raise ValueError(f"unknown w schedule {name!r}; choose one of {', '.join(W_SCHEDULES)}")
    return W_SCHEDULES[name](torch.as_tensor(alpha_bar_t, dtype=torch.float32))


def plot_schedules(path: str, n_steps: int = 500, t_min: int = 20, t_max: int = 980, seed: int = 0) -> str:
    """Save a figure with t_i of every t-schedule and w(t_i) of every w-schedule (uniform t) over the steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.schedules import make_alphas_cumprod

    alphas_cumprod = make_alphas_cumprod("scaled_linear", 1000, 0.00085, 0.012)  # Stable Diffusion
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name in T_SCHEDULES:
        t = make_t_schedule(name, n_steps, t_min, t_max, torch.Generator().manual_seed(seed), alphas_cumprod)
        axes[0].plot(t.numpy(), lw=0.8 if name in ("uniform", "random_decay") else 1.8, label=name,
                     alpha=0.5 if name in ("uniform", "random_decay") else 1.0)
    axes[0].set(title="t schedules", xlabel="optimisation step", ylabel="t")
    grid = torch.arange(t_min, t_max + 1)
    for name in W_SCHEDULES:
        w = weight(name, alphas_cumprod[grid])
        axes[1].plot(grid.numpy(), (w / w.max()).numpy(), label=f"{name} (max {w.max():.3g})")
    axes[1].set(title="w(t), normalised by its max", xlabel="t", ylabel="w / max w")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--plot", "plot_path", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--steps", type=click.IntRange(min=2), default=500, show_default=True, help="Optimisation steps.")
@click.option("--t_min", type=click.IntRange(0, 999), default=20, show_default=True, help="Smallest timestep.")
@click.option("--t_max", type=click.IntRange(0, 999), default=980, show_default=True, help="Largest timestep.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random schedules.")
@user_errors
def main(plot_path: str, steps: int, t_min: int, t_max: int, seed: int) -> None:
    """Plot every timestep schedule and weight w(t) (Stable Diffusion's alpha_bar).

    \b
    Examples:
      python -m distillation.schedules --plot schedules.png
      python -m distillation.schedules --plot s.png --steps 1000 --t_min 200
    """
    if t_min > t_max:
        raise ValueError(f"--t_min {t_min} is larger than --t_max {t_max}")
    click.echo(plot_schedules(plot_path, steps, t_min, t_max, seed))


if __name__ == "__main__":
    main()
