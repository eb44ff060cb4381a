"""Synthetic students' SDS and PDS losses (KAIST CS492D A4), with personal habits that hold across a body.

Habits (:meth:`Author.trait`): how square roots are written, how [B] is broadcast to [B, 1, 1, 1], ``1`` or
``1.0``, which no-grad context, how a batch is doubled. Steps then vary on top: where alpha_bar_t comes from, the
CFG form, the weight, the stop-gradient loss, and for PDS the structure (a closure per branch, a loop over the two
branches, duplicated straight-line code, or one batched pass).
"""

from __future__ import annotations

from simset_authors import POOLS, Author, _indent

POOLS.update({
    "acp": ["acp", "alphas", "abar_all", "cumprod"], "sig2": ["sig2", "var_t", "one_minus", "noise_level"],
    "xb": ["x_both", "x0s", "stacked", "pair"], "nb": ["noise_both", "eps_pair", "n2", "noises"],
    "eb": ["emb_both", "embs", "conds", "text_pair"], "zb": ["z_both", "zz", "z_pair", "both_z"],
})


def _sqrt(a: Author, e: str) -> str:
    simple = e.replace("_", "").replace("{", "").replace("}", "").isalnum()
    form = a.trait("sqrt", "{e}.sqrt()", "torch.sqrt({e})", "{e} ** 0.5")
    return form.replace("{e}", e if simple or form.startswith("torch") else f"({e})")


def _view(a: Author, e: str) -> str:
    return e + a.trait("view", ".view(-1, 1, 1, 1)", "[:, None, None, None]", ".reshape(-1, 1, 1, 1)",
                       ".view({B}, 1, 1, 1)")


def _one(a: Author) -> str:
    return a.trait("one", "1", "1.0")


def _nograd(a: Author) -> str:
    return a.trait("nograd", "with torch.no_grad():", "with torch.inference_mode():")


def _alpha(a: Author, out: str, t: str) -> str:
    return a.pick(f"{out} = " + _view(a, f"self.alphas_cumprod[{t}]"),
                  f"{out} = " + _view(a, f"self.alphas_cumprod.gather(0, {t})"),
                  f"{out} = " + _view(a, f"self.alphas_cumprod.to(t.device)[{t}]"),
                  f"{out} = self.alphas_cumprod[{t}]\n{out} = " + _view(a, out),
                  f"{out} = " + _view(a, f"torch.index_select(self.alphas_cumprod, 0, {t})"))


def _loss(a: Author, x: str, g: str, batch: str) -> str:
    return a.pick(
        f"{{tg}} = ({x} - {g}).detach()\nreturn 0.5 * F.mse_loss({x}, {{tg}}, reduction=\"sum\") / {batch}",
        f"return ({x} * {g}.detach()).sum() / {batch}",
        f"{{tg}} = ({x} - {g}).detach()\n{{loss}} = 0.5 * (({x} - {{tg}}) ** 2).sum() / {batch}\nreturn {{loss}}",
        f"return torch.sum({g}.detach() * {x}) / {batch}",
        f"{{loss}} = ({g}.detach() * {x}).sum(dim=(1, 2, 3)).mean()\nreturn {{loss}}",
        f"{{tg}} = {x}.detach() - {g}.detach()\nreturn F.mse_loss({x}, {{tg}}, reduction=\"sum\") / (2 * {batch})")


