"""KAIST CS492D (Fall 2024) Assignment 5: diffusion synchronization (SyncTweedies) for wide and ambiguous images.

Handout: ``shared/seeds/004_*.txt`` (the README). Points ("Grading"): Task 1 and Task 2 10 each, optional Task 3 5,
from the CLIP score (>= 0.28 full, [0.26, 0.28) half, below 0.26 nothing); total 20 (+5). Zero for code changed
outside the TODO sections "or use different hyperparameters that are supposed to be fixed as given" (the default
configurations: wide 50 DDIM steps at guidance 7.5, ambiguous 30 steps at guidance 10, deterministic sampling).
Submission ("What to Submit"): ``{NAME}_{STUDENT_ID}.zip`` with the code, the PDF and the images with ``eval.json``
in ``wide_images/`` and ``ambiguous_images/``; "a 10% deduction for each missing item in the submission item list".

Task 0's phi / psi (``compute_tweedie``, ``compute_prev_state``) are needed by every task; they count for Task 1,
whose section says to implement them first. ``one_step_process`` (region ``sync-one-step``) holds the x0 case that
Tasks 1-2 run and the eps / x_t cases of Task 3 in one region, so it counts for Task 1 too.
"""

from __future__ import annotations

from grading.homeworks.shared import code_item, kaist_bands, result_items, toy_bands
from grading.spec import Homework, Item, Task

MAPS = "tests/synchronization/test_sync_maps.py"
CASES = "tests/synchronization/test_sync_cases.py"
TOY_WIDE = '"a red circle on a blue background"'
REAL_WIDE = '"A sweeping panoramic view of the Grand Canyon at sunset"'
TOY_PAIR = '"a white circle on a black background" "a white square on a black background"'
REAL_PAIR = '"an oil painting of a snowy mountain village" "an oil painting of a horse"'


def wide(real: bool) -> str:
    """``main.py --app wide_image`` then ``eval.py --app wide_images`` (crops at the JSON eval_pos)."""
    model = " --model sd-2-base --device cuda" if real else ""
    clip = " --clip_model clip-vit-b-32" if real else ""
    return (f"python -m synchronization.main --app wide_image --prompt {REAL_WIDE if real else TOY_WIDE} "
            f"--save_dir wide_images{model} && python -m synchronization.evaluate --app wide_image "
            f"--fdir wide_images{clip}")


def ambiguous(real: bool, folder: str = "ambiguous_images", extra: str = "") -> str:
    """``main.py --app ambiguous_image`` then ``eval.py --app ambiguous_images``."""
    model = " --model deepfloyd-if --device cuda" if real else ""
    clip = " --clip_model clip-vit-b-32" if real else ""
    return (f"python -m synchronization.main --app ambiguous_image --prompts {REAL_PAIR if real else TOY_PAIR}"
            f"{extra} --save_dir {folder}{model} && python -m synchronization.evaluate --app ambiguous_image "
            f"--fdir {folder}{clip}")


def inner_rotate(real: bool) -> str:
    """Task 3: identity + inner_rotate, one run per synchronized variable (eps, x0, x_t)."""
    return " && ".join(ambiguous(real, f"ambiguous_images_inner_rotate/{sync}",
                                 f" --views_names identity inner_rotate --rotate_angle 90 --sync {sync}")
                       for sync in ("eps", "x0", "xt"))


# The reference SyncTweedies core (common/sync.py) answers the tasks; nothing in synchronization calls these.
SYNC_ANSWERS = tuple(f"common.sync.{name}" for name in (
    "crop_windows", "paste_windows", "rotate_quarter_turns", "inner_rotation_index", "tweedie_x0", "ddim_from_x0",
    "sync_ddim_step"))

