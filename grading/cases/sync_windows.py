"""kaist-a5 Task 1 cases (joined in ``sync_wide``): wide-image maps, f crops every window, g pastes back and averages.

Handout Task 1 / MultiDiffusion (Bar-Tal et al. 2023, Eq. 3-5): ``forward_mapping`` crops each window of the
canonical latent [1, C, H, W] into [N, C, wh, ww]; ``inverse_mapping`` adds every window back into the canvas and
divides by the number of windows covering each pixel (the least-squares solution). Cases: one row and several rows
of windows, rectangular windows, a 360-degree (circular) canvas whose last windows wrap around the right edge,
float16, g(f(z)) = z, and the handout's SD latent panorama (4 x 64 x 384, 41 windows of 64 every 8 px).
"""

from __future__ import annotations

import torch

from grading.case import Case, Mistake
from grading.cases.sync_inputs import FP16_PARTIAL, Outputs, generator, output, randint, randn


def _geometry(name: str, g: torch.Generator) -> dict:
    """WindowMapping arguments of a named layout, sizes drawn from ``g``."""
    if name == "row":  # one row of 8 x 8 windows every 4 px
        return {"height": 8, "width": 8 + 4 * randint(g, 2, 5), "window": 8, "stride": 4}
    if name == "rows":  # several rows of 4 x 6 windows every 2 px
        return {"height": 4 + 2 * randint(g, 1, 3), "width": 6 + 2 * randint(g, 2, 4), "window": (4, 6), "stride": 2}
    if name == "circular":  # 360 degrees: windows start every 4 px across the full width, the last ones wrap
        return {"height": 8, "width": 4 * randint(g, 3, 6), "window": 8, "stride": 4, "circular": True}
    raise KeyError(name)


def _setup(case_id: str, seed: int, layout: str):
    from synchronization.windows import WindowMapping

    g = generator(seed, case_id)
    mapping = WindowMapping(**_geometry(layout, g))
    return g, mapping, randint(g, 2, 4)  # generator, mapping, channels C


def _forward(layout: str, dtype: torch.dtype = torch.float64):
    case_id = f"wide-f/{layout}"

    def run(seed: int) -> Outputs:
        g, mapping, c = _setup(case_id, seed, layout)
        z = randn(g, 1, c, mapping.height, mapping.width, dtype=dtype)  # canonical latent [1, C, H, W]
        return {"windows": output(mapping.forward_mapping(z))}  # [N, C, wh, ww]

    return run


def _inverse(case_id: str, layout: str, dtype: torch.dtype = torch.float64):
    def run(seed: int) -> Outputs:
        g, mapping, c = _setup(case_id, seed, layout)
        x = randn(g, len(mapping), c, *mapping.window, dtype=dtype)  # independent windows: overlaps disagree
        return {"canvas": output(mapping.inverse_mapping(x))}  # [1, C, H, W]

    return run


def _round_trip(seed: int) -> Outputs:
    out = {}
    for layout in ("rows", "circular"):
        g, mapping, c = _setup(f"wide-g/round-trip-{layout}", seed, layout)
        z = randn(g, 1, c, mapping.height, mapping.width)
        out[f"g_f_z_{layout}"] = output(mapping.inverse_mapping(mapping.forward_mapping(z)))  # = z
    return out


def _panorama(seed: int) -> Outputs:
    from synchronization.windows import WindowMapping

    g = generator(seed, "wide/sd-panorama")
    mapping = WindowMapping(64, 384, window=64, stride=8)  # the handout's SD 2 latent: 41 windows
    z, x = randn(g, 1, 4, 64, 384, dtype=torch.float32), randn(g, 41, 4, 64, 64, dtype=torch.float32)
    return {"windows": output(mapping.forward_mapping(z)), "canvas": output(mapping.inverse_mapping(x))}


_F = "forward_mapping crops every window: x[i] = z[..., top_i : top_i + wh, left_i : left_i + ww] (wrapping in x)"
_G = ("inverse_mapping adds every window into the canvas at its position and divides each pixel by the number of "
      "windows that cover it (the average, MultiDiffusion Eq. 5)")

