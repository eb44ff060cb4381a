"""Hidden cases for umich-hw5-gan Task 1 (Sec. 4.2, Eq. 1-2): regions ``gan-g-loss``, ``gan-d-loss``, ``gan-d-real``.

- ``g-loss/*``: ``generator_loss`` = softplus(-D(G(z))) per sample (Eq. 1) and its gradient, B = 1, 3, 8, and float32
  logits of +-100 and +-1000 where -log(sigmoid(.)) and log(1 + exp(.)) overflow.
- ``d-loss/*``: ``discriminator_loss`` = softplus(-D(x)) + softplus(D(G(z))) (Eq. 2), the same inputs.
- ``d-main/*``: ``StyleGAN2Loss.d_main`` with a stub G and a recording stub D: the images D sees (fakes first,
  then the reals), the loss, D's gradient and the logged D_real / D_fake; one case with DiffAugment on (the real
  term must go through ``run_D``). ``discriminator_loss`` is the cases' own copy of Eq. 2 there, so these cases
  score ``gan-d-real`` alone. The augmentation uses the fixed cutout of ``common.diffaugment`` (not the student's
  ``rand_cutout``, graded in Task 4).

Handout: UMich EECS 498-014 F24 HW5 part A, Sec. 4.2 (Task 1 = TODO #1-#4). The three regions share the task's
points as the TODOs do: G loss 1/4, D loss 2/4 (its two terms), D's real input 1/4.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, Mistake
from grading.cases.gan_inputs import (
    RecordingD,
    StubG,
    generator,
    oracle_discriminator_loss,
    output,
    randint,
    scale_points,
)

TASK_POINTS = 8.0  # grading.homeworks.umich_hw5_gan, task "task1-loss"
EXTREMES = (-1000.0, -100.0, 100.0, 1000.0)  # float32: exp(100) and sigmoid(-104) are already out of range


def _logits(seed: int, salt: str, batch: int, extreme: bool) -> torch.Tensor:
    """[B] logits: 3 N(0, 1) in float64, or float32 with the values of EXTREMES at random places among them."""
    g = generator(seed, salt)
    logits = 3 * torch.randn(batch, generator=g, dtype=torch.float64)
    if not extreme:
        return logits
    where = torch.randperm(batch, generator=g)[: len(EXTREMES)]
    logits[where] = torch.tensor(EXTREMES, dtype=torch.float64)
    return logits.to(torch.float32)


def _g_loss(seed: int, batch: int, extreme: bool) -> dict[str, torch.Tensor]:
    from gan.loss import generator_loss

    gen_logits = _logits(seed, f"g-loss/{batch}/{extreme}", batch, extreme).requires_grad_(True)
    loss = generator_loss(gen_logits)  # [B]
    (grad,) = torch.autograd.grad(loss.sum(), gen_logits)
    return {"loss": output(loss), "grad": output(grad)}


def _d_loss(seed: int, batch: int, extreme: bool) -> dict[str, torch.Tensor]:
    from gan.loss import discriminator_loss

    real_logits = _logits(seed, f"d-loss-real/{batch}/{extreme}", batch, extreme).requires_grad_(True)
    gen_logits = _logits(seed, f"d-loss-fake/{batch}/{extreme}", batch, extreme).requires_grad_(True)
    loss = discriminator_loss(real_logits, gen_logits)  # [B]
    grad_real, grad_fake = torch.autograd.grad(loss.sum(), (real_logits, gen_logits))
    return {"loss": output(loss), "grad_real": output(grad_real), "grad_fake": output(grad_fake)}


def _d_main(seed: int, batch: int, policy: str | None) -> dict[str, torch.Tensor]:
    """d_main on stub networks: D's inputs in call order [calls, B, C, H, W], loss, dloss/dD.weight, D_real/D_fake."""
    import gan.loss as gan_loss

    g = generator(seed, f"d-main/{batch}/{policy}")
    shape = (3, randint(g, 4, 9), randint(g, 4, 9))
    G, D = StubG(g, shape), RecordingD(g, shape)
    real_img = torch.rand(batch, *shape, generator=g, dtype=torch.float64) * 2 - 1  # [B, C, H, W]
    z = torch.randn(batch, G.z_dim, generator=g, dtype=torch.float64)
    cfg = gan_loss.LossConfig(diffaug_policy=policy, cutout_mode="fixed", style_mixing_prob=0.0)
    phase = gan_loss.StyleGAN2Loss(G, D, cfg, generator(seed, "d-main/augment"))
    with oracle_discriminator_loss(gan_loss):
        loss, stats = phase.d_main(real_img, z)
    (grad,) = torch.autograd.grad(loss, D.weight)
    return {"d_inputs": output(torch.stack(D.seen)), "loss": output(loss), "grad_D": output(grad),
            "D_real": output(stats["D_real"]), "D_fake": output(stats["D_fake"])}


_G_FEEDBACK = ("generator_loss(gen_logits) must return the per-sample non-saturating loss softplus(-D(G(z))) "
               "= -log sigmoid(D(G(z))) (Eq. 1), shape [B], differentiable.")
_G_EXTREME = ("At logits of +-100 and +-1000 (float32) the loss must stay finite: -log(sigmoid(x)) and "
              "log(1 + exp(-x)) overflow there; use F.softplus(-x) (Eq. 1).")
_D_FEEDBACK = ("discriminator_loss must return loss_real = softplus(-D(x)) and loss_fake = softplus(D(G(z))) per "
               "sample (Eq. 2): the real images should get high logits, the fakes low ones.")
_D_EXTREME = ("At logits of +-100 and +-1000 (float32) both terms must stay finite: log(1 - sigmoid(x)) is "
              "log(0) for large x; write them with F.softplus (Eq. 2).")
