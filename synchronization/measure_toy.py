"""``python -m synchronization.measure_toy``: the toy quality bars of the synchronization package.

Wide (toy-sd): for each prompt and seed, a 64 x 384 panorama (41 windows of 16 latent px, stride 2, x0 sync);
its 8 eval crops (the handout's eval_pos of the same-index handout prompt, scaled by 64/512) are judged by
toy-clip (``common.toy.judge.fully_correct``): bar >= 80% of crops fully correct.

Seams (``seam_score``), on the decoded RGB panorama. The toy world's backgrounds are flat, so any horizontal
gradient in the background is an artefact, while object edges (large, anywhere) would swamp a faint seam: only
background pixel pairs count (both pixels within 0.25 of the median colour and 2 px from anything else).
A(c) = mean |I[:, y, c] - I[:, y, c-1]| over the background rows y (channel mean), d(c) = distance to the nearest
window border (pixel columns where a window starts or ends, on multiples of 32 px, at least 16 px from the
panorama's edges). seam = mean A over d <= 4 (one latent px) / mean A over 4 < d <= 16 (the rest, halfway to the
next border): 1 = the borders look like their surroundings, > 1 = a seam. ``control`` is the same score at the
midpoints between borders (content alone). Runs, same prompts and seeds: x0 sync at the default stride 2 (the
crop-bar image; borders every 8 px, scored on the ones every 32 px) and at stride 8; unsynchronized generation
(SyncTweedies case 0: each window from its own noise, the final windows averaged) at stride 8; independent
windows tiled side by side (borders every 64 px). Bar, per synchronized run: score < both unsynchronized.

Ambiguous (toy-pixel): for each prompt pair and seed, S_ij = toy-clip cosine of view i's image with prompt j;
a seed succeeds when S_00 > S_01 and S_11 > S_10: bar >= 70% of seeds per pair.
"""

from __future__ import annotations

import click
import torch

from common.cli import CONTEXT_SETTINGS, finite, user_errors
from common.gpu import get_device
from common.images import tensor_to_pil
from synchronization.config import MAX_GUIDANCE

WIDE_PROMPTS = ("a red circle on a blue background", "a yellow square on a green background",
                "a white triangle on a black background", "a purple circle on a yellow background")
AMBIGUOUS_PAIRS = (  # (views, prompt of view 0, prompt of view 1)
    (("identity", "rotate_cw"), "a white triangle on a black background", "a white square on a black background"),
    (("identity", "rotate_cw"), "a yellow triangle on a blue background", "a yellow circle on a blue background"),
    (("identity", "negate"), "a white circle on a black background", "a black circle on a white background"),
)


SEAM_RUNS = (  # (name, sync, stride in latent px (None = the default, "window" = tiles), init)
    ("x0 sync, stride 2 (default)", "x0", None, "canonical"),
    ("x0 sync, stride 8", "x0", 8, "canonical"),
    ("no sync, stride 8, windows averaged", "none", 8, "independent"),
    ("no sync, tiles side by side", "none", "window", "independent"),
)


def background_pairs(image: torch.Tensor, tau: float = 0.25, grow: int = 2) -> torch.Tensor:
    """[H, W-1] bool: both pixels of each horizontal pair are flat background (within ``tau`` of the median
    colour in every channel) and at least ``grow`` px from any other pixel."""
    bg = image.flatten(1).median(dim=1).values.view(-1, 1, 1)
    fg = ((image - bg).abs().amax(0) > tau).float()[None, None]  # [1, 1, H, W]
    fg = torch.nn.functional.max_pool2d(fg, 2 * grow + 1, stride=1, padding=grow)[0, 0] > 0
    return ~fg[:, 1:] & ~fg[:, :-1]


def seam_score(image: torch.Tensor, borders: list[int], halfwidth: int = 4, reach: int = 16) -> float:
    """Background |horizontal gradient| within ``halfwidth`` px of the borders / the same at
    ``halfwidth`` < d <= ``reach`` px (see the module docstring). image [C, H, W] in [-1, 1]; 1 = no seam."""
    width = image.shape[-1]
    inner = [b for b in borders if reach <= b <= width - reach]
    if not inner:
        raise ValueError(f"no window border at least {reach} px inside a {width}-px image")
    grad = (image[..., 1:] - image[..., :-1]).abs().mean(0)  # [H, W-1]; grad[:, c-1] is between columns c-1, c
    pairs = background_pairs(image).float()
    cols = torch.arange(1, width)
    dist = (cols[:, None] - torch.tensor(inner)[None, :]).abs().min(dim=1).values  # [W-1] d(c)

    def mean_on(columns: torch.Tensor) -> torch.Tensor:
        return (grad * pairs)[:, columns].sum() / pairs[:, columns].sum().clamp_min(1)

    band, ring = mean_on(dist <= halfwidth), mean_on((dist > halfwidth) & (dist <= reach))
    return float(band / ring.clamp_min(1e-12))


def window_borders(mapping, factor: int) -> list[int]:
    """Pixel columns where a window starts or ends."""
    edges = {w0 * factor for _, w0 in mapping.views} | {(w0 + mapping.window[1]) * factor for _, w0 in mapping.views}
    return sorted(edges)