HOMEWORK = Homework(
    id="kaist-a5",
    title="KAIST CS492D Assignment 5: Diffusion Synchronization",
    handout="004_9ca8679ac369c555.txt",
    packages=("synchronization",),
    tasks=(
        # "Task 0" (compute_tweedie, compute_prev_state) + "Task 1: Arbitrary-Sized Image Generation"
        # (forward_mapping / inverse_mapping of the wide image model).
        Task(id="task1-wide", title="Task 1: arbitrary-sized (wide) images", points=10,
             regions=("sync-tweedie", "sync-prev-state", "sync-one-step", "wide-forward-mapping",
                      "wide-inverse-mapping"),
             cases=("grading.cases.sync_wide", "grading.cases.e2e_sync"),
             public_tests=(f"{MAPS}::test_non_overlapping_windows_are_an_exact_round_trip",
                           f"{MAPS}::test_overlapping_windows_average_with_the_right_weights",
                           f"{CASES}::test_reverse_step_equals_ddim_scheduler_step",
                           f"{CASES}::test_fp16_last_step_is_finite",
                           f"{CASES}::test_cases_coincide_from_one_canonical_noise[windows]",
                           f"{CASES}::test_single_identity_view_is_plain_ddim"),
             command=wide(False), real_command=wide(True),
             fixed={"num_inference_steps": 50, "guidance_scale": 7.5, "sync": "x0"},
             bands=kaist_bands(), toy_bands=toy_bands(kaist_bands())),
        # "Task 2: Ambiguous Image Generation": view() / inverse_view() of the 90-degree rotation.
        Task(id="task2-ambiguous", title="Task 2: ambiguous images (90-degree rotation)", points=10,
             regions=("rotate-view", "rotate-inverse-view"),
             cases=("grading.cases.sync_views",),
             public_tests=(f"{MAPS}::test_rotation_directions",
                           f"{MAPS}::test_views_invert_exactly_and_keep_gaussian_statistics[16-rotate_cw]",
                           f"{MAPS}::test_views_invert_exactly_and_keep_gaussian_statistics[16-rotate_ccw]",
                           f"{MAPS}::test_view_mapping_averages_inverse_views"),
             command=ambiguous(False), real_command=ambiguous(True),
             fixed={"num_inference_steps": 30, "guidance_scale": 10.0, "sync": "x0",
                    "views_names": ("identity", "rotate_cw")},
             bands=kaist_bands(), toy_bands=toy_bands(kaist_bands())),
        # "(Optional) Task 3": eps / x_t synchronization (in one_step_process, Task 1's region) and the inner
        # circle rotation view_inner_rotate(); 5 (2.5) points on the same bands.
        Task(id="task3-inner-rotate", title="Task 3 (optional): inner-circle rotation, eps / x0 / x_t sync",
             points=5, optional=True, regions=("inner-rotation-index",),
             cases=("grading.cases.sync_inner",),
             public_tests=(f"{MAPS}::test_inner_rotate_is_rot90_inside_the_centred_disc",
                           f"{MAPS}::test_views_invert_exactly_and_keep_gaussian_statistics[64-inner_rotate]",
                           f"{CASES}::test_cases_coincide_from_one_canonical_noise[views]",
                           f"{CASES}::test_cases_differ_from_independent_noise[views]"),
             command=inner_rotate(False), real_command=inner_rotate(True),
             fixed={"num_inference_steps": 30, "guidance_scale": 10.0, "rotate_angle": 90.0,
                    "views_names": ("identity", "inner_rotate")},
             bands=kaist_bands(), toy_bands=toy_bands(kaist_bands())),
    ),
    items=(
        code_item("synchronization"),
        Item("*.pdf", "the PDF report"),
        *result_items("wide_images", "Task 1 (wide images: panoramas and their eval_pos crops)"),
        *result_items("ambiguous_images", "Task 2 (ambiguous images)"),
        *result_items("ambiguous_images_inner_rotate/*", "Task 3 (optional inner rotation, one folder per sync case)",
                      required=False),
    ),
    zip_name="{name}_{sid}.zip",
    # Tweedie helpers no shipped code calls (distillation is not shipped here); add_noise and ddim_step are used by
    # synchronization.ambiguous_image and common.sampling, so they are only flagged.
    strip_functions=("common.tweedie.x0_from_eps", "common.tweedie.eps_from_x0", *SYNC_ANSWERS),
    forbidden_calls=("common.tweedie.x0_from_eps", "common.tweedie.eps_from_x0", "common.tweedie.add_noise",
                     "common.ddim.ddim_step", *SYNC_ANSWERS),
    missing_item_penalty=0.1,
)
