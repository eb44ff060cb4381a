"""grading.scan: names resolved through the file's imports, forbidden calls and banned constructs of small bodies."""

import pytest

from grading.scan import BANNED, FORBIDDEN, SYNTAX, import_aliases, matches, scan_region

FILE = """\
from __future__ import annotations

import os
import torch
import torch.nn.functional as F
import common.tweedie as tw
import common.ddpm
from common import diffaugment as _reference
from common.r1 import r1_penalty
from common.ddim import ddim_step as step
from diffusers import DDIMScheduler


def f(x):
    from peft import LoraConfig
    return x
"""
FORBIDDEN_NAMES = ("common.r1.r1_penalty", "common.tweedie.add_noise", "common.ddim.ddim_step", "common.ddpm",
                   "common.diffaugment.*cutout*")


def kinds(body, forbidden=FORBIDDEN_NAMES, file_text=FILE):
    return [(f.kind, f.line) for f in scan_region(body, file_text, forbidden)]


def test_import_aliases_cover_every_import_form():
    aliases = import_aliases(FILE)
    assert aliases["tw"] == "common.tweedie" and aliases["F"] == "torch.nn.functional"
    assert aliases["common"] == "common" and aliases["torch"] == "torch"
    assert aliases["_reference"] == "common.diffaugment" and aliases["r1_penalty"] == "common.r1.r1_penalty"
    assert aliases["step"] == "common.ddim.ddim_step" and aliases["LoraConfig"] == "peft.LoraConfig"


def test_import_aliases_of_a_file_that_does_not_parse():
    broken = "import common.tweedie as tw\nfrom common.r1 import (\n    r1_penalty,\n)\ndef f(:\n"
    assert import_aliases(broken) == {"tw": "common.tweedie", "r1_penalty": "common.r1.r1_penalty"}


@pytest.mark.parametrize("dotted,pattern,expected", [
    ("common.ddpm.ddpm_step", "common.ddpm", True), ("common.ddpm", "common.ddpm", True),
    ("common.ddpmx.y", "common.ddpm", False), ("common.diffaugment.draw_cutout_random", "common.diffaugment.*cutout*",
                                               True), ("common.diffaugment.translate", "common.diffaugment.*cutout*",
                                                       False)])
def test_matches(dotted, pattern, expected):
    assert matches(dotted, pattern) is expected


@pytest.mark.parametrize("body", [
    "        penalty = r1_penalty(real_logits, real_img, gamma)\n",  # from-import
    "        x_t = tw.add_noise(x, noise, a)\n",  # import ... as
    "        x_prev, x0 = step(x, eps, a, b)\n",  # renamed from-import
    "        mu = common.ddpm.ddpm_posterior_mean(x, x0, a, b)\n",  # dotted module, prefix rule
    "        y = _reference.rand_cutout(x, generator)\n",  # module alias, fnmatch rule
    "        helper = r1_penalty\n        penalty = helper(d, x, 1.0)\n",  # a reference is enough
])
def test_forbidden_calls_are_resolved_through_the_files_imports(body):
    assert kinds(body) == [(FORBIDDEN, 1)]


def test_allowed_calls_and_plain_math_are_clean():
    body = ("        # a comment\n        logits = torch.cat([a, b])\n"
            "        return F.softplus(-logits) + _reference.translate(x, shift)\n")
    assert scan_region(body, FILE, FORBIDDEN_NAMES) == []
    assert scan_region("        penalty = r1_penalty(a, b, 1.0)\n", FILE, ()) == []  # not forbidden here


def test_diffusers_schedulers_are_always_flagged():
    flags = scan_region("        out = DDIMScheduler.from_config(cfg).step(eps, t, x)\n", FILE, ())
    assert [f.kind for f in flags] == [FORBIDDEN] and "diffusers" in flags[0].message


@pytest.mark.parametrize("body", [
    "        import subprocess\n",
    "        from os import system\n",
    "        y = eval('x + 1')\n",
    "        exec(code)\n",
    "        f = open('/etc/passwd').read()\n",
    "        m = __import__('socket')\n",
    "        g = globals()\n",
    "        v = getattr(x, name)\n",
    "        setattr(torch, 'allclose', fake)\n",
    "        breakpoint()\n",
    "        cls = x.__class__\n",
    "        g = f.__globals__\n",
    "        b = __builtins__\n",
    "        subs = ().__class__.__bases__[0].__subclasses__()\n",
    "        frame = err.tb_frame\n",
    "        os.system('rm -rf /')\n",
    "        torch.testing.assert_close = lambda *a, **k: None\n",
    "        global r1_penalty\n",
    "        w = torch.load(path)\n",
])
def test_banned_constructs(body):
    got = scan_region(body, FILE, FORBIDDEN_NAMES)
    assert got and all(f.kind == BANNED for f in got) and got[0].line == 1


def test_line_numbers_are_within_the_body_and_sorted():
    body = "        a = 1\n\n        b = eval(s)\n        c = r1_penalty(x, y, 1.0)\n"
    assert kinds(body) == [(BANNED, 3), (FORBIDDEN, 4)]


def test_syntax_error_is_one_flag():
    flags = scan_region("        y = (x +\n", FILE, FORBIDDEN_NAMES)
    assert [(f.kind, f.line) for f in flags] == [(SYNTAX, 1)] and "does not parse" in flags[0].message


def test_empty_body_and_odd_indentation():
    assert scan_region("", FILE) == [] and scan_region("        # only a comment\n", FILE) == []
    body = '        s = """\ncolumn zero text\n"""\n        return s\n'  # a string literal dedent cannot handle
    assert scan_region(body, FILE) == []
