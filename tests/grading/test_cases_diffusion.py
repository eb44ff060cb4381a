"""grading.cases.ddpm / ddim / dps (umich-hw5-diffusion Tasks 1, 2, 4): the cases are deterministic per seed on the
reference; every catalogued mistake fails exactly its ``caught_by`` cases (on several seeds); a stubbed task fails
all of its own cases and no other task's; equivalent rewrites of the reference get full credit.

Every variant (reference, mistake, stub, rewrite) is a temporary tree (``common``, ``ddpm_ddim``, ``dps``) with its
region bodies grafted by ``grading.markers.graft``. ONE subprocess runs all of them (it puts each tree first on
``sys.path``, drops the previously imported packages, checks where they came from) and saves the outputs with
safetensors; torch is imported once.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import multitree
import pytest
import torch

from grading import markers
from grading.case import Case
from grading.compare import CaseResult, score_case

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "ddpm_ddim", "dps")
REGION_FILES = ("ddpm_ddim/schedulers.py", "dps/dps.py")
MODULES = {"task1-ddpm": "grading.cases.ddpm", "task2-ddim": "grading.cases.ddim", "task4-dps": "grading.cases.dps"}
SEEDS = (0, 1, 2)
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "models")  # common/toy/models: weights no case needs
CHECK = ("common.ddim", "ddpm_ddim.schedulers", "dps.dps")  # when imported, from the tree (the cases' from the repo)

def cases_of(module: str) -> tuple[Case, ...]:
    return importlib.import_module(module).CASES


def mistakes_of(module: str):
    return importlib.import_module(module).MISTAKES


def _reference_bodies() -> dict[str, str]:
    out = {}
    for rel in REGION_FILES:
        out.update(markers.reference_bodies((ROOT / rel).read_text(), rel))
    return out


def build_tree(dest: Path, bodies: dict[str, str]) -> Path:
    """The three packages under ``dest`` with ``bodies`` grafted (a region not in ``bodies`` gets its stub)."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=IGNORE)
    for rel in REGION_FILES:
        (dest / rel).write_text(markers.graft((ROOT / rel).read_text(), rel, bodies))
    return dest


def run_variants(variants: dict[str, tuple[dict[str, str], tuple[str, ...], tuple[int, ...]]], work: Path) -> dict:
    """name -> (bodies, case modules, seeds); returns name -> (outputs {(case, seed): {key: tensor}}, errors)."""
    jobs = []
    for k, (name, (bodies, modules, seeds)) in enumerate(variants.items()):
        tree = build_tree(work / f"tree{k}", bodies)
        jobs.append({"name": name, "tree": str(tree), "modules": list(modules), "seeds": list(seeds),
                     "check": list(CHECK)})
    proc, runs = multitree.run(jobs, work, drop=PACKAGES, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict = {job["name"]: ({}, {}) for job in jobs}
    for (name, seed), run in runs.items():
        assert run.files_ok, run.files
        outputs, errors = results[name]
        outputs.update({(case_id, seed): out for case_id, out in run.outputs.items()})
        errors.update({(case_id, seed): err for case_id, err in run.status.items() if err != "ok"})
    return results


def score(case: Case, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor] | None) -> CaseResult:
    """The grader's own scoring (``grading.compare.score_case``) of one case's outputs."""
    return score_case(case, expected, got, "ok" if got is not None else "no output")


def full(case: Case, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor] | None) -> bool:
    return score(case, expected, got).fraction >= 1.0


# ---------------------------------------------------------------------------------------------------------------
# Variants


