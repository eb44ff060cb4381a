"""UMich EECS 498-014 (Fall 2024) HW5 part A: StyleGAN2 losses, R1 and the random-size DiffAugment cutout.

Handout: ``shared/seeds/003_*.txt``, part A, with the starter facts in ``shared/reference/gan_ddpm_dps.md`` §1.
Points (Sec. 7 "Submission and Grading"): part A is 40% of HW5 and "all 5 compulsory tasks are worth points
equally" (8 each, out of HW5's 100); "the optional task is worth 10% points in total" (the two optional questions
of part A, 5 each, counted above the total). "A correct implementation is equivalently important as an improved
visual result": the grader splits each coding task's points between its cases and the training run.
Tasks 2 and the optional ones are free-response answers (graded by hand); Task 5 is a training run with
DiffAugment (``run_D`` already augments every D input here, so it has no region). The handout names no zip; we
release part A as its own tree, so it gets its own zip with its files under ``GAN/`` (part B's under
``Diffusion/``): unzipping both into one folder gives the handout's single submission. "The file size should be
less than 10 MB." The handout states no missing-item penalty.
"""

from __future__ import annotations

from grading.homeworks.shared import code_item
from grading.spec import Homework, Item, Task

LOSS = "tests/gan/test_gan_networks_loss.py"
EXERCISES = "tests/gan/test_gan_exercises.py"
TOY_START = "gan/checkpoints/toy_faces64_start.safetensors"


def train(r1: bool, diffaug: bool, real_checkpoint: str = "") -> str:
    """The handout's ``train.py`` command (Sec. 4-6); on the toy set it resumes the shipped start checkpoint."""
    flags = f"--use_r1_regularization {r1} --use_diffaug {diffaug}"
    if real_checkpoint:
        return (f"python -m gan.train --outdir training-runs --data many_shot_dog {flags} "
                f"--checkpoint_path {real_checkpoint} --resolution 256 --device cuda")
    return f"python -m gan.train --outdir training-runs --data toy {flags} --checkpoint_path {TOY_START} --kimg 2.4"


def run_items(task: int, what: str) -> tuple[Item, ...]:
    """One training run's deliverables: "the generated results (only one image) and your log.txt"."""
    return (Item(f"results/task{task}/fakes*.png", f"Task {task}: the latest fakes grid of the {what} run"),
            Item(f"results/task{task}/log.txt", f"Task {task}: log.txt of the {what} run"))


HOMEWORK = Homework(
    id="umich-hw5-gan",
    title="UMich EECS 498 HW5 part A: Generative Adversarial Network",
    handout="003_9c811c02012c9b0c.txt",
    packages=("gan",),
    tasks=(
        # Sec. 4.2 Task 1: TODO #1-#4 of training/loss.py (Eq. 1-2); run without R1 and DiffAugment.
        Task(id="task1-loss", title="Task 1: generator and discriminator losses", points=8,
             regions=("gan-g-loss", "gan-d-loss", "gan-d-real"),
             cases=("grading.cases.gan_losses",),
             public_tests=(f"{LOSS}::test_losses_equal_formulas_on_stub_d",
                           f"{LOSS}::test_g_main_uses_generator_loss"),
             command=train(False, False), real_command=train(False, False, "checkpoint/part1-10K.safetensors"),
             fixed={"use_r1_regularization": False, "use_diffaug": False}),
        # Sec. 4.2 Task 2: the E_z terms of Eq. 1 vs Eq. 2 (free response).
        Task(id="task2-question", title="Task 2: generator vs discriminator objective (answer)", regions=(),
             points=8),
        # Sec. 5 Task 3: TODO #5, R1 = gamma/2 E ||grad D(x)||^2 (Eq. 3); run with R1.
        Task(id="task3-r1", title="Task 3: R1 regularization", regions=("gan-r1",), points=8,
             cases=("grading.cases.gan_r1",),
             public_tests=(f"{EXERCISES}::test_inline_r1_linear_d_closed_form",
                           f"{LOSS}::test_d_main_and_d_reg_on_stub_d"),
             command=train(True, False), real_command=train(True, False, "checkpoint/part2-10K.safetensors"),
             fixed={"use_r1_regularization": True, "use_diffaug": False, "gamma": 10.0}),
        # Sec. 6 Task 4: rand_cutout, box sides random in 25-50% of H and W, random top-left corner.
        Task(id="task4-cutout", title="Task 4: random cutout", regions=("diffaugment-cutout",), points=8,
             cases=("grading.cases.gan_cutout",),
             public_tests=(f"{EXERCISES}::test_cutout_exercise_geometry",
                           f"{EXERCISES}::test_cutout_exercise_gradcheck"),
             command="python -m gan.augment_preview --data toy --out augment.png",
             real_command="python -m gan.augment_preview --data many_shot_dog --resolution 256 --out augment.png",
             fixed={"min_ratio": 0.25, "max_ratio": 0.5}),
        # Sec. 6 Task 5: train with R1 and DiffAugment on reals and fakes (run_D), show the results.
        Task(id="task5-diffaug", title="Task 5: training with DiffAugment", regions=(), points=8,
             command=train(True, True), real_command=train(True, True, "checkpoint/part3-10K.safetensors"),
             fixed={"use_r1_regularization": True, "use_diffaug": True, "gamma": 10.0}),
        # Sec. 5 and 6 "Task (optional extra credits)": free-response answers.
        Task(id="extra-regularizers", title="Optional: three more GAN regularization or augmentation techniques",
             regions=(), points=5, optional=True),
        Task(id="extra-one-diffaug-call", title="Optional: why one DiffAugment call in run_D covers three cases",
             regions=(), points=5, optional=True),
    ),
    items=(
        code_item("gan", " (loss.py, augment.py)"),
        *run_items(1, "no-R1, no-DiffAugment"),
        *run_items(3, "R1"),
        *run_items(5, "R1 + DiffAugment"),
        Item("answers.*", "free-response answers (Task 2 and the optional questions), a PDF or TXT file"),
    ),
    zip_name="{name}_{sid}_hw5_gan.zip",
    zip_root="GAN",
    size_cap_mb=10.0,
    # Helpers of common that would hand over the R1 and cutout answers (nothing else calls them: grep).
    strip_functions=("common.r1.r1_penalty", "common.r1.non_saturating_generator_loss",
                     "common.r1.non_saturating_discriminator_loss", "common.diffaugment.draw_cutout_random",
                     "common.diffaugment.rand_cutout"),
    forbidden_calls=("common.r1.r1_penalty", "common.r1.non_saturating_*", "common.diffaugment.*cutout*"),
    missing_item_penalty=0.0,
)
