"""R1 gradient penalty on real data (Mescheder et al. 2018, "Which Training Methods for GANs do actually
Converge?", Eq. 9): R1(psi) = gamma/2 * E_{x ~ p_data} ||grad_x D_psi(x)||^2.

The reference that ``tests/gan`` and the grader compare ``gan.loss``'s inline R1 (StyleGAN2's lazy ``Dreg``
phase, the student's exercise) to; the squared norm is summed over C, H, W. Also the non-saturating logistic
losses it regularises (Goodfellow et al. 2014, Sec. 3; handout Eq. 1-2), for code outside ``gan`` (benchmarks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample R1 penalty ``gamma/2 * ||dD(x)/dx||^2`` (summed over C, H, W); the caller takes the mean (E).

    Args:
        real_logits: D(x), shape [B] or [B, 1], computed from ``real_img`` (the graph must still exist).
        real_img: the real images x [B, C, H, W] with ``requires_grad=True``.
        gamma: R1 weight gamma (StyleGAN2 low-shot default 10).

    Returns:
        [B] penalties. The graph is kept (``create_graph=True``) so the penalty can be back-propagated into D.
    """
    if not real_img.requires_grad:
        raise ValueError("r1_penalty needs real_img with requires_grad=True (set it before calling D)")
    # Sum over the batch: sample b's logit depends only on image b, so grad_b = dD(x_b)/dx_b.
    (grad,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_img, create_graph=True)  # [B, C, H, W]
    return grad.square().sum(dim=[1, 2, 3]) * (gamma / 2)


def non_saturating_generator_loss(gen_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample -log sigmoid(D(G(z))) = softplus(-D(G(z))) [B] (handout Eq. 1; softplus is the stable form)."""
    return F.softplus(-gen_logits)


def non_saturating_discriminator_loss(real_logits: torch.Tensor, gen_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) = softplus(-D(x)) + softplus(D(G(z))) [B] (Eq. 2)."""
    return F.softplus(-real_logits) + F.softplus(gen_logits)
