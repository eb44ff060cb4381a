"""Synthetic students' random-size cutout (UMich HW5 Task 4): the largest GAN region, so the most styles.

Styles: vectorised 2-D masks, outer products of 1-D row/column masks, meshgrid, and per-image Python loops that
zero a mask, a clone or a list of images; each with several ways of computing the size bounds, drawing the box and
applying it.
"""

from __future__ import annotations

from simset_authors import POOLS, Author, _indent

POOLS.update({
    "arh": ["ar_h", "hr", "row_idx", "h_range"], "arw": ["ar_w", "wr", "col_idx", "w_range"],
    "rm": ["row_mask", "rmask", "in_h", "vert_mask"], "cm": ["col_mask", "cmask", "in_w", "horiz_mask"],
    "uh": ["uh", "a", "p_h", "r_h"], "uw": ["uw", "b", "p_w", "r_w"], "ut": ["ut", "c", "p_t", "r_t"],
    "ul": ["ul", "d", "p_l", "r_l"], "te": ["bottom", "y1", "t_end", "r1"], "le": ["right", "x1", "l_end", "c1"],
    "draw": ["draw", "pick", "sample_size", "uniform_int"],
})


def _subst(t: str, **kw: str) -> str:
    """Fill ``{key}`` placeholders; single capital letters (N, K, U) are replaced where they stand."""
    for k, v in kw.items():
        t = t.replace(k, v) if len(k) == 1 and k.isupper() else t.replace("{" + k + "}", v)
    return t


def _bounds(a: Author) -> str:
    one = a.pick("{lo} = max(1, math.ceil(N * min_ratio))\n{hi} = max({lo}, int(N * max_ratio))",
                 "{lo}, {hi} = math.ceil(min_ratio * N), math.floor(max_ratio * N)",
                 "{lo} = max(int(math.ceil(N * min_ratio)), 1)\n{hi} = max(int(math.floor(N * max_ratio)), {lo})",
                 "{lo} = max(1, int(-(-N * min_ratio // 1)))\n{hi} = max({lo}, int(N * max_ratio))",
                 "{hi} = int(N * max_ratio)\n{lo} = min({hi}, max(1, math.ceil(N * min_ratio)))",
                 "{lo} = math.ceil(N / 4) if min_ratio == 0.25 else math.ceil(N * min_ratio)\n{hi} = N // 2 if "
                 "max_ratio == 0.5 else int(N * max_ratio)", "helper", "pairs")
    if one == "helper":
        return ("def {bounds}(n):\n    {lo} = max(1, math.ceil(n * min_ratio))\n    return {lo}, max({lo}, int(n * "
                "max_ratio))\n" + a.group("{hlo}, {hhi} = {bounds}(H)", "{wlo}, {whi} = {bounds}(W)"))
    if one == "pairs":
        return ("{hlo}, {wlo} = max(1, math.ceil(H * min_ratio)), max(1, math.ceil(W * min_ratio))\n"
                "{hhi}, {whi} = max({hlo}, int(H * max_ratio)), max({wlo}, int(W * max_ratio))")
    return a.group(_subst(one, N="H", lo="{hlo}", hi="{hhi}"), _subst(one, N="W", lo="{wlo}", hi="{whi}"))


def _sizes(a: Author) -> str:
    size = a.pick("{s} = ({lo} + u[K] * ({hi} + 1 - {lo})).floor().long().clamp(max={hi})",
                  "{s} = torch.floor({lo} + u[K] * ({hi} - {lo} + 1)).to(torch.int64).clamp(max={hi})",
                  "{s} = (u[K] * ({hi} - {lo} + 1)).long() + {lo}\n"
                  "{s} = torch.minimum({s}, torch.full_like({s}, {hi}))",
                  "{s} = torch.clamp(({lo} + u[K] * ({hi} + 1 - {lo})).long(), {lo}, {hi})",
                  "{s} = {lo} + (u[K] * ({hi} - {lo} + 1)).long()\n{s}[{s} > {hi}] = {hi}", "lambda")
    corner = a.pick("{c} = (u[K] * (N - {s} + 1)).floor().long()", "{c} = torch.floor(u[K] * (N - {s} + 1)).long()",
                    "{c} = (u[K] * (N - {s} + 1)).to(torch.long)",
                    "{c} = torch.minimum((u[K] * (N - {s} + 1)).long(), N - {s})")
    if size == "lambda":
        sizes = "{draw} = lambda v, lo, hi: (lo + v * (hi - lo + 1)).long().clamp(max=hi)\n" + a.group(
            "{h} = {draw}(u[0], {hlo}, {hhi})", "{w} = {draw}(u[1], {wlo}, {whi})")
    else:
        sizes = a.group(_subst(size, s="{h}", lo="{hlo}", hi="{hhi}", K="0"),
                        _subst(size, s="{w}", lo="{wlo}", hi="{whi}", K="1"))
    corners = a.group(_subst(corner, s="{h}", c="{top}", K="2", N="H"),
                      _subst(corner, s="{w}", c="{left}", K="3", N="W"))
    return sizes + "\n" + corners