def sds_loss(a: Author) -> str:
    batch = a.pick("{B} = latents.shape[0]", "{B} = len(latents)", "{B} = latents.size(0)")
    head = a.group(batch, _alpha(a, "{ab}", "t"))
    one = _one(a)
    noisy = a.pick(f"{{xt}} = {_sqrt(a, '{ab}')} * latents + {_sqrt(a, f'{one} - {{ab}}')} * noise",
                   f"{{sa}}, {{sb}} = {_sqrt(a, '{ab}')}, {_sqrt(a, f'{one} - {{ab}}')}\n"
                   "{xt} = {sa} * latents + {sb} * noise",
                   f"{{xt}} = latents * {_sqrt(a, '{ab}')} + noise * {_sqrt(a, f'{one} - {{ab}}')}",
                   f"{{xt}} = torch.addcmul({_sqrt(a, '{ab}')} * latents, {_sqrt(a, f'{one} - {{ab}}')}, noise)")
    cat = a.trait("cat", "cat", "times", "repeat")
    x2 = {"cat": "torch.cat([{xt}, {xt}])", "times": "torch.cat([{xt}] * 2)", "repeat": "{xt}.repeat(2, 1, 1, 1)"}
    t2 = {"cat": "torch.cat([t, t])", "times": "torch.cat([t] * 2)", "repeat": "t.repeat(2)"}
    pred = a.pick(
        f"{{eu}}, {{ec}} = self.unet({x2[cat]}, {t2[cat]}, text_embeddings).chunk(2)",
        f"{{inp}} = {x2[cat]}\n{{tt}} = {t2[cat]}\n{{both}} = self.unet({{inp}}, {{tt}}, text_embeddings)\n"
        "{eu}, {ec} = {both}.chunk(2)",
        a.group("{eu} = self.unet({xt}, t, text_embeddings[:{B}])",
                "{ec} = self.unet({xt}, t, text_embeddings[{B}:])"),
        f"{{both}} = self.unet({x2[cat]}, {t2[cat]}, text_embeddings)\n"
        "{eu}, {ec} = torch.chunk({both}, 2, dim=0)",
        "helper")
    cfg = a.pick("{eh} = {eu} + guidance_scale * ({ec} - {eu})",
                 f"{{eh}} = ({one} - guidance_scale) * {{eu}} + guidance_scale * {{ec}}",
                 "{eh} = {eu}.lerp({ec}, guidance_scale)", "{eh} = {ec} + (guidance_scale - 1) * ({ec} - {eu})")
    if pred == "helper":
        pred, cfg = "{eh} = self.predict_eps({xt}, t, text_embeddings, guidance_scale)", ""
    block = _nograd(a) + "\n" + _indent(pred + ("\n" + cfg if cfg and a.chance(0.5) else ""))
    if cfg and cfg not in block:
        block += "\n" + cfg
    if "inference_mode" in block:
        block += "\n{eh} = {eh}.clone()"
    weight = a.pick(f"{{wt}} = {one} - {{ab}}", "{wt} = torch.ones_like({ab}) - {ab}", "")
    w = "{wt}" if weight else f"({one} - {{ab}})"
    grad = a.pick(f"{{gr}} = grad_scale * {w} * ({{eh}} - noise)", f"{{gr}} = ({{eh}} - noise) * {w} * grad_scale",
                  f"{{gr}} = {w} * ({{eh}} - noise)\n{{gr}} = {{gr}} * grad_scale",
                  f"{{gr}} = grad_scale * {w} * {{eh}} - grad_scale * {w} * noise",
                  f"{{gr}} = torch.mul({{eh}} - noise, {w}).mul(grad_scale)")
    parts = [head, noisy, block, weight, grad, _loss(a, "latents", "{gr}", "{B}")]
    return a.fill("\n".join(p for p in parts if p))


def _pds_setup(a: Author, roots: bool) -> str:
    one = _one(a)
    tp = a.pick("{tp} = (t - t_delta).clamp(min=0)", "{tp} = torch.clamp(t - t_delta, min=0)",
                "{tp} = (t - t_delta).clip(0)", "{tp} = torch.maximum(t - t_delta, torch.zeros_like(t))",
                "{tp} = torch.where(t > t_delta, t - t_delta, torch.zeros_like(t))")
    alphas = a.group(_alpha(a, "{at}", "t"), _alpha(a, "{ap}", "{tp}"))
    beta = a.pick(f"{{alpha}} = {{at}} / {{ap}}\n{{beta}} = {one} - {{alpha}}",
                  f"{{beta}} = {one} - {{at}} / {{ap}}\n{{alpha}} = {one} - {{beta}}",
                  "{alpha} = {at} / {ap}\n{beta} = ({ap} - {at}) / {ap}")
    sig = a.pick(f"{{sig}} = {_sqrt(a, f'({one} - {{ap}}) / ({one} - {{at}}) * {{beta}}')}",
                 f"{{var}} = {{beta}} * ({one} - {{ap}}) / ({one} - {{at}})\n{{sig}} = {_sqrt(a, '{var}')}",
                 f"{{sig}} = {_sqrt(a, '{beta}')} * {_sqrt(a, f'({one} - {{ap}}) / ({one} - {{at}})')}")
    coef = a.pick(f"{{c0}} = {_sqrt(a, '{ap}')} * {{beta}} / ({one} - {{at}})\n"
                  f"{{ct}} = {_sqrt(a, '{alpha}')} * ({one} - {{ap}}) / ({one} - {{at}})",
                  f"{{c0}} = {{beta}} * {_sqrt(a, '{ap}')} / ({one} - {{at}})\n"
                  f"{{ct}} = ({one} - {{ap}}) * {_sqrt(a, '{alpha}')} / ({one} - {{at}})", "")
    parts = [tp, alphas, beta, a.group(sig, coef) if coef else sig]
    if roots:
        parts.append(a.group(f"{{sa}}, {{sb}} = {_sqrt(a, '{at}')}, {_sqrt(a, f'{one} - {{at}}')}",
                             f"{{spa}}, {{spb}} = {_sqrt(a, '{ap}')}, {_sqrt(a, f'{one} - {{ap}}')}"))
    return "\n".join(parts)