_MAIN_FEEDBACK = ("The real term of d_main must be D's logits on the real images, through self.run_D like the fakes "
                  "(so DiffAugment, when on, augments the reals too) and with gradients to D.")

CASES = scale_points((
    Case("g-loss/b3", 1.0, partial(_g_loss, batch=3, extreme=False), visibility="visible",
         title="Generator loss (Eq. 1): values and gradient, B=3", feedback=_G_FEEDBACK),
    Case("g-loss/b1", 1.0, partial(_g_loss, batch=1, extreme=False),
         title="Generator loss (Eq. 1): values and gradient, B=1", feedback=_G_FEEDBACK),
    Case("g-loss/extreme-b8", 2.0, partial(_g_loss, batch=8, extreme=True),
         title="Generator loss (Eq. 1): stable at logits +-100 and +-1000 (float32), B=8", feedback=_G_EXTREME),
    Case("d-loss/b3", 2.0, partial(_d_loss, batch=3, extreme=False), visibility="visible",
         title="Discriminator loss (Eq. 2): values and gradients, B=3", feedback=_D_FEEDBACK),
    Case("d-loss/b1", 2.0, partial(_d_loss, batch=1, extreme=False),
         title="Discriminator loss (Eq. 2): values and gradients, B=1", feedback=_D_FEEDBACK),
    Case("d-loss/extreme-b8", 4.0, partial(_d_loss, batch=8, extreme=True),
         title="Discriminator loss (Eq. 2): stable at logits +-100 and +-1000 (float32), B=8", feedback=_D_EXTREME),
    Case("d-main/b3", 1.0, partial(_d_main, batch=3, policy=None), visibility="visible",
         title="D main phase: D sees the fakes, then the reals (recording stub D), B=3", feedback=_MAIN_FEEDBACK),
    Case("d-main/b1", 1.0, partial(_d_main, batch=1, policy=None),
         title="D main phase: D sees the fakes, then the reals (recording stub D), B=1", feedback=_MAIN_FEEDBACK),
    Case("d-main/diffaug-b8", 2.0, partial(_d_main, batch=8, policy="color,translation,cutout"),
         title="D main phase with DiffAugment: the reals go through run_D, B=8", feedback=_MAIN_FEEDBACK),
), TASK_POINTS)

_G_ALL = ("g-loss/b3", "g-loss/b1", "g-loss/extreme-b8")
_D_ALL = ("d-loss/b3", "d-loss/b1", "d-loss/extreme-b8")
_MAIN_ALL = ("d-main/b3", "d-main/b1", "d-main/diffaug-b8")

MISTAKES = (
    Mistake("g-loss-saturating", "gan-g-loss",
            "    return torch.log(1 - torch.sigmoid(gen_logits))  # minimise log(1 - D(G(z)))\n",
            "The saturating generator loss log(1 - sigmoid(D(G(z)))): its gradient vanishes when D rejects the "
            "fakes; Eq. 1 is the non-saturating -log sigmoid(D(G(z))) = softplus(-D(G(z))).", _G_ALL),
    Mistake("g-loss-sigmoid-log", "gan-g-loss",
            "    return -torch.log(torch.sigmoid(gen_logits))\n",
            "-log(sigmoid(x)) is Eq. 1 but overflows to inf for very negative logits (sigmoid underflows to 0); "
            "F.softplus(-x) computes the same value stably.", ("g-loss/extreme-b8",)),
    Mistake("g-loss-log1p-exp", "gan-g-loss",
            "    return torch.log1p(torch.exp(-gen_logits))  # log(1 + exp(-D(G(z))))\n",
            "log(1 + exp(-x)) written out overflows (exp(100) is inf in float32); use F.softplus(-x), the hint's "
            "stable form of the same function.", ("g-loss/extreme-b8",)),
    Mistake("d-loss-signs-swapped", "gan-d-loss",
            "    loss_real = F.softplus(real_logits)\n"
            "    loss_fake = F.softplus(-gen_logits)\n",
            "The signs of Eq. 2 are swapped: this trains D to call the reals fake and the fakes real; the real "
            "term is softplus(-D(x)), the fake term softplus(D(G(z))).", _D_ALL),
    Mistake("d-loss-sigmoid-log", "gan-d-loss",
            "    loss_real = -torch.log(torch.sigmoid(real_logits))\n"
            "    loss_fake = -torch.log(1 - torch.sigmoid(gen_logits))\n",
            "Eq. 2 through sigmoid and log gives inf at large logits (log of 0); F.softplus(-D(x)) and "
            "F.softplus(D(G(z))) are the same terms, computed stably.", ("d-loss/extreme-b8",)),
    Mistake("d-real-uses-fakes", "gan-d-real",
            "        real_logits = self.run_D(gen_img)\n",
            "The real term of the D loss is computed on the generated images: it must be D(x) on real_img "
            "(TODO #3, 'Real or Gen?').", _MAIN_ALL),
    Mistake("d-real-skips-augment", "gan-d-real",
            "        real_logits = self.D(real_img)\n",
            "The reals are fed to self.D directly, so DiffAugment augments only the fakes and D learns to tell "
            "them apart by the augmentation; call self.run_D(real_img) like the fakes.", ("d-main/diffaug-b8",)),
    Mistake("d-real-no-grad", "gan-d-real",
            "        with torch.no_grad():\n"
            "            real_logits = self.run_D(real_img)\n",
            "The real logits are computed under torch.no_grad(), so D gets no gradient from the real term of "
            "Eq. 2 (only the generator's forward pass in d_main is gradient-free).", _MAIN_ALL),
)