def _loop(a: Author, target: str, zero: str) -> str:
    """A per-image loop that zeroes ``target[zero ...box]``; draws read u[k, i] or unpacked per-image floats."""
    header = a.pick("for {i} in range(B):", "for {i} in range(x.shape[0]):", "enumerate")
    if header == "enumerate":
        header = "for {i}, ({uh}, {uw}, {ut}, {ul}) in enumerate(u.t().tolist()):"
        us = ["{uh}", "{uw}", "{ut}", "{ul}"]
    else:
        us = [a.pick("float(u[K, {i}])", "u[K][{i}].item()", "u[K, {i}].item()").replace("K", str(k))
              for k in range(4)]
    size = a.pick("{s} = min({hi}, int({lo} + U * ({hi} - {lo} + 1)))",
                  "{s} = min({hi}, {lo} + int(U * ({hi} - {lo} + 1)))",
                  "{s} = {lo} + math.floor(U * ({hi} + 1 - {lo}))\n{s} = min({s}, {hi})",
                  "{s} = int({lo} + ({hi} - {lo} + 1) * U)\nif {s} > {hi}:\n    {s} = {hi}")
    corner = a.pick("{c} = int(U * (N - {s} + 1))", "{c} = math.floor(U * (N - {s} + 1))",
                    "{c} = min(N - {s}, int((N - {s} + 1) * U))")
    box = a.pick(f"{target}[{zero}{{ti}}:{{ti}} + {{bh}}, {{li}}:{{li}} + {{bw}}] = 0",
                 f"{{te}}, {{le}} = {{ti}} + {{bh}}, {{li}} + {{bw}}\n"
                 f"{target}[{zero}{{ti}}:{{te}}, {{li}}:{{le}}] = 0.0",
                 f"{target}[{zero}{{ti}}:{{ti}} + {{bh}}, {{li}}:{{li}} + {{bw}}].zero_()",
                 f"{target}[{zero}{{ti}}:{{ti}} + {{bh}}, {{li}}:{{li}} + {{bw}}].fill_(0)")
    body = "\n".join([
        a.group(_subst(size, s="{bh}", lo="{hlo}", hi="{hhi}", U=us[0]),
                _subst(size, s="{bw}", lo="{wlo}", hi="{whi}", U=us[1])),
        a.group(_subst(corner, s="{bh}", c="{ti}", N="H", U=us[2]),
                _subst(corner, s="{bw}", c="{li}", N="W", U=us[3])),
        box])
    return header + "\n" + _indent(body)


def _masks(a: Author) -> list[str]:
    grid = a.group(*a.pick(
        ("{rows} = torch.arange(H, device=x.device).view(1, H, 1)",
         "{cols} = torch.arange(W, device=x.device).view(1, 1, W)"),
        ("{rows} = torch.arange(H, device=x.device)[None, :, None]",
         "{cols} = torch.arange(W, device=x.device)[None, None, :]"),
        ("{rows} = torch.arange(H, device=x.device).reshape(1, -1, 1)",
         "{cols} = torch.arange(W, device=x.device).reshape(1, 1, -1)"),
        ("{rows} = torch.arange(H).to(x.device).unsqueeze(0).unsqueeze(-1)",
         "{cols} = torch.arange(W).to(x.device).unsqueeze(0).unsqueeze(0)")))
    box = a.pick(
        "{box} = (({rows} >= {top}.view(B, 1, 1)) & ({rows} < ({top} + {h}).view(B, 1, 1))\n"
        "         & ({cols} >= {left}.view(B, 1, 1)) & ({cols} < ({left} + {w}).view(B, 1, 1)))",
        "{t3}, {l3} = {top}.view(-1, 1, 1), {left}.view(-1, 1, 1)\n"
        "{inr} = ({rows} >= {t3}) & ({rows} < {t3} + {h}.view(-1, 1, 1))\n"
        "{inc} = ({cols} >= {l3}) & ({cols} < {l3} + {w}.view(-1, 1, 1))\n{box} = {inr} & {inc}",
        "{inr} = ({rows} - {top}[:, None, None] >= 0) & ({rows} - {top}[:, None, None] < {h}[:, None, None])\n"
        "{inc} = ({cols} - {left}[:, None, None] >= 0) & ({cols} - {left}[:, None, None] < {w}[:, None, None])\n"
        "{box} = torch.logical_and({inr}, {inc})",
        "{box} = ({rows} >= {top}.view(B, 1, 1)) & ({rows} <= ({top} + {h} - 1).view(B, 1, 1))\n"
        "{box} = {box} & ({cols} >= {left}.view(B, 1, 1)) & ({cols} <= ({left} + {w} - 1).view(B, 1, 1))")
    return [grid, box]