def midpoints(borders: list[int]) -> list[int]:
    """Columns halfway between consecutive borders (the off-border control positions)."""
    return [(a + b) // 2 for a, b in zip(borders, borders[1:])]


def seam_and_control(run: dict, spacing: int = 32) -> tuple[float, float]:
    """(seam, off-border control) of a run, at its window borders on multiples of ``spacing`` px."""
    borders = [b for b in window_borders(run["mapping"], run["geometry"].factor) if b % spacing == 0]
    return seam_score(run["image"], borders), seam_score(run["image"], midpoints(borders))


def crops_hits(out: dict, positions: list[int], prompt: str) -> tuple[int, int]:
    from common.toy.judge import fully_correct

    crop = out["geometry"].window * out["geometry"].factor
    crops = torch.stack([out["image"][:, :, p : p + crop] for p in positions])
    return int(fully_correct(crops, [prompt] * len(crops)).sum()), len(crops)


def measure_wide(pipe, seeds: list[int], steps: int, prompts=WIDE_PROMPTS) -> dict:
    from synchronization.config import WideConfig
    from synchronization.prompts import wide_prompts
    from synchronization.wide_image import crop_positions, generate_wide, geometry

    handout, window = list(wide_prompts().values()), geometry(pipe).window
    correct, total = 0, 0
    scores = {name: ([], []) for name, *_ in SEAM_RUNS}  # name -> (seam scores, control scores)
    for k, prompt in enumerate(prompts):
        for seed in seeds:
            for name, sync, stride, init in SEAM_RUNS:
                cfg = WideConfig(prompt=prompt, num_inference_steps=steps, seed=seed, progress=False,
                                 stride=window if stride == "window" else stride, sync=sync, init=init)
                run = generate_wide(pipe, cfg)
                if stride is None:  # the default run is also the crop-bar image
                    hits, n = crops_hits(run, crop_positions(handout[k], run["geometry"]), prompt)
                    correct, total = correct + hits, total + n
                for values, value in zip(scores[name], seam_and_control(run)):
                    values.append(value)
    seam = {name: sum(s) / len(s) for name, (s, _) in scores.items()}
    control = {name: sum(c) / len(c) for name, (_, c) in scores.items()}
    worst_unsynced = min(v for name, v in seam.items() if name.startswith("no sync"))
    return {"crops_correct": correct / total, "crops": total, "seam": seam, "control": control,
            "seam_bar": {name: v < worst_unsynced for name, v in seam.items() if not name.startswith("no sync")}}


def measure_ambiguous(model, clip, seeds: list[int], steps: int, guidance_scale: float, pairs=AMBIGUOUS_PAIRS):
    from synchronization.ambiguous_image import generate_ambiguous
    from synchronization.config import AmbiguousConfig
    from synchronization.evaluate import similarity_matrix

    rows = []
    for views_names, p0, p1 in pairs:
        wins = 0
        for seed in seeds:
            cfg = AmbiguousConfig(prompts=(p0, p1), views_names=views_names, num_inference_steps=steps,
                                  guidance_scale=guidance_scale, seed=seed, progress=False)
            out = generate_ambiguous(model, cfg)
            sim = similarity_matrix(tensor_to_pil(out["views"]), [p0, p1], clip)
            wins += int(sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0])
        rows.append({"views": views_names, "prompts": (p0, p1), "success": wins / len(seeds)})
    return rows


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--app", type=click.Choice(["both", "wide_image", "ambiguous_image"]), default="both", show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True, help="Seeds per prompt / pair.")
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True, help="DDIM steps.")
@click.option("--guidance_scale", type=finite(min=0, max=MAX_GUIDANCE), default=7.5, show_default=True,
              help="CFG scale of the ambiguous runs (the wide runs use 7.5).")
@click.option("--device", default="auto", show_default=True)
@user_errors
def main(app: str, seeds: int, steps: int, guidance_scale: float, device: str) -> None:
    """Print the toy bars (needs the shipped toy-sd, toy-pixel and toy-clip weights).

    \b
    Examples:
      python -m synchronization.measure_toy --device cpu
      python -m synchronization.measure_toy --app ambiguous_image --seeds 10
    """
    from common.registry import load_clip, load_pixel, load_sd

    dev = get_device(device)
    seed_list = list(range(seeds))
    if app in ("both", "wide_image"):
        pipe = load_sd("toy-sd", dev)
        wide = measure_wide(pipe, seed_list, steps)
        click.echo(f"wide: {100 * wide['crops_correct']:.1f}% of {wide['crops']} eval crops fully correct "
                   f"(bar >= 80%: {'PASS' if wide['crops_correct'] >= 0.8 else 'FAIL'})")
        for name, value in wide["seam"].items():
            click.echo(f"  seam score (1 = none), {name}: {value:.3f} "
                       f"(off-border control {wide['control'][name]:.3f})")
        for name, ok in wide["seam_bar"].items():
            click.echo(f"  seams: {name} < both unsynchronized: {'PASS' if ok else 'FAIL'}")
    if app in ("both", "ambiguous_image"):
        model, clip = load_pixel("toy-pixel", dev), load_clip("toy-clip", dev)
        for row in measure_ambiguous(model, clip, seed_list, steps, guidance_scale):
            verdict = "PASS" if row["success"] >= 0.7 else "FAIL"
            click.echo(f"ambiguous {'+'.join(row['views'])}: '{row['prompts'][0]}' / '{row['prompts'][1]}': "
                       f"{100 * row['success']:.0f}% of {seeds} seeds (bar >= 70%: {verdict})")


if __name__ == "__main__":
    main()
