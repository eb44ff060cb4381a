"""UMich EECS 498-014 (Fall 2024) HW5 part B: DDPM and DDIM steps, DPS, SDS and VSD.

Handout: ``shared/seeds/003_*.txt``, part B, with the starter facts in ``shared/reference/gan_ddpm_dps.md`` §1.4-1.5.
Points (Sec. 9 "Submission and Grading"): part B is 60% of HW5 and "all 7 compulsory tasks are worth points
equally" (60/7 each, out of HW5's 100); "a correct implementation is equivalently important as a good visual
result". Tasks 3 and 5 are free-response answers (graded by hand). Fixed hyperparameters: DDPM 1000 steps, DDIM 50
steps with eta 0 ("no need to set that manually"), DPS "don't modify the hyperparameters" (inpainting, random mask,
zeta = 0.5, measurement noise 0.05), SDS/VSD "learning rate, pre-trained base model, height, width, and guidance
scale are fixed" (SD 2.1 base, 512 px, 500 steps, lr 0.03, guidance 7.5; SDS also at 100). As for part A, part B
is its own release: its own zip, files under ``Diffusion/``, 10 MB cap, no missing-item penalty stated.
``common.ddpm`` / ``common.ddim`` are not stubbed in this release (``common.sampling`` and ``dps`` need them); using
them from a region is flagged instead, and the graded cases include the off-grid timestep that catches delegation.
"""

from __future__ import annotations

from grading.homeworks.shared import code_item
from grading.spec import Homework, Item, Task

SCHED = "tests/ddpm_ddim/test_schedulers_vs_diffusers.py"
DPS = "tests/dps/test_dps_gradient.py"
LOSSES = "tests/distillation/test_distill_losses.py"
POINTS = 60 / 7
REAL_FACES = " --model ddpm-celebahq-256 --device cuda"
TOY_PROMPT = '"a red circle on a blue background"'
REAL_PROMPT = '"a photograph of an astronaut riding a horse"'
REAL_SD = " --model sd-2.1-base --lr 0.03 --steps 500 --device cuda"


def distill(method: str, guidance: float, save_dir: str, real: bool) -> str:
    """``execute_SDS_VSD.py --generation_mode={method}``: one prompt, its final image and progress GIF."""
    prompt = REAL_PROMPT if real else TOY_PROMPT
    cmd = (f"python -m distillation.main --loss_type {method} --guidance_scale {guidance:g} --prompt {prompt} "
           f"--save_dir {save_dir}")
    return cmd + REAL_SD if real else cmd


def both_sds(real: bool) -> str:
    return f"{distill('sds', 7.5, 'SDS_results', real)} && {distill('sds', 100, 'SDS_results_gs100', real)}"


DPS_CMD = "python -m dps.main --task inpainting --num_images 3 --save_dir DPS_results"

