"""End-to-end case of KAIST CS492D A5 Task 1 (wide images): a toy panorama of the student's SyncTweedies, scored
by toy bands.

The case runs ``python -m synchronization.main --app wide_image`` on the embedded toy world, in-process:
``synchronization.wide_image.generate_wide`` with the task's prompt (the handout's fixed settings: x0
synchronization, guidance 7.5, deterministic DDIM; 12 steps instead of the handout's 50), a 64 x 384 toy-sd
panorama (11 windows at stride 8 instead of the default 41 at stride 2: a quarter of the cost, half-window
overlaps), then its 64 x 64 crops at the default evaluation offsets (``default_positions``: the toy prompt is
not a handout prompt). It returns the crops [K, 3, 64, 64] in [-1, 1]; the trusted parent
(:mod:`grading.e2e`) scores each against the prompt with toy-clip (eval.py's ``--app wide_images`` score) and
maps the score through the calibrated toy bands. The blank baseline decodes the initial canonical noise (what no
denoising leaves). Every region of Task 1 runs: phi / psi (``compute_tweedie``, ``compute_prev_state``),
``one_step_process`` and the window mappings f / g.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, EndToEnd, Outputs

END_TO_END = True  # grading.grade hands this module to grading.e2e (no reference comparison)
PROMPT = "a red circle on a blue background"  # the task's toy command (grading/homeworks/kaist_a5.py)
STEPS, GUIDANCE, STRIDE = 12, 7.5, 8  # stride 8 of 16 latent px: 11 windows (the default 2 gives 41, 4x slower)
N_CROPS = 8  # synchronization.wide_image.default_positions
REGIONS = ("sync-tweedie", "sync-prev-state", "sync-one-step", "wide-forward-mapping", "wide-inverse-mapping")


def run_wide(seed: int, steps: int, stride: int = STRIDE) -> Outputs:
    """The toy panorama of :data:`PROMPT` after ``steps`` DDIM steps (0: the decoded initial noise), as its
    :data:`N_CROPS` evaluation crops ``{"images": [K, 3, 64, 64]}``."""
    from common.gpu import seed_everything
    from common.registry import load_sd
    from synchronization.config import WideConfig
    from synchronization.wide_image import decode_latent, default_positions, generate_wide, geometry
    from synchronization.windows import WindowMapping

    torch.set_num_threads(1)
    seed_everything(seed)
    pipe = load_sd("toy-sd", torch.device("cpu"), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    geo = geometry(pipe, stride=stride)
    if steps:
        cfg = WideConfig(prompt=PROMPT, stride=stride, num_inference_steps=steps, guidance_scale=GUIDANCE, sync="x0",
                         seed=seed, progress=False)
        image = generate_wide(pipe, cfg)["image"]  # [3, 64, 384]
    else:
        mapping = WindowMapping(*geo.latent_hw, geo.window, geo.stride, False)
        z_T = torch.randn((1, int(pipe.unet.config.in_channels), *geo.latent_hw),
                          generator=torch.Generator().manual_seed(seed))
        image = decode_latent(pipe, z_T, mapping)
    crop = geo.window * geo.factor
    positions = default_positions(geo, N_CROPS)
    return {"images": torch.stack([image[:, :crop, p:p + crop] for p in positions]).float().contiguous()}


_SPEC = EndToEnd("sync-wide", (PROMPT,) * N_CROPS, REGIONS, results="wide_images", app="wide_images")
CASES = (
    Case("e2e/wide", 1.0, partial(run_wide, steps=STEPS), title="toy end-to-end CLIP score", timeout_s=300.0,
         end_to_end=_SPEC,
         feedback=f"SyncTweedies (x0 sync) wide image on toy-sd, 64 x 384, {STEPS} DDIM steps, guidance {GUIDANCE:g}: "
                  f"its {N_CROPS} evaluation crops are scored with toy-clip against {PROMPT!r}."),
    Case("e2e/wide-blank", 0.0, partial(run_wide, steps=0), title="blank baseline (initial noise)",
         end_to_end=EndToEnd("sync-wide", _SPEC.captions, REGIONS, _SPEC.results, app="wide_images",
                             role="baseline")),
)
MISTAKES = ()
