"""End-to-end cases of the distillation tasks: a short toy evaluation of the student's method, scored by toy bands.

Each graded case runs the method as ``python -m distillation.evaluate --loss_type <m>`` does on the embedded
toy world (``toy-sd``, CPU, one thread), but short: the first K captions of its 10 held-out toy captions
(:func:`distillation.evaluate.toy_items`; PDS edits a rendered image to a new object colour), the handout's fixed
guidance scale (SDS 25: KAIST A4 / NYCU Lab 3 "--guidance_scale 25"; PDS, VSD, SDI 7.5) and few steps, through
the package's own :class:`distillation.runner.Run` (so the student's ``get_*_loss`` and region functions run,
no subprocess). It returns the final images [K, 3, 64, 64] in [-1, 1]; the trusted parent
(:mod:`grading.e2e`) scores them with toy-clip against :data:`CAPTIONS` and maps the score through the task's
calibrated toy bands. The ``*-blank`` cases (0 steps: the starting images, what a zero update leaves) are the
baseline b of the calibration (KAIST/NYCU-style half band at b + (mu_ref - b) / 2).

Sizes (K, steps) keep a homework's end-to-end cases (one sandboxed worker per task) within ~2 minutes on a
2-core CPU (measured on a shared, loaded one: KAIST A4 68 s, NYCU Lab 3 78 s) while the reference lands far above
the blank baseline and a sign-flipped method below it. Reference toy-clip score over seeds 0-2 (mean, sd) and
blank b: SDS 0.874 +- 0.013, b -0.06 (flipped: ~0); PDS 0.943 +- 0.038, b 0.50 (the unedited source); VSD
0.632 +- 0.030, b 0.04 (flipped: -0.2); SDI 0.955 +- 0.019, b -0.06. A 1e-6 relative change of g moves the SDS
score by 1e-7: numerically equivalent implementations land on the reference's score. The captions are data
here (the parent knows them without importing the package); a run whose package draws other captions fails.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, EndToEnd, Outputs

END_TO_END = True  # grading.grade hands this module to grading.e2e (no reference comparison)
N_TOY = 10  # distillation.evaluate --n_toy default: the cases use the first K captions of this evaluation set
_TEXT = ("a black circle on a green background", "a red square on a black background",
         "a green circle on a yellow background", "an orange square on a white background",
         "a red triangle on a black background", "an orange triangle on a blue background")
_EDITS = ("an orange circle on a green background", "a purple square on a black background",
          "a blue circle on a yellow background", "a yellow square on a white background")


def _regions(method: str) -> tuple[str, ...]:
    if method == "sdi":
        return ("sdi-invert-noise", "sdi-refresh", "sdi-loss")
    return (f"{method}-loss",)


# method -> (captions, steps, guidance scale s): K = len(captions)
SETTINGS: dict[str, tuple[tuple[str, ...], int, float]] = {
    "sds": (_TEXT, 80, 25.0),
    "pds": (_EDITS, 50, 7.5),
    "vsd": (_TEXT[:4], 50, 7.5),
    "sdi": (_TEXT, 150, 7.5),
}
CAPTIONS = {method: captions for method, (captions, _, _) in SETTINGS.items()}


def run_toy(seed: int, method: str, steps: int, pipe=None) -> Outputs:
    """The first K toy items of ``method`` optimised for ``steps`` steps on toy-sd (CPU, one thread).

    Warm-up is a fifth of the steps (the toy default, 100, would keep a short run in warm-up); everything else
    is ``distillation.evaluate``'s toy setting. ``pipe``: a loaded toy-sd to reuse (in-process callers; VSD adds
    a LoRA to it), else a fresh one. Returns ``{"images": [K, 3, 64, 64]}`` in [-1, 1].
    """
    from common.gpu import seed_everything
    from common.registry import load_sd
    from distillation.evaluate import make_config, toy_items
    from distillation.runner import Run, check_items

    captions, full_steps, scale = SETTINGS[method]
    items, drawn = toy_items(method, N_TOY)
    if tuple(drawn[:len(captions)]) != captions:
        raise RuntimeError(f"distillation.evaluate.toy_items draws other {method} captions than this case expects")
    settings = {"model": "toy-sd", "device": "cpu", "seed": seed, "steps": steps, "guidance_scale": scale,
                "warmup_steps": max(1, full_steps // 5), "log_step": 0}
    cfg = make_config(method, None, settings, items[:len(captions)], save_dir="unused")
    check_items(cfg)
    torch.set_num_threads(1)
    seed_everything(seed)
    device = torch.device("cpu")
    pipe = pipe if pipe is not None else load_sd("toy-sd", device, torch.float32)
    images = Run(cfg, pipe, device).optimise(progress=False)  # [K, 3, 64, 64]
    return {"images": images.detach().float().contiguous()}


def _cases(method: str) -> tuple[Case, Case]:
    captions, steps, scale = SETTINGS[method]
    name = method.upper()
    spec = EndToEnd(method, captions, _regions(method), results=f"outputs/{method}")
    graded = Case(f"e2e/{method}", 1.0, partial(run_toy, method=method, steps=steps),
                  title="toy end-to-end CLIP score", timeout_s=300.0, end_to_end=spec,
                  feedback=f"{name} on toy-sd for {len(captions)} held-out toy captions, {steps} steps, guidance "
                           f"{scale:g}: the final images are scored with toy-clip against their captions.")
    blank = Case(f"e2e/{method}-blank", 0.0, partial(run_toy, method=method, steps=0),
                 title="blank baseline (no update)", timeout_s=120.0,
                 end_to_end=EndToEnd(method, captions, spec.regions, spec.results, role="baseline"))
    return graded, blank


CASES = tuple(c for method in SETTINGS for c in _cases(method))
MISTAKES = ()
