"""The grading seam of ``synchronization``: region ids, inline math equal to ``common``, and one-way imports."""

import ast
from pathlib import Path

import pytest
import torch

from common.tweedie import add_noise, eps_from_x0, x0_from_eps
from grading.markers import find_regions, strip
from synchronization.core import (
    NonFiniteSampleError,
    compute_prev_state,
    compute_tweedie,
    sample,
    schedule_from_config,
)
from synchronization.views import ViewMapping, get_view

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENTS = ("gan", "ddpm_ddim", "dps", "distillation", "synchronization")
REGIONS = {
    "synchronization/core.py": ["sync-tweedie", "sync-prev-state", "sync-one-step"],
    "synchronization/windows.py": ["wide-forward-mapping", "wide-inverse-mapping"],
    "synchronization/views.py": ["rotate-view", "rotate-inverse-view", "inner-rotation-index"],
}
FORBIDDEN_IN_REGIONS = ("common.", "x0_from_eps", "eps_from_x0", "add_noise", "nan_to_num", "randn", "rand(",
                        "generator", ".to(", ".float()", ".half()", "self.aux", "torch.no_grad", "inference_mode")


def _alpha_bars(n, g):
    """Scalar float, 0-d tensor and per-sample [N] alpha_bar values in (0, 1)."""
    per_sample = torch.rand(n, generator=g) * 0.98 + 0.01
    return [0.37, torch.tensor(0.9991), per_sample]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_inline_tweedie_and_prev_state_equal_common_tweedie(dtype):
    g = torch.Generator().manual_seed(0)
    for a_t in _alpha_bars(4, g):
        x_t = torch.randn(4, 3, 8, 8, generator=g).to(dtype)
        eps = torch.randn(4, 6, 8, 8, generator=g).to(dtype)  # IF-like: eps + variance channels
        ref_x0 = x0_from_eps(x_t.float(), eps[:, :3].float(), a_t).to(dtype)
        x0 = compute_tweedie(x_t, eps, a_t)
        assert x0.dtype == dtype and torch.equal(x0, ref_x0)
        for a_prev in _alpha_bars(4, g):
            ref = add_noise(x0.float(), eps_from_x0(x_t.float(), x0.float(), a_t), a_prev).to(dtype)
            out = compute_prev_state(x_t, x0, a_t, a_prev)
            assert out.dtype == dtype and torch.equal(out, ref)


def test_region_ids_hints_and_stubs():
    for rel, ids in REGIONS.items():
        text = (ROOT / rel).read_text()
        regions = find_regions(text, rel)
        assert [r.id for r in regions] == ids
        for r in regions:
            assert len(r.hint) <= 100, r.id
            assert not [w for w in FORBIDDEN_IN_REGIONS if w in r.body], f"{r.id} holds bookkeeping or common math"
            assert set(r.defines) <= set(r.hint.replace(",", " ").replace(":", " ").split()), (r.id, r.defines)
        stub = strip(text, rel)
        compile(stub, rel, "exec")  # the starter still imports
        assert stub.count("raise NotImplementedError(") == len(ids)


def _imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy imports in functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_common_imports_no_assignment_package():
    offenders = []
    for path in sorted((ROOT / "common").rglob("*.py")):
        for name in _imported_modules(path):
            if name.split(".")[0] in ASSIGNMENTS:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "; ".join(offenders)


def test_nan_from_a_step_is_one_clear_error():
    mapping = ViewMapping([get_view("identity")])

    def nan_eps(x, t):
        return torch.full_like(x, float("nan")) if t < 500 else torch.zeros_like(x)

    schedule = schedule_from_config({"num_train_timesteps": 1000, "set_alpha_to_one": False}, 4)
    with pytest.raises(NonFiniteSampleError) as info:
        sample(mapping, nan_eps, schedule, torch.randn(1, 3, 4, 4), "x0", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "NaN" in msg and "step 2" in msg and isinstance(info.value, ValueError)
