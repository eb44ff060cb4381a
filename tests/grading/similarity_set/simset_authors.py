"""Synthetic students: each region body is assembled from per-step alternatives written in genuinely different
styles (one-liners vs intermediate names, loops vs vectorised masks, helper closures vs duplicated branches,
torch functions vs operators), with local names drawn from pools.

An :class:`Author` separates three seeds: ``choices`` (which alternative at each step), ``names`` (local
identifiers) and ``reorder`` (the order of independent statements), so a renamed copy re-uses the choices with new
names, a reordered copy the choices with the independent statements in another order.
"""

from __future__ import annotations

import random
import re

POOLS = {
    "loss": ["loss", "out", "result", "value", "res", "total"],
    "z": ["z", "neg", "m", "minus_logits", "nz"],
    "ones": ["ones", "target", "labels", "y_real", "lbl"],
    "zeros": ["zeros", "fake_target", "y_fake", "lbl0"],
    "p": ["p", "prob", "probs", "s"],
    "sp": ["sp", "softplus", "f", "act"],
    "grad": ["grad", "g", "gradient", "dx", "grad_real", "d_img"],
    "grads": ["grads", "gs", "grad_list", "outs"],
    "sq": ["sq", "sq_norm", "norm2", "grad_sq", "n2", "energy"],
    "half": ["half_gamma", "coef", "scale", "weight", "c"],
    "hlo": ["h_lo", "min_h", "h_min", "lo_h", "hmin"], "hhi": ["h_hi", "max_h", "h_max", "hi_h", "hmax"],
    "wlo": ["w_lo", "min_w", "w_min", "lo_w", "wmin"], "whi": ["w_hi", "max_w", "w_max", "hi_w", "wmax"],
    "bounds": ["bounds", "side_range", "limits", "box_range"], "lo": ["lo", "low", "smallest"],
    "h": ["h", "box_h", "hs", "height", "bh"], "w": ["w", "box_w", "ws", "width", "bw"],
    "top": ["top", "y0", "ty", "row0", "t0"], "left": ["left", "x0", "lx", "col0", "l0"],
    "rows": ["rows", "ys", "ii", "r", "grid_y"], "cols": ["cols", "xs", "jj", "c_idx", "grid_x"],
    "box": ["in_box", "mask", "cut", "inside", "hole", "region"],
    "inr": ["in_rows", "row_ok", "my", "vert"], "inc": ["in_cols", "col_ok", "mx", "horiz"],
    "t3": ["t3", "top_b", "tt"], "l3": ["l3", "left_b", "ll"],
    "keep": ["keep", "mult", "factor", "m_keep"],
    "mask": ["mask", "m", "keep_mask", "ones_mask"], "out": ["out", "y", "res", "cut_x", "xc"],
    "i": ["i", "b", "k", "n", "idx"], "bh": ["hi", "hh", "bh_i", "size_h"], "bw": ["wi", "ww", "bw_i", "size_w"],
    "ti": ["ti", "y_start", "t_i", "r0"], "li": ["li", "x_start", "l_i", "c0"],
    "imgs": ["imgs", "outs", "results", "pieces"], "img": ["img", "im", "one", "xi"],
    "yy": ["yy", "gy", "ygrid", "row_ids"], "xx": ["xx", "gx", "xgrid", "col_ids"],
    "ab": ["alpha_bar_t", "a_t", "abar", "alpha_t", "ab"], "B": ["B", "bs", "n", "batch"],
    "xt": ["x_t", "noisy", "z_t", "xt", "lat_t"], "sa": ["sqrt_ab", "sa", "c0", "s1"],
    "sb": ["sqrt_1m_ab", "sb", "c1", "s2"], "eu": ["eps_uncond", "e_u", "uncond", "eps_u", "n_u"],
    "ec": ["eps_cond", "e_c", "cond", "eps_c", "n_c"], "inp": ["inp", "model_in", "x_in", "latent_in"],
    "tt": ["tt", "t_in", "ts", "timesteps"], "both": ["both", "eps_both", "pred", "noise_pred"],
    "eh": ["eps_hat", "eps", "pred_eps", "e_hat", "noise_hat"], "wt": ["w", "weight", "w_t", "sigma2"],
    "gr": ["g", "grad", "grad_sds", "delta", "update"], "tg": ["target", "tgt", "goal", "y_target"],
    "tp": ["t_prev", "prev_t", "s", "t_p"], "at": ["a_t", "alpha_bar_t", "ab_t", "abar_t"],
    "ap": ["a_prev", "alpha_bar_prev", "ab_prev", "abar_s"], "abar": ["abar", "ac", "alphas", "cum"],
    "alpha": ["alpha_t", "a_ratio", "alpha", "ratio"], "beta": ["beta_t", "beta", "b_t", "one_m"],
    "var": ["var", "variance", "post_var", "v"], "sig": ["sigma_t", "sigma", "std", "s_t"],
    "c0": ["coef_x0", "c_x0", "k0", "m1"], "ct": ["coef_xt", "c_xt", "k1", "m2"],
    "zf": ["z_of", "posterior_z", "branch", "compute_z", "get_z"], "x0": ["x0", "lat", "z0", "x"],
    "emb": ["embedding", "emb", "cond_emb", "text"], "xp": ["x_prev", "xs", "noisy_prev", "x_s"],
    "e": ["eps_hat", "eps", "pred", "e"], "x0h": ["x0_hat", "x0_pred", "pred_x0", "xh"],
    "mu": ["mu", "mean", "post_mean", "mu_t"], "zs": ["z_src", "zs", "z_a", "src_z"],
    "zt": ["z_tgt", "zt", "z_b", "tgt_z"], "zl": ["zs_list", "zlist", "z_pair", "outs"],
    "spa": ["sqrt_ap", "sp_a", "d0", "q1"], "spb": ["sqrt_1m_ap", "sp_b", "d1", "q2"],
}


