"""Hidden cases for umich-hw5-gan Task 3 (Sec. 5, Eq. 3): region ``gan-r1`` in ``StyleGAN2Loss.d_reg``.

The lazy R1 phase on a smooth stub D (``ConvD``, float64, no DiffAugment): the returned loss
I * mean_b gamma/2 ||grad_x D(x_b)||^2 and the logged per-sample mean penalty, for B = 1, 3 and 8, with the
handout's gamma = 10 and interval I = 16 and with other values drawn from the seed (so hard-coded constants fail);
and D's parameter gradients of that loss, which exist only when the gradient is taken with ``create_graph=True``.

Handout: UMich EECS 498-014 F24 HW5 part A, Sec. 5 (TODO #5); Mescheder et al. 2018, Eq. 9; lazy regularisation,
Karras et al. 2020, Sec. 3.1.
"""

from __future__ import annotations

from functools import partial

import torch

from grading.case import Case, Mistake
from grading.cases.gan_inputs import ConvD, StubG, choice, generator, output, randint, scale_points

TASK_POINTS = 8.0  # grading.homeworks.umich_hw5_gan, task "task3-r1"
GAMMA, INTERVAL = 10.0, 16  # the handout's low_shot config: r1_gamma = 10, D_reg_interval = 16


def _d_reg(seed: int, batch: int, hparams: str, grads: bool) -> dict[str, torch.Tensor]:
    """d_reg on a stub D: loss, r1_penalty and, with ``grads``, dloss/d(D's parameters) flattened."""
    import gan.loss as gan_loss

    g = generator(seed, f"r1/{batch}/{hparams}/{grads}")
    shape = (choice(g, (1, 3)), randint(g, 4, 10), randint(g, 4, 10))
    if hparams == "handout":
        gamma, interval = GAMMA, INTERVAL
    else:  # any other gamma and interval: the region must read them from the config
        gamma, interval = 0.5 + 4 * float(torch.rand((), generator=g, dtype=torch.float64)), choice(g, (2, 4, 8))
    D, G = ConvD(g, shape[0]), StubG(g, shape)
    real_img = torch.rand(batch, *shape, generator=g, dtype=torch.float64) * 2 - 1  # [B, C, H, W]
    cfg = gan_loss.LossConfig(r1_gamma=gamma, d_reg_interval=interval, diffaug_policy=None, style_mixing_prob=0.0)
    phase = gan_loss.StyleGAN2Loss(G, D, cfg, generator(seed, "r1/phase"))
    loss, stats = phase.d_reg(real_img)
    out = {"loss": output(loss), "r1_penalty": output(stats["r1_penalty"])}
    if grads:
        params = list(D.parameters())
        got = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        out["grad_D"] = output(torch.cat([p.flatten() for p in got]))
    return out


_VALUE = ("d_reg must return loss = I * mean_b(gamma/2 * ||grad_x D(x_b)||^2) with the squared norm summed over C, "
          "H, W (Eq. 3), taken on the real images, gamma = self.cfg.r1_gamma, I = self.cfg.d_reg_interval.")
_GRAPH = ("The R1 loss must back-propagate into D's parameters: take grad_x D(x) with torch.autograd.grad(..., "
          "create_graph=True), otherwise the penalty is a constant and D is not regularised.")
_HPARAMS = ("Read gamma from self.cfg.r1_gamma and the lazy interval from self.cfg.d_reg_interval (this case uses "
            "values other than 10 and 16).")

CASES = scale_points((
    Case("r1/value-b3", 1.0, partial(_d_reg, batch=3, hparams="handout", grads=False), visibility="visible",
         title="R1 (Eq. 3): lazy loss and penalty, gamma=10, interval 16, B=3", feedback=_VALUE),
    Case("r1/value-b1", 1.0, partial(_d_reg, batch=1, hparams="handout", grads=False),
         title="R1 (Eq. 3): lazy loss and penalty, gamma=10, interval 16, B=1", feedback=_VALUE),
    Case("r1/create-graph-b3", 1.0, partial(_d_reg, batch=3, hparams="handout", grads=True),
         title="R1 (Eq. 3): gradients of the penalty to D's parameters (create_graph), B=3", feedback=_GRAPH),
    Case("r1/gamma-interval-b8", 1.0, partial(_d_reg, batch=8, hparams="drawn", grads=False),
         title="R1 (Eq. 3): other gamma and lazy interval, B=8", feedback=_HPARAMS),
), TASK_POINTS)

