"""KAIST CS492D (Fall 2024) Assignment 4: SDS, PDS and (optional) VSD on Stable Diffusion 2.1 latents.

Handout: the assignment-session slides (``shared/seeds/001_*.txt``) and the README facts in
``shared/reference/distillation.md`` (KAIST skeleton) and ``grading.md`` (e). Points (slides "Grading"): Task 1 and
Task 2 up to 10 each from the CLIP score (>= 0.28 full, [0.26, 0.28) half), optional Task 3 up to 5 on the same
bands; total 20 (+5). Fixed hyperparameters (README): "Use a fixed guidance scale for each task": SDS 25, PDS 7.5,
VSD 7.5. Submission (slides "What to Submit"): one ``{NAME}_{SID}.zip`` with the report PDF ``{NAME}_{SID}.pdf``
(images and eval.json screenshots) and the code; the README's grading re-scores the submitted images and
``eval.json`` (and "failing to reproduce the reported CLIP score will result in a score of zero"), so the images
and ``eval.json`` of each task ship too. "Your score will be deducted by 10% for each missing item."
"""

from __future__ import annotations

from grading.homeworks.shared import code_item, kaist_bands, result_items, toy_bands
from grading.spec import Homework, Item, Task

LOSSES = "tests/distillation/test_distill_losses.py"
ORACLE = "tests/distillation/test_distill_oracle.py"
EVALUATE = "python -m distillation.evaluate --loss_type {m} --save_root outputs"
REAL = " --preset kaist-a4 --device cuda"

E2E = "grading.cases.e2e_distillation"  # toy end-to-end run scored by calibrated toy bands (grading.e2e)

HOMEWORK = Homework(
    id="kaist-a4",
    title="KAIST CS492D Assignment 4: Score Distillation (SDS, PDS, VSD)",
    handout="001_050074d578fac283.txt",
    packages=("distillation",),
    tasks=(
        # Slides "What to Do: Task 1": get_sds_loss(); run "--loss_type sds --guidance_scale 25 --step 500".
        Task(id="task1-sds", title="Task 1: SDS", regions=("sds-loss",), points=10,
             cases=("grading.cases.sds", E2E),
             public_tests=(f"{LOSSES}::test_sds_gradient_is_weighted_score_difference",
                           f"{ORACLE}::test_sds_reaches_the_guided_mode"),
             command=EVALUATE.format(m="sds"), real_command=EVALUATE.format(m="sds") + REAL,
             fixed={"guidance_scale": 25.0}, bands=kaist_bands(), toy_bands=toy_bands(kaist_bands())),
        # Slides "What to Do: Task 2": get_pds_loss(); run "--loss_type pds --guidance_scale 7.5 --step 200".
        Task(id="task2-pds", title="Task 2: PDS", regions=("pds-loss",), points=10,
             cases=("grading.cases.pds", E2E),
             public_tests=(f"{LOSSES}::test_pds_exact_posterior_gradient_is_z_target_minus_z_source",
                           f"{ORACLE}::test_edits_move_by_the_difference_of_the_modes[pds-official]"),
             command=EVALUATE.format(m="pds"),
             real_command=EVALUATE.format(m="pds") + REAL + " --data_dir data/imgs",
             fixed={"guidance_scale": 7.5}, bands=kaist_bands(), toy_bands=toy_bands(kaist_bands())),
        # Slides "Grading": optional Task 3 (VSD), 5 / 2.5 points on the same CLIP bands; README: guidance 7.5.
        Task(id="task3-vsd", title="Task 3 (optional): VSD", regions=("vsd-loss",), points=5, optional=True,
             cases=("grading.cases.vsd", E2E),
             public_tests=(f"{LOSSES}::test_vsd_gradient_uses_pretrained_cfg_minus_lora_cond",),
             command=EVALUATE.format(m="vsd"), real_command=EVALUATE.format(m="vsd") + REAL,
             fixed={"guidance_scale": 7.5}, bands=kaist_bands(), toy_bands=toy_bands(kaist_bands())),
    ),
    items=(
        Item("*.pdf", "report PDF {NAME}_{SID}.pdf: images with their prompts, eval.json screenshots"),
        code_item("distillation", " (the handout's guidance/sd.py)"),
        *result_items("outputs/sds", "Task 1 (SDS)"),
        *result_items("outputs/pds", "Task 2 (PDS)"),
        *result_items("outputs/vsd", "Task 3 (optional VSD)", required=False),
    ),
    zip_name="{name}_{sid}.zip",
    missing_item_penalty=0.1,
)