def _equivalents() -> dict[str, dict[str, str]]:
    """Correct bodies written differently from the reference (each must earn full credit everywhere)."""
    return {
        "equiv-ddpm": {
            "ddpm-coefficients": (
                "        alpha_prod_t = self.alphas_cumprod[t]\n"
                "        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else 1.0\n"
                "        beta_prod_t = 1.0 - alpha_prod_t\n"
                "        beta_prod_t_prev = 1.0 - alpha_prod_t_prev\n"
                "        current_alpha_t = alpha_prod_t / alpha_prod_t_prev\n"
                "        current_beta_t = 1.0 - current_alpha_t\n"),
            "ddpm-x0": ("        pred_original_sample = (sample.float() - torch.sqrt(beta_prod_t)"
                        " * model_output.float()) / torch.sqrt(alpha_prod_t)\n"),
            "ddpm-mean": (
                "        pred_prev_sample = (alpha_prod_t_prev ** 0.5 * current_beta_t * pred_original_sample\n"
                "                            + current_alpha_t ** 0.5 * beta_prod_t_prev * x_t) / beta_prod_t\n"),
        },
        "equiv-ddpm-2": {
            "ddpm-coefficients": (
                "        alpha_prod_t, alpha_prod_t_prev = self.alphas_cumprod[t], self.one\n"
                "        if prev_t >= 0:\n"
                "            alpha_prod_t_prev = self.alphas_cumprod[prev_t]\n"
                "        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev\n"
                "        current_alpha_t = alpha_prod_t / alpha_prod_t_prev\n"
                "        current_beta_t = (alpha_prod_t_prev - alpha_prod_t) / alpha_prod_t_prev\n"),
            "ddpm-x0": ("        pred_original_sample = x_t / alpha_prod_t.sqrt()"
                        " - (beta_prod_t / alpha_prod_t).sqrt() * eps_hat\n"),
        },
        "equiv-ddim": {
            "ddim-x0": ("        beta_prod_t = 1.0 - alpha_prod_t\n"
                        "        pred_original_sample = (x_t - torch.sqrt(beta_prod_t) * eps_hat)"
                        " / torch.sqrt(alpha_prod_t)\n"),
            "ddim-prev-sample": (
                "        prev_sample = (torch.sqrt(alpha_prod_t_prev) * pred_original_sample\n"
                "                       + torch.sqrt(1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t) * eps_hat)\n"),
        },
        "equiv-dps-2": {
            "dps-update": (
                "    difference = measurement - operator(pred_original_sample)\n"
                "    norm = torch.norm(difference.reshape(difference.shape[0], -1), dim=-1)\n"
                "    norm_grad = torch.autograd.grad(norm.sum(), [sample], retain_graph=True)[0]\n"
                "    prev_sample = prev_sample.detach() - norm_grad * scale\n"),
        },
        "equiv-dps": {
            "dps-update": (
                "    norms = [torch.sqrt(((measurement[i] - operator.forward(pred_original_sample)[i]) ** 2).sum())\n"
                "             for i in range(sample.shape[0])]\n"
                "    norm = torch.stack(norms)\n"
                "    (norm_grad,) = torch.autograd.grad(norm, sample, grad_outputs=torch.ones_like(norm))\n"
                "    prev_sample = prev_sample - scale * norm_grad\n"),
        },
    }


def _tasks() -> dict[str, tuple[str, ...]]:
    from grading.homeworks.umich_hw5_diffusion import HOMEWORK

    return {t.id: t.regions for t in HOMEWORK.tasks if t.id in MODULES}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ref = _reference_bodies()
    every = tuple(MODULES.values())
    variants = {"reference": (ref, every, SEEDS), "reference-again": (ref, every, (0,))}
    for module in every:
        for m in mistakes_of(module):
            variants[f"mistake:{m.id}"] = ({**ref, m.region: m.body}, (module,), SEEDS)
    for task, regions in _tasks().items():
        variants[f"stub:{task}"] = ({k: v for k, v in ref.items() if k not in regions}, every, (0,))
        for region in regions:  # one region stubbed: step() raises, so every case of the task fails
            variants[f"stub:{region}"] = ({k: v for k, v in ref.items() if k != region}, (MODULES[task],), (0,))
    for name, bodies in _equivalents().items():
        variants[name] = ({**ref, **bodies}, every, SEEDS)
    return run_variants(variants, tmp_path_factory.mktemp("diffusion-cases"))


# ---------------------------------------------------------------------------------------------------------------
# Tests