class Author:
    """One synthetic student: ``pick`` draws a style from the choice seed, ``fill`` names from the name seed."""

    def __init__(self, choices: int, names: int, reorder: bool = False):
        self.rng, self.name_rng = random.Random(choices), random.Random(f"names-{names}")
        self.reorder, self.names, self.traits = reorder, {}, {}

    def pick(self, *options):
        return options[self.rng.randrange(len(options))]

    def trait(self, name: str, *options):
        """A personal habit (``x.sqrt()`` or ``torch.sqrt(x)``, ...): drawn once, then used everywhere."""
        if name not in self.traits:
            self.traits[name] = self.pick(*options)
        return self.traits[name]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def name(self, key: str) -> str:
        if key not in self.names:
            self.names[key] = self.name_rng.choice(POOLS[key])
        return self.names[key]

    def fill(self, template: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: self.name(m.group(1)), template)

    def group(self, *chunks: str) -> str:
        """Independent statements in this author's order (reversed in a reordered copy)."""
        order = list(range(len(chunks)))
        self.rng.shuffle(order)
        if self.reorder:
            order.reverse()
        return "\n".join(chunks[i] for i in order)


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line if line else line for line in text.split("\n"))


# ---------------------------------------------------------------------------------------------------------------
# UMich HW5 part A


REAL = ["F.softplus(-{x})", "-F.logsigmoid({x})",
        'F.binary_cross_entropy_with_logits({x}, torch.ones_like({x}), reduction="none")',
        "torch.nn.functional.softplus({x}.neg())", "F.relu(-{x}) + torch.log1p(torch.exp(-{x}.abs()))"]
FAKE = ["F.softplus({x})", "-F.logsigmoid(-{x})",
        'F.binary_cross_entropy_with_logits({x}, torch.zeros_like({x}), reduction="none")',
        "torch.nn.functional.softplus({x})", "F.relu({x}) + torch.log1p(torch.exp(-{x}.abs()))"]