def _ranges(a: Author) -> list[str]:
    ar = a.group("{arh} = torch.arange(H, device=x.device)", "{arw} = torch.arange(W, device=x.device)")
    one = a.pick("{m} = ({ar}[None, :] >= {c}[:, None]) & ({ar}[None, :] < ({c} + {s})[:, None])",
                 "{m} = ({ar}.unsqueeze(0) - {c}.unsqueeze(1)).clamp(min=-1).lt({s}.unsqueeze(1)) & "
                 "({ar}.unsqueeze(0) >= {c}.unsqueeze(1))")
    masks = a.group(_subst(one, m="{rm}", ar="{arh}", c="{top}", s="{h}"),
                    _subst(one, m="{cm}", ar="{arw}", c="{left}", s="{w}"))
    outer = a.pick("{box} = {rm}[:, :, None] & {cm}[:, None, :]",
                   '{box} = torch.einsum("bh,bw->bhw", {rm}.float(), {cm}.float()).bool()',
                   "{box} = {rm}.unsqueeze(2) & {cm}.unsqueeze(1)")
    return [ar, masks, outer]


def _apply(a: Author) -> str:
    return a.pick("return x * ~{box}.unsqueeze(1)", "return x * (~{box})[:, None].to(x.dtype)",
                  "return x.masked_fill({box}.unsqueeze(1), 0)",
                  "{keep} = 1.0 - {box}.float().unsqueeze(1)\nreturn x * {keep}",
                  "return torch.where({box}[:, None], torch.zeros_like(x), x)",
                  "return x * (1 - {box}[:, None].float())")


def diffaugment_cutout(a: Author) -> str:
    shape = a.pick("B, _, H, W = x.shape", "B, C, H, W = x.shape", "B = x.shape[0]\nH, W = x.shape[-2:]",
                   "B, H, W = x.shape[0], x.shape[2], x.shape[3]", "B, _, H, W = x.size()",
                   "H, W = x.shape[2], x.shape[3]\nB = len(x)")
    style = a.pick("masks", "ranges", "grid", "loop", "clone", "stack")
    parts = [shape, _bounds(a)]
    if style in ("masks", "ranges", "grid"):
        parts.append(_sizes(a))
    if style == "masks":
        parts += _masks(a) + [_apply(a)]
    elif style == "ranges":
        parts += _ranges(a) + [_apply(a)]
    elif style == "grid":
        parts.append(a.pick(
            '{yy}, {xx} = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), '
            'indexing="ij")',
            '{xx}, {yy} = torch.meshgrid(torch.arange(W, device=x.device), torch.arange(H, device=x.device), '
            'indexing="xy")'))
        parts.append(a.pick(
            "{box} = (({yy}[None] >= {top}[:, None, None]) & ({yy}[None] < ({top} + {h})[:, None, None])\n"
            "         & ({xx}[None] >= {left}[:, None, None])\n"
            "         & ({xx}[None] < ({left} + {w})[:, None, None]))",
            "{t3}, {l3} = {top}.view(-1, 1, 1), {left}.view(-1, 1, 1)\n"
            "{box} = ({yy} >= {t3}) & ({yy} < {t3} + {h}.view(-1, 1, 1)) & ({xx} >= {l3}) & "
            "({xx} < {l3} + {w}.view(-1, 1, 1))"))
        parts.append(_apply(a))
    elif style == "loop":
        parts.append(a.pick("{mask} = torch.ones_like(x)",
                            "{mask} = torch.ones(B, 1, H, W, device=x.device, dtype=x.dtype)"))
        parts += [_loop(a, "{mask}", "{i}, :, "), a.pick("return x * {mask}", "return {mask} * x")]
    elif style == "clone":
        parts += [a.pick("{out} = x.clone()", "{out} = x.detach().clone() * 1.0", "{out} = torch.clone(x)"),
                  _loop(a, "{out}", "{i}, :, "), "return {out}"]
    else:
        loop = _loop(a, "{img}", ":, ")
        head, rest = loop.split("\n", 1)
        parts += ["{imgs} = []", head + "\n    {img} = x[{i}].clone()\n" + rest + "\n    {imgs}.append({img})",
                  a.pick("return torch.stack({imgs})", "return torch.stack({imgs}, dim=0)")]
    return a.fill("\n".join(parts))