def test_case_modules_are_well_formed():
    from grading.homeworks.umich_hw5_diffusion import HOMEWORK

    ids = set()
    for task, module in MODULES.items():
        cases = cases_of(module)
        assert abs(sum(c.points for c in cases) - HOMEWORK.task(task).points) < 1e-9
        assert 1 <= sum(c.visibility == "visible" for c in cases) <= 2
        assert all(c.title and c.feedback and c.visibility in ("visible", "after_published") for c in cases)
        ids |= {c.id for c in cases}
        for m in mistakes_of(module):
            assert m.region in HOMEWORK.task(task).regions and set(m.caught_by) <= {c.id for c in cases}, m.id
    assert len(ids) == sum(len(cases_of(m)) for m in MODULES.values())


def test_mistake_bodies_are_edits_of_the_current_reference():
    from grading.cases import ddim, ddpm, dps

    ref = _reference_bodies()
    templates = {"ddpm-coefficients": ddpm._COEFFS, "ddpm-mean": ddpm._MEAN, "ddim-x0": ddim._X0,
                 "ddim-prev-sample": ddim._PREV_BODY, "dps-update": dps._BODY}
    assert {k: ref[k] for k in templates} == templates  # the mistakes are edits of these copies
    for module in MODULES.values():
        for m in mistakes_of(module):
            assert m.body != ref[m.region] and m.body.startswith(" " * (8 if m.region != "dps-update" else 4)), m.id
            for rel in REGION_FILES:  # the grafted file parses
                text = (ROOT / rel).read_text()
                if m.region in markers.reference_bodies(text, rel):
                    compile(markers.graft(text, rel, {**ref, m.region: m.body}), rel, "exec")


def test_reference_is_finite_deterministic_and_seeded(results):
    outputs, errors = results["reference"]
    again, _ = results["reference-again"]
    assert not errors, errors
    for module in MODULES.values():
        for case in cases_of(module):
            out0 = outputs[(case.id, 0)]
            assert all(v.dtype == torch.float64 and torch.isfinite(v).all() for v in out0.values()), case.id
            assert all(torch.equal(out0[k], again[(case.id, 0)][k]) for k in out0), f"{case.id} is not deterministic"
            out1 = outputs[(case.id, 1)]
            assert any(out0[k].shape != out1[k].shape or not torch.equal(out0[k], out1[k]) for k in out0), case.id


@pytest.mark.parametrize("module", list(MODULES.values()))
def test_each_mistake_fails_exactly_its_caught_by_cases(results, module):
    ref_out, _ = results["reference"]
    wrong = []
    for m in mistakes_of(module):
        got, _ = results[f"mistake:{m.id}"]
        for case in cases_of(module):
            for seed in SEEDS:
                result = score(case, ref_out[(case.id, seed)], got.get((case.id, seed)))
                if (result.fraction < 1.0) != (case.id in m.caught_by):
                    wrong.append(f"{m.id} on {case.id} seed {seed}: {result.message[:120]}")
    assert not wrong, "\n".join(wrong)


def test_a_stubbed_task_fails_all_its_cases_and_only_those(results):
    ref_out, _ = results["reference"]
    for task, regions in _tasks().items():
        for region in regions:
            _, errors = results[f"stub:{region}"]
            assert all(f"TODO {region}" in errors.get((c.id, 0), "") for c in cases_of(MODULES[task])), region
        got, errors = results[f"stub:{task}"]
        for module_task, module in MODULES.items():
            for case in cases_of(module):
                if module_task == task:
                    assert "NotImplementedError" in errors.get((case.id, 0), ""), (task, case.id)
                else:
                    expected, output = ref_out[(case.id, 0)], got.get((case.id, 0))
                    assert output is not None and all(torch.equal(expected[k], output[k]) for k in expected), \
                        (task, case.id)


@pytest.mark.parametrize("name", list(_equivalents()))
def test_equivalent_rewrites_get_full_credit(results, name):
    ref_out, _ = results["reference"]
    got, errors = results[name]
    assert not errors, errors
    bad = [f"{case.id} seed {seed}: {score(case, ref_out[(case.id, seed)], got[(case.id, seed)]).message[:120]}"
           for module in MODULES.values() for case in cases_of(module) for seed in SEEDS
           if not full(case, ref_out[(case.id, seed)], got[(case.id, seed)])]
    assert not bad, "\n".join(bad)