def _pds_branch(a: Author, x0: str, emb: str, roots: bool, coef: bool, s: str = "") -> str:
    """x_t, x_prev, the prediction, Tweedie's x0_hat and the posterior mean of one branch (suffix ``s``)."""
    one = _one(a)
    sa, sb = ("{sa}", "{sb}") if roots else (_sqrt(a, "{at}"), _sqrt(a, f"{one} - {{at}}"))
    spa, spb = ("{spa}", "{spb}") if roots else (_sqrt(a, "{ap}"), _sqrt(a, f"{one} - {{ap}}"))
    noisy = a.group(f"{{xt}}{s} = {sa} * {x0} + {sb} * noise_t", f"{{xp}}{s} = {spa} * {x0} + {spb} * noise_prev")
    pred = f"{_nograd(a)}\n    {{e}}{s} = self.predict_eps({{xt}}{s}, t, {emb}, guidance_scale)"
    x0h = a.pick(f"{{x0h}}{s} = ({{xt}}{s} - {sb} * {{e}}{s}) / {sa}",
                 f"{{x0h}}{s} = {{xt}}{s} / {sa} - {sb} / {sa} * {{e}}{s}",
                 f"{{x0h}}{s} = ({{xt}}{s} - {{e}}{s} * {sb}) / {sa}")
    if coef:
        mu = a.pick(f"{{mu}}{s} = {{c0}} * {{x0h}}{s} + {{ct}} * {{xt}}{s}",
                    f"{{mu}}{s} = {{ct}} * {{xt}}{s} + {{c0}} * {{x0h}}{s}")
    else:
        mu = (f"{{mu}}{s} = ({_sqrt(a, '{ap}')} * {{beta}} * {{x0h}}{s} + {_sqrt(a, '{alpha}')} * ({one} - {{ap}}) * "
              f"{{xt}}{s}) / ({one} - {{at}})")
    return "\n".join([noisy, pred, x0h, mu])


def pds_loss(a: Author) -> str:
    roots = a.chance(0.5)
    setup = _pds_setup(a, roots)
    coef = "{c0}" in setup
    style = a.pick("closure", "loop", "straight")
    z = a.pick("({xp} - {mu}) / {sig}", "({xp} - {mu}) * (1 / {sig})", "{xp}.sub({mu}).div({sig})")
    parts = [setup]
    if style == "closure":
        body = _pds_branch(a, "{x0}", "{emb}", roots, coef) + "\nreturn " + z
        parts += ["def {zf}({x0}, {emb}):\n" + _indent(body),
                  a.group("{zs} = {zf}(src_latents, src_text_embedding)",
                          "{zt} = {zf}(tgt_latents, tgt_text_embedding)")]
    elif style == "loop":
        body = _pds_branch(a, "{x0}", "{emb}", roots, coef) + f"\n{{zl}}.append({z})"
        parts += ["{zl} = []", "for {x0}, {emb} in ((src_latents, src_text_embedding), (tgt_latents, "
                  "tgt_text_embedding)):\n" + _indent(body), "{zs}, {zt} = {zl}"]
    else:
        zz = [z.replace("{xp}", "{xp}" + s).replace("{mu}", "{mu}" + s) for s in ("_src", "_tgt")]
        parts += [_pds_branch(a, "src_latents", "src_text_embedding", roots, coef, "_src"),
                  _pds_branch(a, "tgt_latents", "tgt_text_embedding", roots, coef, "_tgt"),
                  a.group(f"{{zs}} = {zz[0]}", f"{{zt}} = {zz[1]}")]
    if "{B}" in setup:
        parts.insert(0, "{B} = tgt_latents.shape[0]")
    grad = a.pick("{gr} = grad_scale * ({zt} - {zs})", "{gr} = ({zt} - {zs}) * grad_scale",
                  "{gr} = grad_scale * {zt} - grad_scale * {zs}")
    parts += [grad, _loss(a, "tgt_latents", "{gr}", "tgt_latents.shape[0]")]
    return a.fill("\n".join(parts))
