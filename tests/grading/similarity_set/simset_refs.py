"""Synthetic reference files (with solution regions) of two homeworks, for the similarity tests and benchmark.

They mirror the real exercises' signatures (UMich EECS 498 HW5 part A losses, R1 and random cutout; KAIST CS492D
A4 SDS and PDS) but stay fixed while the real packages change, so the benchmark's numbers are comparable over time.
Randomness is drawn by the caller and passed in (``t``, ``noise``, ``u``), as the repo's region rules say.
"""

GAN_LOSS = '''"""GAN losses (UMich EECS 498 HW5 part A, Eq. 1-3): synthetic copy for the similarity benchmark."""

import torch
import torch.nn.functional as F


def generator_loss(gen_logits):
    """Per-sample non-saturating generator loss, Eq. (1); gen_logits = D(G(z)) [B] -> [B]."""
    # TODO: per-sample non-saturating generator loss -log sigmoid(D(G(z))) (Eq. 1), numerically stable
    # BEGIN SOLUTION gan-g-loss
    return F.softplus(-gen_logits)
    # END SOLUTION


def discriminator_loss(real_logits, gen_logits):
    """Per-sample discriminator loss, Eq. (2): softplus(-D(x)) + softplus(D(G(z))) -> [B]."""
    # TODO: loss_real and loss_fake, the per-sample real and fake terms of Eq. 2, numerically stable
    # BEGIN SOLUTION gan-d-loss
    loss_real = F.softplus(-real_logits)
    loss_fake = F.softplus(gen_logits)
    # END SOLUTION
    return loss_real + loss_fake


def r1_loss(real_img, real_logits, r1_gamma, d_reg_interval):
    """Lazy R1 (Mescheder et al. 2018, Eq. 9; handout Eq. 3): per-sample penalty [B] and the phase loss."""
    # TODO: penalty (per sample gamma/2 ||grad_x D(x)||^2, Eq. 3, create_graph) and loss (mean x interval)
    # BEGIN SOLUTION gan-r1
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    penalty = grad.square().sum(dim=[1, 2, 3]) * (r1_gamma / 2)
    loss = penalty.mean() * d_reg_interval
    # END SOLUTION
    return loss, penalty
'''

GAN_AUGMENT = '''"""Random-size cutout (UMich EECS 498 HW5 Task 4): synthetic copy for the similarity benchmark."""

import math

import torch


def rand_cutout(x, u, min_ratio=0.25, max_ratio=0.5):
    """x [B, C, H, W] with one zero box per image; u [4, B] uniform draws for h, w, top, left."""
    # TODO: zero one box per image: h, w uniform in 25-50% of H, W; top-left uniform with the box inside
    # BEGIN SOLUTION diffaugment-cutout
    B, _, H, W = x.shape
    h_lo, w_lo = max(1, math.ceil(H * min_ratio)), max(1, math.ceil(W * min_ratio))
    h_hi, w_hi = max(h_lo, int(H * max_ratio)), max(w_lo, int(W * max_ratio))
    h = (h_lo + u[0] * (h_hi + 1 - h_lo)).floor().long().clamp(max=h_hi)
    w = (w_lo + u[1] * (w_hi + 1 - w_lo)).floor().long().clamp(max=w_hi)
    top = (u[2] * (H - h + 1)).floor().long().view(B, 1, 1)
    left = (u[3] * (W - w + 1)).floor().long().view(B, 1, 1)
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    in_box = (rows >= top) & (rows < top + h.view(B, 1, 1)) & (cols >= left) & (cols < left + w.view(B, 1, 1))
    return x * ~in_box.unsqueeze(1)
    # END SOLUTION
'''

GUIDANCE = '''"""Score distillation (KAIST CS492D A4): synthetic copy for the similarity benchmark."""

import torch
import torch.nn.functional as F


class Guidance:
    """A frozen text-to-image UNet ``self.unet(x_t, t, embeddings)`` and its ``self.alphas_cumprod`` [T]."""

    def __init__(self, unet, alphas_cumprod):
        self.unet, self.alphas_cumprod = unet, alphas_cumprod

    def predict_eps(self, x_t, t, text_embeddings, guidance_scale):
        """CFG prediction; text_embeddings [2B, L, D] holds the unconditional then the conditional rows."""
        eps_uncond, eps_cond = self.unet(torch.cat([x_t, x_t]), torch.cat([t, t]), text_embeddings).chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    def get_sds_loss(self, latents, text_embeddings, guidance_scale, grad_scale, t, noise):
        """Score Distillation Sampling (Poole et al. 2023, Eq. 3), w(t) = 1 - alpha_bar_t; t [B], noise given."""
        # TODO: the SDS loss, whose gradient w.r.t. latents is grad_scale * w(t) * (eps_hat - noise) (Eq. 3)
        # BEGIN SOLUTION sds-loss
        alpha_bar_t = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = alpha_bar_t.sqrt() * latents + (1 - alpha_bar_t).sqrt() * noise
        with torch.no_grad():
            eps_uncond, eps_cond = self.unet(torch.cat([x_t, x_t]), torch.cat([t, t]), text_embeddings).chunk(2)
        eps_hat = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        g = grad_scale * (1 - alpha_bar_t) * (eps_hat - noise)
        target = (latents - g).detach()
        return 0.5 * F.mse_loss(latents, target, reduction="sum") / latents.shape[0]
        # END SOLUTION

    def get_pds_loss(self, src_latents, tgt_latents, src_text_embedding, tgt_text_embedding, guidance_scale,
                     grad_scale, t, noise_t, noise_prev, t_delta=2):
        """Posterior Distillation Sampling (Koo et al. 2024, Eq. 11): g = z_tgt - z_src with shared noises."""
        # TODO: the PDS loss, whose gradient w.r.t. tgt_latents is grad_scale * (z_tgt - z_src) (Eq. 11)
        # BEGIN SOLUTION pds-loss
        t_prev = (t - t_delta).clamp(min=0)
        a_t = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        a_prev = self.alphas_cumprod[t_prev].view(-1, 1, 1, 1)
        beta_t = 1 - a_t / a_prev
        sigma_t = ((1 - a_prev) / (1 - a_t) * beta_t).sqrt()
        coef_x0 = a_prev.sqrt() * beta_t / (1 - a_t)
        coef_xt = (1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)

        def z_of(x0, embedding):
            x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise_t
            x_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * noise_prev
            with torch.no_grad():
                eps_hat = self.predict_eps(x_t, t, embedding, guidance_scale)
            x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
            mu = coef_x0 * x0_hat + coef_xt * x_t
            return (x_prev - mu) / sigma_t

        z_src = z_of(src_latents, src_text_embedding)
        z_tgt = z_of(tgt_latents, tgt_text_embedding)
        g = grad_scale * (z_tgt - z_src)
        target = (tgt_latents - g).detach()
        return 0.5 * F.mse_loss(tgt_latents, target, reduction="sum") / tgt_latents.shape[0]
        # END SOLUTION
'''

HOMEWORKS = {
    "umich-hw5-gan": {"gan/loss.py": GAN_LOSS, "gan/augment.py": GAN_AUGMENT},
    "kaist-a4": {"distillation/guidance.py": GUIDANCE},
}
REGIONS = {
    "umich-hw5-gan": ("gan-g-loss", "gan-d-loss", "gan-r1", "diffaugment-cutout"),
    "kaist-a4": ("sds-loss", "pds-loss"),
}