_ALL = tuple(c.id for c in CASES)

_ON_FAKES = """\
        z = torch.randn(real_img.shape[0], self.G.z_dim, generator=self.generator, device=real_img.device)
        gen_img = self.run_G(z)[0].detach().requires_grad_(True)
        gen_logits = self.run_D(gen_img)
        (grad,) = torch.autograd.grad(gen_logits.sum(), gen_img, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3]) * (self.cfg.r1_gamma / 2)
        loss = penalty.mean() * self.cfg.d_reg_interval
"""
_GRAD = "        (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)\n"
_PENALTY = "        penalty = grad.square().sum(dim=[1, 2, 3]) * (self.cfg.r1_gamma / 2)\n"
_LOSS = "        loss = penalty.mean() * self.cfg.d_reg_interval\n"

MISTAKES = (
    Mistake("r1-on-fakes", "gan-r1", _ON_FAKES,
            "R1 is computed on generated images: Eq. 3 penalises grad_x D(x) on the real data alone.", _ALL),
    Mistake("r1-gamma-not-halved", "gan-r1",
            _GRAD + "        penalty = grad.square().sum(dim=[1, 2, 3]) * self.cfg.r1_gamma\n" + _LOSS,
            "The penalty is weighted by gamma instead of gamma/2 (Eq. 3).", _ALL),
    Mistake("r1-no-create-graph", "gan-r1",
            "        (grad,) = torch.autograd.grad(real_logits.sum(), real_img)\n" + _PENALTY + _LOSS,
            "grad_x D(x) is taken without create_graph=True, so the penalty has no gradient to D's parameters "
            "and R1 does not regularise D.", ("r1/create-graph-b3",)),
    Mistake("r1-no-interval", "gan-r1", _GRAD + _PENALTY + "        loss = penalty.mean()\n",
            "The lazy R1 loss is not multiplied by the interval self.cfg.d_reg_interval (16): running R1 every "
            "16th step needs a 16 times larger weight (lazy regularisation).", _ALL),
    Mistake("r1-batch-sum", "gan-r1", _GRAD + _PENALTY + "        loss = penalty.sum() * self.cfg.d_reg_interval\n",
            "The penalty is summed over the batch instead of averaged (Eq. 3 is an expectation over x).",
            ("r1/value-b3", "r1/create-graph-b3", "r1/gamma-interval-b8")),
    Mistake("r1-pixel-mean", "gan-r1",
            _GRAD + "        penalty = grad.square().mean(dim=[1, 2, 3]) * (self.cfg.r1_gamma / 2)\n" + _LOSS,
            "The squared gradient is averaged over C, H, W: ||grad_x D(x)||^2 sums over every dimension except "
            "the batch.", _ALL),
    Mistake("r1-norm-not-squared", "gan-r1",
            _GRAD + "        penalty = grad.flatten(1).norm(dim=1) * (self.cfg.r1_gamma / 2)\n" + _LOSS,
            "The gradient norm is not squared: Eq. 3 uses ||grad_x D(x)||^2.", _ALL),
    Mistake("r1-hard-coded", "gan-r1",
            _GRAD + "        penalty = grad.square().sum(dim=[1, 2, 3]) * (10 / 2)\n"
            "        loss = penalty.mean() * 16\n",
            "gamma and the lazy interval are hard-coded (10 and 16): read self.cfg.r1_gamma and "
            "self.cfg.d_reg_interval.", ("r1/gamma-interval-b8",)),
)