def gan_g_loss(a: Author) -> str:
    return a.fill(a.pick(
        "return F.softplus(-gen_logits)",
        "return -F.logsigmoid(gen_logits)",
        'return F.binary_cross_entropy_with_logits(gen_logits, torch.ones_like(gen_logits), reduction="none")',
        "{loss} = torch.nn.functional.softplus(gen_logits.neg())\nreturn {loss}",
        "{z} = -gen_logits\nreturn torch.clamp({z}, min=0) + torch.log1p(torch.exp(-torch.abs({z})))",
        "return torch.log1p(torch.exp(-gen_logits.abs())) + F.relu(-gen_logits)",
        "{ones} = torch.ones_like(gen_logits)\n"
        '{loss} = F.binary_cross_entropy_with_logits(gen_logits, {ones}, reduction="none")\nreturn {loss}',
        "return -torch.nn.LogSigmoid()(gen_logits)",
        "{p} = torch.sigmoid(gen_logits)\nreturn -torch.log({p}.clamp(min=1e-12))"))


def gan_d_loss(a: Author) -> str:
    k = a.rng.randrange(len(REAL))
    j = k if a.chance(0.7) else a.rng.randrange(len(FAKE))
    real = REAL[k].replace("{x}", "real_logits")
    fake = FAKE[j].replace("{x}", "gen_logits")
    return a.fill(a.pick(
        a.group(f"loss_real = {real}", f"loss_fake = {fake}"),
        f"loss_real, loss_fake = {real}, {fake}",
        "{sp} = F.softplus\n" + a.group("loss_real = {sp}(-real_logits)", "loss_fake = {sp}(gen_logits)"),
        a.group("{ones} = torch.ones_like(real_logits)", "{zeros} = torch.zeros_like(gen_logits)") + "\n"
        + a.group('loss_real = F.binary_cross_entropy_with_logits(real_logits, {ones}, reduction="none")',
                  'loss_fake = F.binary_cross_entropy_with_logits(gen_logits, {zeros}, reduction="none")')))


def gan_r1(a: Author) -> str:
    grad = a.pick(
        "({grad},) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)",
        "{grad} = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_img, create_graph=True)[0]",
        "{grad} = torch.autograd.grad(real_logits, real_img, grad_outputs=torch.ones_like(real_logits),\n"
        "                             create_graph=True, retain_graph=True)[0]",
        "{grads} = torch.autograd.grad([real_logits.sum()], [real_img], create_graph=True)\n{grad} = {grads}[0]")
    sq = a.pick("{grad}.square().sum(dim=[1, 2, 3])", "{grad}.pow(2).reshape({grad}.shape[0], -1).sum(1)",
                "({grad} ** 2).flatten(start_dim=1).sum(dim=-1)",
                "torch.linalg.vector_norm({grad}.flatten(1), dim=1) ** 2",
                'torch.einsum("bchw,bchw->b", {grad}, {grad})', "{grad}.norm(2, dim=(1, 2, 3)).pow(2)",
                "torch.sum({grad} * {grad}, dim=(1, 2, 3))")
    pen = a.pick("penalty = r1_gamma / 2 * {s}", "penalty = 0.5 * r1_gamma * {s}", "penalty = {s} * (r1_gamma * 0.5)",
                 "penalty = {s}.mul(r1_gamma / 2)", "penalty = {half} * {s}")
    merged = a.chance(0.3) and "{half}" not in pen
    body = [grad] + ([pen.replace("{s}", f"({sq})" if ".mul" in pen else sq)] if merged else
                     ["{sq} = " + sq, pen.replace("{s}", "{sq}")])
    if "{half}" in pen:  # an independent constant: anywhere before its use (mirrored in a reordered copy)
        pos = a.rng.randrange(len(body))
        body.insert(len(body) - 1 - pos if a.reorder else pos, "{half} = r1_gamma / 2")
    body.append(a.pick("loss = penalty.mean() * d_reg_interval", "loss = d_reg_interval * penalty.mean()",
                       "loss = penalty.sum() / penalty.shape[0] * d_reg_interval",
                       "loss = torch.mean(penalty) * d_reg_interval", "loss = penalty.mean().mul(d_reg_interval)"))
    return a.fill("\n".join(body))