CASES: tuple[Case, ...] = (
    Case("wide-f/row", 0.5, _forward("row"),
         title="Wide f: crops of one row of 8x8 windows (stride 4) vs reference",
         feedback=_F + "; windows in row-major order of their (top, left) starts, output [N, C, wh, ww]."),
    Case("wide-f/rows", 0.5, _forward("rows", torch.float32),
         title="Wide f: several rows of rectangular 4x6 windows (stride 2), float32",
         feedback=_F + "; with several rows of windows and rectangular windows (wh != ww)."),
    Case("wide-f/circular", 0.75, _forward("circular"),
         title="Wide f: 360-degree canvas, the last windows wrap around the right edge",
         feedback=_F + "; on a circular canvas a window past the right edge continues at column 0."),
    Case("wide-g/average-overlaps", 0.75, _inverse("wide-g/average-overlaps", "row"), visibility="visible",
         title="Wide g: independent windows pasted back and averaged where they overlap",
         feedback=_G + "; with windows that disagree, summing or dividing by N gives the wrong canvas."),
    Case("wide-g/circular-wrap", 0.75, _inverse("wide-g/circular-wrap", "circular"),
         title="Wide g: 360-degree canvas, wrapped windows land on the left columns",
         feedback=_G + "; on a circular canvas the part of a window past the right edge belongs at column 0."),
    Case("wide-g/rows-fp16", 0.5, _inverse("wide-g/rows-fp16", "rows", torch.float16), partial=FP16_PARTIAL,
         title="Wide g: several rows of rectangular windows, float16 input",
         feedback=_G + "; float16 windows are averaged (in float32) and returned as float16."),
    Case("wide-g/round-trip", 0.5, _round_trip,
         title="Wide g(f(z)) = z on several rows and on a circular canvas",
         feedback="cropping then pasting back and averaging must give the canvas back exactly: g(f(z)) = z."),
    Case("wide/sd-panorama", 0.25, _panorama,
         title="Wide f and g on the handout's SD latent panorama (4 x 64 x 384, 41 windows of 64, stride 8)",
         feedback=_F + "; " + _G + "."),
)

_REF_HEAD = (
    "        c = x.shape[1]\n"
    "        values = x.permute(1, 0, 2, 3).reshape(c, -1)\n"
    "        total = torch.zeros(c, self.height * self.width, device=x.device, dtype=x.dtype)\n"
    "        total = total.index_add_(1, index.flatten(), values)\n"
)
_G_ALL = ("wide-g/average-overlaps", "wide-g/circular-wrap", "wide-g/rows-fp16", "wide/sd-panorama")

MISTAKES: tuple[Mistake, ...] = (
    Mistake("inverse-sum", "wide-inverse-mapping",
            _REF_HEAD + "        z = total.view(1, c, self.height, self.width)\n",
            "inverse_mapping sums the overlapping windows instead of averaging them (divide by the count)",
            (*_G_ALL, "wide-g/round-trip")),
    Mistake("inverse-divide-by-n", "wide-inverse-mapping",
            _REF_HEAD + "        z = (total / len(self.views)).view(1, c, self.height, self.width)\n",
            "inverse_mapping divides by the number of windows N instead of the number covering each pixel",
            (*_G_ALL, "wide-g/round-trip")),
    Mistake("inverse-no-wrap", "wide-inverse-mapping",
            "        c = x.shape[1]\n"
            "        wh, ww = self.window\n"
            "        total = torch.zeros(1, c, self.height, self.width, device=x.device, dtype=x.dtype)\n"
            "        hits = torch.zeros(1, 1, self.height, self.width, device=x.device, dtype=x.dtype)\n"
            "        for i, (h0, w0) in enumerate(self.views):\n"
            "            w1 = min(w0 + ww, self.width)  # clipped at the right edge\n"
            "            total[..., h0:h0 + wh, w0:w1] += x[i:i + 1, :, :, : w1 - w0]\n"
            "            hits[..., h0:h0 + wh, w0:w1] += 1\n"
            "        z = total / hits.clamp(min=1)\n",
            "inverse_mapping ignores the circular wrap: the part of a window past the right edge is dropped instead "
            "of pasted at column 0", ("wide-g/circular-wrap",)),
    Mistake("forward-no-permute", "wide-forward-mapping",
            "        crops = z[0].flatten(1)[:, index]\n"
            "        return crops.reshape(len(self.views), z.shape[1], *self.window)\n",
            "forward_mapping reshapes the gathered [C, N, wh*ww] values to [N, C, ...] without moving the window "
            "axis first (permute), which mixes windows and channels",
            ("wide-f/row", "wide-f/rows", "wide-f/circular", "wide-g/round-trip", "wide/sd-panorama")),
)
