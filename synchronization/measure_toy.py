"""``python -m synchronization.measure_toy``: the toy quality bars of the synchronization package.

Wide (toy-sd): for each prompt and seed, a 64 x 384 panorama (41 windows of 16 latent px, stride 2, x0 sync);
its 8 eval crops (the handout's eval_pos of the same-index handout prompt, scaled by 64/512) are judged by
toy-clip (``common.toy.judge.fully_correct``): bar >= 80% of crops fully correct. Seams: the horizontal gradient
energy on window-border columns relative to all columns, G(b) = mean |I[:, :, b] - I[:, :, b-1]|^2,
seam = mean_b G(b) / mean_c G(c) (1 = no seams). Measured on the same prompts and seeds at stride 8 (borders
every 32 px) for x0 sync and for unsynchronized windows (``sync none``, the windows averaged), plus independent
non-overlapping tiles stitched side by side (borders every 64 px): bar = synchronized seam < both.

Ambiguous (toy-pixel): for each prompt pair and seed, S_ij = toy-clip cosine of view i's image with prompt j;
a seed succeeds when S_00 > S_01 and S_11 > S_10: bar >= 70% of seeds per pair.
"""

from __future__ import annotations

import click
import torch

from common.cli import user_errors
from common.gpu import get_device
from common.images import tensor_to_pil

WIDE_PROMPTS = ("a red circle on a blue background", "a yellow square on a green background",
                "a white triangle on a black background", "a purple circle on a yellow background")
AMBIGUOUS_PAIRS = (  # (views, prompt of view 0, prompt of view 1)
    (("identity", "rotate_cw"), "a white triangle on a black background", "a white square on a black background"),
    (("identity", "rotate_cw"), "a yellow triangle on a blue background", "a yellow circle on a blue background"),
    (("identity", "negate"), "a white circle on a black background", "a black circle on a white background"),
)


def seam_score(image: torch.Tensor, borders: list[int]) -> float:
    """mean G(b) over border columns / mean G(c) over all columns, G(c) = mean |I[..., c] - I[..., c-1]|^2."""
    grad = (image[..., 1:] - image[..., :-1]).pow(2).mean(dim=(0, 1))  # [W-1]; grad[c-1] is G(c)
    inner = [b for b in borders if 0 < b < image.shape[-1]]
    return float(grad[[b - 1 for b in inner]].mean() / grad.mean().clamp_min(1e-12))


def window_borders(mapping, factor: int) -> list[int]:
    """Pixel columns where a window starts or ends."""
    edges = {w0 * factor for _, w0 in mapping.views} | {(w0 + mapping.window[1]) * factor for _, w0 in mapping.views}
    return sorted(edges)


def measure_wide(pipe, seeds: list[int], steps: int, prompts=WIDE_PROMPTS) -> dict:
    from common.toy.judge import fully_correct
    from synchronization.prompts import wide_prompts
    from synchronization.wide_image import crop_positions, generate_wide

    handout = list(wide_prompts().values())
    correct, total, seams = 0, 0, {"x0 sync (stride 8)": [], "no sync (stride 8)": [], "independent tiles": []}
    for k, prompt in enumerate(prompts):
        for seed in seeds:
            out = generate_wide(pipe, prompt, num_inference_steps=steps, seed=seed, progress=False)
            geo, image = out["geometry"], out["image"]
            crop = geo.window * geo.factor
            crops = torch.stack([image[:, :, p : p + crop] for p in crop_positions(handout[k], geo)])
            hits = fully_correct(crops, [prompt] * len(crops))
            correct, total = correct + int(hits.sum()), total + len(crops)
            for name, sync, stride in (("x0 sync (stride 8)", "x0", 8), ("no sync (stride 8)", "none", 8),
                                       ("independent tiles", "none", geo.window)):
                run = generate_wide(pipe, prompt, num_inference_steps=steps, seed=seed, progress=False,
                                    stride=stride, sync=sync, init="canonical" if sync != "none" else "independent")
                seams[name].append(seam_score(run["image"], window_borders(run["mapping"], geo.factor)))
    mean = {k: sum(v) / len(v) for k, v in seams.items()}
    return {"crops_correct": correct / total, "crops": total, "seam": mean,
            "seam_bar": mean["x0 sync (stride 8)"] < min(mean["no sync (stride 8)"], mean["independent tiles"])}


def measure_ambiguous(model, clip, seeds: list[int], steps: int, guidance_scale: float, pairs=AMBIGUOUS_PAIRS):
    from synchronization.ambiguous_image import generate_ambiguous
    from synchronization.evaluate import similarity_matrix
    from synchronization.views import get_view

    rows = []
    for views_names, p0, p1 in pairs:
        views = [get_view(n) for n in views_names]
        wins = 0
        for seed in seeds:
            out = generate_ambiguous(model, [p0, p1], views, num_inference_steps=steps, guidance_scale=guidance_scale,
                                     seed=seed, progress=False)
            sim = similarity_matrix(tensor_to_pil(out["views"]), [p0, p1], clip)
            wins += int(sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0])
        rows.append({"views": views_names, "prompts": (p0, p1), "success": wins / len(seeds)})
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app", type=click.Choice(["both", "wide_image", "ambiguous_image"]), default="both", show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True, help="Seeds per prompt / pair.")
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True, help="DDIM steps.")
@click.option("--guidance_scale", type=click.FloatRange(min=0), default=7.5, show_default=True,
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
            click.echo(f"  seam energy ratio, {name}: {value:.3f}")
        click.echo(f"  seams: synchronized < unsynchronized: {'PASS' if wide['seam_bar'] else 'FAIL'}")
    if app in ("both", "ambiguous_image"):
        model, clip = load_pixel("toy-pixel", dev), load_clip("toy-clip", dev)
        for row in measure_ambiguous(model, clip, seed_list, steps, guidance_scale):
            verdict = "PASS" if row["success"] >= 0.7 else "FAIL"
            click.echo(f"ambiguous {'+'.join(row['views'])}: '{row['prompts'][0]}' / '{row['prompts'][1]}': "
                       f"{100 * row['success']:.0f}% of {seeds} seeds (bar >= 70%: {verdict})")


if __name__ == "__main__":
    main()
