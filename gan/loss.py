"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 on reals, path-length regularisation, DiffAugment.

Handout (UMich EECS 498 HW5, Eq. 1-3):
    L_G = E_z[ softplus(-D(G(z))) ]                                   (1)  = -log sigmoid(D(G(z)))
    L_D = E_x[ softplus(-D(x)) ] + E_z[ softplus(D(G(z))) ]           (2)
    R1  = gamma/2 * E_x[ ||grad_x D(x)||^2 ]                          (3)  (Mescheder et al. 2018, Eq. 9)
Lazy regularisation (Karras et al. 2020, Sec. 3.1): a regulariser with interval I runs once every I steps with
its loss multiplied by I; the optimiser of that network uses lr * c and betas ** c with c = I / (I + 1) to
compensate for the extra steps. Path length (StyleGAN2 Eq. 4): E[(||J_w^T y||_2 - a)^2], y ~ N(0, I) / sqrt(HW),
a a running mean. DiffAugment (Zhao et al. 2020): every D input goes through T, reals and fakes, in both the D
and the G update -- so one call inside :meth:`StyleGAN2Loss.run_D` covers all three places.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from gan.augment import diff_augment


def generator_loss(gen_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample non-saturating generator loss, Eq. (1); gen_logits = D(G(z)) [B] -> [B]."""
    # TODO: per-sample non-saturating generator loss -log sigmoid(D(G(z))) (Eq. 1), numerically stable
    # BEGIN SOLUTION gan-g-loss
    return F.softplus(-gen_logits)  # -log(sigmoid(D(G(z))))
    # END SOLUTION


def discriminator_loss(real_logits: torch.Tensor, gen_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample discriminator loss, Eq. (2): softplus(-D(x)) + softplus(D(G(z))) -> [B]."""
    # TODO: loss_real and loss_fake, the per-sample real and fake terms of Eq. 2, numerically stable
    # BEGIN SOLUTION gan-d-loss
    loss_real = F.softplus(-real_logits)  # -log(sigmoid(D(x)))
    loss_fake = F.softplus(gen_logits)  # -log(1 - sigmoid(D(G(z))))
    # END SOLUTION
    return loss_real + loss_fake


def lazy_optimizer_hparams(lr: float, betas: tuple[float, float], interval: int | None) -> tuple[float, tuple]:
    """Adam lr and betas for a network regularised every ``interval`` steps: lr * c, betas ** c, c = I / (I + 1)."""
    if not interval:
        return lr, betas
    c = interval / (interval + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def is_reg_step(step: int, interval: int | None) -> bool:
    """Lazy regularisation runs on steps 0, I, 2I, ... (every step when interval is 1; never when None/0)."""
    return bool(interval) and step % interval == 0


def path_length_penalty(gen_img: torch.Tensor, gen_ws: torch.Tensor, pl_mean: torch.Tensor, pl_noise: torch.Tensor,
                        decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2 Eq. 4. Returns per-sample (||J^T y|| - a)^2 [B] and the updated running mean a (detached).

    gen_img [B, 3, H, W] = synthesis(gen_ws); pl_noise ~ N(0, I) of gen_img's shape. As in StyleGAN2-ADA's
    ``training/loss.py``, a = lerp(a_old, mean(lengths), decay) stays in the graph inside the penalty (G's
    gradient sees d a / d lengths = decay / B); only the copy kept for the next step is detached.
    """
    H, W = gen_img.shape[2:]
    y = pl_noise / math.sqrt(H * W)
    (grad,) = torch.autograd.grad((gen_img * y).sum(), gen_ws, create_graph=True)  # J_w^T y  [B, num_ws, w_dim]
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()  # [B]
    pl_mean = pl_mean.lerp(lengths.mean(), decay)  # a, differentiable
    return (lengths - pl_mean).square(), pl_mean.detach()


@dataclasses.dataclass
class LossConfig:
    r1_gamma: float = 10.0
    d_reg_interval: int = 16
    pl_weight: float = 2.0
    g_reg_interval: int = 4
    pl_batch_shrink: int = 2
    style_mixing_prob: float = 0.9
    diffaug_policy: str | None = "color,translation,cutout"  # None = no augmentation
    cutout_mode: str = "random"


class StyleGAN2Loss:
    """Thin wrapper holding G, D, the config, the path-length mean and the training generator; one method per phase.

    Every phase returns a scalar loss that the training loop back-propagates (already multiplied by the lazy
    interval for the regularisation phases) and a dict of logged numbers.
    """

    def __init__(self, G, D, cfg: LossConfig, generator: torch.Generator):
        self.G, self.D, self.cfg, self.generator = G, D, cfg, generator
        self.pl_mean = torch.zeros([], device=generator.device)

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator, device=self.generator.device)

    def run_G(self, z: torch.Tensor, update_w_avg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their ws; with style mixing (prob p) the ws after a random cutoff come from a second z."""
        ws = self.G.mapping(z, update_w_avg=update_w_avg)
        if self.cfg.style_mixing_prob > 0:
            u = torch.rand([], generator=self.generator, device=z.device)
            cutoff = 1 + int(torch.rand([], generator=self.generator, device=z.device) * (ws.shape[1] - 1))
            if u < self.cfg.style_mixing_prob:
                ws = ws.clone()
                ws[:, cutoff:] = self.G.mapping(self._randn(*z.shape))[:, cutoff:]
        return self.G.synthesis(ws, generator=self.generator), ws

    def run_D(self, img: torch.Tensor) -> torch.Tensor:
        """D(T(img)): the only place augmentation is needed (reals, fakes for D, fakes for G)."""
        if self.cfg.diffaug_policy:
            img = diff_augment(img, self.cfg.diffaug_policy, self.generator, cutout_mode=self.cfg.cutout_mode)
        return self.D(img)

    def g_main(self, z: torch.Tensor):
        gen_img, _ = self.run_G(z, update_w_avg=True)
        loss = generator_loss(self.run_D(gen_img)).mean()
        return loss, {"loss_G": loss.item()}

    def g_reg(self, z: torch.Tensor):
        """Path-length phase on a batch shrunk by ``pl_batch_shrink``, weighted by pl_weight * interval."""
        z = z[: max(1, z.shape[0] // self.cfg.pl_batch_shrink)]
        gen_img, ws = self.run_G(z)
        penalty, self.pl_mean = path_length_penalty(gen_img, ws, self.pl_mean, self._randn(*gen_img.shape))
        loss = penalty.mean() * self.cfg.pl_weight * self.cfg.g_reg_interval
        return loss + gen_img[:, 0, 0, 0].sum() * 0, {"pl_penalty": penalty.mean().item()}

    def d_main(self, real_img: torch.Tensor, z: torch.Tensor):
        with torch.no_grad():
            gen_img, _ = self.run_G(z)
        gen_logits = self.run_D(gen_img)
        # TODO: real_logits, D's logits on the real images (through run_D, like the fakes)
        # BEGIN SOLUTION gan-d-real
        real_logits = self.run_D(real_img)  # the real term of Eq. (2) sees real images
        # END SOLUTION
        loss = discriminator_loss(real_logits, gen_logits).mean()
        stats = {"loss_D": loss.item(), "D_real": real_logits.mean().item(), "D_fake": gen_logits.mean().item()}
        return loss, stats

    def d_reg(self, real_img: torch.Tensor):
        """Lazy R1 phase: gradients w.r.t. the un-augmented reals (as DiffAugment's authors do)."""
        real_img = real_img.detach().requires_grad_(True)
        real_logits = self.run_D(real_img)  # [B]
        # TODO: penalty (per sample gamma/2 ||grad_x D(x)||^2, Eq. 3, create_graph) and loss (mean x interval)
        # BEGIN SOLUTION gan-r1
        # Sum over the batch: logit b depends only on image b, so the gradient's slice b is grad_x D(x_b).
        (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)  # [B, C, H, W]
        penalty = grad.square().sum(dim=[1, 2, 3]) * (self.cfg.r1_gamma / 2)  # [B], gamma/2 ||grad_x D(x)||^2
        loss = penalty.mean() * self.cfg.d_reg_interval  # lazy regularisation: every I steps, weight I
        # END SOLUTION
        return loss + real_logits.sum() * 0, {"r1_penalty": penalty.mean().item()}
