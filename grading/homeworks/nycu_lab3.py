"""NYCU Image and Video Generation (Fall 2025) Lab 3: SDS, VSD and SDI on Stable Diffusion 2.1 latents.

Handout: ``shared/seeds/000_*.txt`` (the TA README). Points ("Grading"): Task 1 SDS 20, Task 2 VSD 30, Task 3
SDI 30 ("correct implementation + results"), report 20; total 100. CLIP bands ("CLIP Score Thresholds", made
half-open): >= 0.28 full, [0.26, 0.28) 15 of 20 / 25 of 30, [0.24, 0.26) 10 of 20 / 20 of 30, below 0.24 nothing.
Fixed hyperparameters: the "Run Command" of each task. Submission ("What to Submit"): ``{STUDENT_ID}_lab3.zip``
holding ``./submission/`` with the code (the handout's ``guidance/sd.py``: here the distillation package),
``outputs/{sds,vsd,sdi}/`` with the images and ``eval.json``, and ``report.pdf``. "Modify only guidance/sd.py".
The handout states no missing-item penalty: a missing item only loses what it carries.
"""

from __future__ import annotations

from grading.homeworks.shared import code_item, nycu_bands, result_items, toy_bands
from grading.spec import Homework, Item, Task

LOSSES = "tests/distillation/test_distill_losses.py"
ORACLE = "tests/distillation/test_distill_oracle.py"
EVALUATE = "python -m distillation.evaluate --loss_type {m} --save_root outputs"
REAL = " --preset nycu-lab3 --device cuda"

E2E = "grading.cases.e2e_distillation"  # toy end-to-end run scored by calibrated toy bands (grading.e2e)

HOMEWORK = Homework(
    id="nycu-lab3",
    title="NYCU Lab 3: Score Distillation Sampling (SDS, VSD, SDI)",
    handout="000_44014794ed424da2.txt",
    packages=("distillation",),
    tasks=(
        # "Task 1 - SDS [20 pts]": python main.py --prompt ... --loss_type sds --guidance_scale 25
        Task(id="task1-sds", title="Task 1: SDS", regions=("sds-loss",), points=20,
             cases=("grading.cases.sds", E2E),
             public_tests=(f"{LOSSES}::test_sds_gradient_is_weighted_score_difference",
                           f"{ORACLE}::test_sds_reaches_the_guided_mode"),
             command=EVALUATE.format(m="sds"), real_command=EVALUATE.format(m="sds") + REAL,
             fixed={"guidance_scale": 25.0}, bands=nycu_bands(20), toy_bands=toy_bands(nycu_bands(20))),
        # "Task 2 - VSD [30 pts]": --guidance_scale 7.5 --lora_lr 1e-4 --lora_loss_weight 1.0 --lora_rank 4
        Task(id="task2-vsd", title="Task 2: VSD", regions=("vsd-loss",), points=30,
             cases=("grading.cases.vsd", E2E),
             public_tests=(f"{LOSSES}::test_vsd_gradient_uses_pretrained_cfg_minus_lora_cond",),
             command=EVALUATE.format(m="vsd"), real_command=EVALUATE.format(m="vsd") + REAL,
             fixed={"guidance_scale": 7.5, "lora_lr": 1e-4, "lora_loss_weight": 1.0, "lora_rank": 4},
             bands=nycu_bands(30), toy_bands=toy_bands(nycu_bands(30))),
        # "Task 3 - SDI [30 pts]": get_sdi_loss() "and complete all in-function TODO items" (inversion, refresh);
        # --lr 0.005 --steps 1000 --guidance_scale 7.5 --inversion_n_steps 10 --inversion_guidance_scale -7.5
        # --inversion_eta 0.3 --sdi_update_interval 25
        Task(id="task3-sdi", title="Task 3: SDI", regions=("sdi-invert-noise", "sdi-refresh", "sdi-loss"), points=30,
             cases=("grading.cases.sdi", E2E),
             public_tests=(f"{LOSSES}::test_sdi_target_is_tweedie_of_guided_eps_at_inverted_latent",
                           f"{LOSSES}::test_sdi_inversion_with_exact_oracle_is_consistent_with_ddim",
                           f"{ORACLE}::test_sdi_reaches_the_guided_mode"),
             command=EVALUATE.format(m="sdi"), real_command=EVALUATE.format(m="sdi") + REAL,
             fixed={"guidance_scale": 7.5, "lr": 0.005, "steps": 1000, "inversion_n_steps": 10,
                    "inversion_guidance_scale": -7.5, "inversion_eta": 0.3, "sdi_update_interval": 25},
             bands=nycu_bands(30), toy_bands=toy_bands(nycu_bands(30))),
        # "Report (20 pts)": hyperparameters, explanations, comparisons, ablations (graded by hand).
        Task(id="report", title="Report", regions=(), points=20),
    ),
    items=(
        code_item("distillation", " (the handout's guidance/sd.py)"),
        *result_items("outputs/sds", "Task 1 (SDS)"),
        *result_items("outputs/vsd", "Task 2 (VSD)"),
        *result_items("outputs/sdi", "Task 3 (SDI)"),
        Item("report.pdf", "report.pdf (hyperparameters, explanations, CLIP comparison, ablations)"),
    ),
    zip_name="{sid}_lab3.zip",
    zip_root="submission",
    missing_item_penalty=0.0,
)