HOMEWORK = Homework(
    id="umich-hw5-diffusion",
    title="UMich EECS 498 HW5 part B: Diffusion Models (DDPM, DDIM, DPS, SDS, VSD)",
    handout="003_9c811c02012c9b0c.txt",
    packages=("ddpm_ddim", "dps", "distillation"),
    tasks=(
        # Sec. 4 Task 1: TODO #1-#3 of scheduler/DDPM_scheduler.py (Formulas 1-8); 10 generated faces.
        Task(id="task1-ddpm", title="Task 1: DDPM step", points=POINTS,
             regions=("ddpm-coefficients", "ddpm-x0", "ddpm-mean"),
             cases=("grading.cases.ddpm",),
             public_tests=(f"{SCHED}::test_ddpm_equals_diffusers[fixed_small-leading-50]",
                           f"{SCHED}::test_ddpm_equals_diffusers[fixed_large-trailing-37]",
                           f"{SCHED}::test_ddpm_equals_diffusers[fixed_small-linspace-20]"),
             command="python -m ddpm_ddim.main --scheduler_name DDPM --save_dir DDPM_results",
             real_command="python -m ddpm_ddim.main --scheduler_name DDPM --save_dir DDPM_results" + REAL_FACES,
             fixed={"num_inference_steps": 1000}),
        # Sec. 5 Task 2: TODO #1-#2 of scheduler/DDIM_scheduler.py (Formulas 9-10); 10 generated faces.
        Task(id="task2-ddim", title="Task 2: DDIM step", points=POINTS, regions=("ddim-x0", "ddim-prev-sample"),
             cases=("grading.cases.ddim",),
             public_tests=(f"{SCHED}::test_ddim_equals_diffusers_where_diffusers_is_right[0.0-leading-50-0]",
                           f"{SCHED}::test_ddim_equals_diffusers_where_diffusers_is_right[0.5-trailing-8-0]",
                           f"{SCHED}::test_ddim_clipped_model_output_equals_diffusers"),
             command="python -m ddpm_ddim.main --scheduler_name DDIM --save_dir DDIM_results",
             real_command="python -m ddpm_ddim.main --scheduler_name DDIM --save_dir DDIM_results" + REAL_FACES,
             fixed={"num_inference_steps": 50, "eta": 0.0}),
        # Sec. 5 Task 3: DDPM vs DDIM time, pros and cons (free response).
        Task(id="task3-timing", title="Task 3: DDPM vs DDIM time (answer)", regions=(), points=POINTS),
        # Sec. 6 Task 4: TODO #3 of DDIM_scheduler.py (Formula 11); masked and inpainted images of 3 faces.
        Task(id="task4-dps", title="Task 4: DPS", regions=("dps-update",), points=POINTS,
             cases=("grading.cases.dps",),
             public_tests=(f"{DPS}::test_dps_gradient_matches_finite_differences",),
             command=DPS_CMD, real_command=DPS_CMD + " --images ffhq_fixed_samples --batch_size 1" + REAL_FACES,
             fixed={"scale": 0.5, "mask_type": "random", "noise_sigma": 0.05}),
        # Sec. 6 Task 5: the extra cost of DPS and fewer timesteps (free response).
        Task(id="task5-dps-question", title="Task 5: DPS cost and fewer timesteps (answer)", regions=(),
             points=POINTS),
        # Sec. 7 Task 6: TODO #1-#2 of utils/sds_vsd_utils.py and execute_SDS_VSD.py (Formulas 14-16), guidance 7.5
        # and 100.
        Task(id="task6-sds", title="Task 6: SDS", regions=("sds-loss",), points=POINTS,
             cases=("grading.cases.sds",),
             public_tests=(f"{LOSSES}::test_sds_gradient_is_weighted_score_difference",),
             command=both_sds(False), real_command=both_sds(True),
             fixed={"guidance_scale": (7.5, 100.0), "lr": 0.03, "steps": 500}),
        # Sec. 8 Task 7: TODO #3 of utils/sds_vsd_utils.py (Formula 17), guidance 7.5, LoRA lr 1e-4.
        Task(id="task7-vsd", title="Task 7: VSD", regions=("vsd-loss",), points=POINTS,
             cases=("grading.cases.vsd",),
             public_tests=(f"{LOSSES}::test_vsd_gradient_uses_pretrained_cfg_minus_lora_cond",),
             command=distill("vsd", 7.5, "VSD_results", False),
             real_command=distill("vsd", 7.5, "VSD_results", True) + " --lora_lr 1e-4",
             fixed={"guidance_scale": 7.5, "lr": 0.03, "steps": 500, "lora_lr": 1e-4}),
    ),
    items=(
        code_item("ddpm_ddim", " (the handout's scheduler/DDPM_scheduler.py, DDIM_scheduler.py)"),
        code_item("dps", " (DPS, TODO #3 of the DDIM scheduler)"),
        code_item("distillation", " (the handout's utils/sds_vsd_utils.py)"),
        Item("DDPM_results/*.png", "Task 1: 10 DDPM samples"),
        Item("DDIM_results/*.png", "Task 2: 10 DDIM samples"),
        Item("DPS_results/*.png", "Task 4: the masked inputs and the inpainted images"),
        Item("SDS_results/*.png", "Task 6: the SDS result at guidance 7.5"),
        Item("SDS_results_gs100/*.png", "Task 6: the SDS result at guidance 100"),
        Item("VSD_results/*.png", "Task 7: the VSD result"),
        Item("SDS_results/progress/*/progress.gif", "Task 6: SDS progress (guidance 7.5)", required=False),
        Item("SDS_results_gs100/progress/*/progress.gif", "Task 6: SDS progress (guidance 100)", required=False),
        Item("VSD_results/progress/*/progress.gif", "Task 7: VSD progress", required=False),
        Item("answers.*", "free-response answers (Tasks 3 and 5), a PDF or TXT file"),
    ),
    zip_name="{name}_{sid}_hw5_diffusion.zip",
    zip_root="Diffusion",
    size_cap_mb=10.0,
    forbidden_calls=("common.ddpm", "common.ddim", "diffusers.schedulers", "diffusers.*Scheduler*"),
    missing_item_penalty=0.0,
)
