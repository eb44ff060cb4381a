"""Distillation autograder cases (grading/cases/{sds,vsd,sdi,pds}.py): reference determinism, the mistake catalogue,
stubs, and answers that differ from the reference in form but not in math.

Every case runs in ONE subprocess over graded trees built like the grader's (``grading.workspace.build_tree``: the
homework's own regions get the given bodies, every other region its stub; after a homework's first tree the others
link its packages and graft only ``distillation``), with the tree first on ``sys.path`` (checked through
``__file__``); the outputs come back as safetensors and are scored here with ``grading.compare.score_case``.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import multitree
import pytest
import torch

from grading import markers, workspace
from grading.compare import score_case
from grading.homeworks.kaist_a4 import HOMEWORK as KAIST
from grading.homeworks.nycu_lab3 import HOMEWORK as NYCU
from grading.homeworks.umich_hw5_diffusion import HOMEWORK as UMICH

# case module -> (the homework whose tree it runs on here, that homework's task)
MODULES = {"grading.cases.sds": (NYCU, "task1-sds"), "grading.cases.vsd": (NYCU, "task2-vsd"),
           "grading.cases.sdi": (NYCU, "task3-sdi"), "grading.cases.pds": (KAIST, "task2-pds")}
# the other homeworks that grade a task with the same case module
ALSO = {"grading.cases.sds": ((KAIST, "task1-sds"), (UMICH, "task6-sds")),
        "grading.cases.vsd": ((KAIST, "task3-vsd"), (UMICH, "task7-vsd"))}
SEEDS = (0, 1)
SDI_STUBS = {"sdi-invert-noise": "sdi/invert-", "sdi-refresh": "sdi/target-", "sdi-loss": "sdi/loss-"}
# besides a job's case modules, the modules whose files (when imported) must come from the tree under test
CHECK = ("distillation.sds", "distillation.sdi", "common.ddim", "grading.cases._tiny_sd")

CASES = {m: {c.id: c for c in importlib.import_module(m).CASES} for m in MODULES}
MISTAKES = {k.id: (m, k) for m in MODULES for k in importlib.import_module(m).MISTAKES}

# Right answers written differently from the reference (inline math, separate UNet calls, other order): they must
# pass every case of their module.
EQUIVALENT = {
    "sds-inline": ("grading.cases.sds", "sds-loss", """\
    a = guidance.alpha_bar(t).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    B = x.shape[0]
    eps_uncond = guidance.unet_eps(x_t, t, text_embeddings[:B])
    eps_cond = guidance.unet_eps(x_t, t, text_embeddings[B:])
    eps_hat = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    g = grad_scale * (1 - a) * (eps_hat - noise)
"""),
    "pds-official-loop": ("grading.cases.pds", "pds-loss", """\
    t_prev = t - t_delta
    beta = beta_t.view(-1, 1, 1, 1)  # the official compute_posterior_mean, one branch at a time
    alpha = 1 - beta
    a_t = guidance.alpha_bar(t).view(-1, 1, 1, 1)
    a_prev = guidance.alpha_bar(t_prev).view(-1, 1, 1, 1)
    sigma = ((1 - a_prev) / (1 - a_t) * beta) ** 0.5
    z, x0_hats = [], []
    for x0, emb in ((x_src, src_text_embedding), (x_tgt, tgt_text_embedding)):
        x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise_t
        x_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * noise_prev
        eps_hat = guidance.predict_eps(x_t, t, emb, guidance_scale)
        x0_hat = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
        mu = a_prev.sqrt() * beta / (1 - a_t) * x0_hat + alpha.sqrt() * (1 - a_prev) / (1 - a_t) * x_t
        z.append((x_prev - mu) / sigma)
        x0_hats.append(x0_hat)
    x0_hat = torch.cat(x0_hats)
    g = grad_scale * (z[1] - z[0])
"""),
    "pds-posterior-coefficients": ("grading.cases.pds", "pds-loss", """\
    B = x_src.shape[0]
    a_t = guidance.alpha_bar(t).view(-1, 1, 1, 1)
    a_prev = guidance.alpha_bar(t - t_delta).view(-1, 1, 1, 1)
    beta = beta_t.view(-1, 1, 1, 1)
    c0 = a_prev.sqrt() * beta / (1 - a_t)  # Ho et al. Eq. 7 with the one-step beta_t
    c1 = (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)
    sigma_t = ((1 - a_prev) / (1 - a_t) * beta).sqrt()
    x = torch.cat([x_src, x_tgt])
    a2, p2, c0, c1, sigma_t = (torch.cat([v, v]) for v in (a_t, a_prev, c0, c1, sigma_t))
    x_t = a2.sqrt() * x + (1 - a2).sqrt() * torch.cat([noise_t, noise_t])
    x_prev = p2.sqrt() * x + (1 - p2).sqrt() * torch.cat([noise_prev, noise_prev])
    eps_hat = guidance.predict_eps(x_t, torch.cat([t, t]), pair_embeddings(src_text_embedding, tgt_text_embedding),
                                   guidance_scale)
    x0_hat = (x_t - (1 - a2).sqrt() * eps_hat) / a2.sqrt()
    z = (x_prev - (c0 * x0_hat + c1 * x_t)) / sigma_t
    g = grad_scale * (z[B:] - z[:B])
"""),
    "vsd-lora-first": ("grading.cases.vsd", "vsd-loss", """\
    uncond, cond = text_embeddings.chunk(2)
    a = guidance.alpha_bar(t).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    guidance.unet.enable_adapters()
    eps_lora = guidance.unet(x_t, t, encoder_hidden_states=cond).sample
    guidance.unet.disable_adapters()
    eps_u, eps_c = guidance.unet_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), text_embeddings).chunk(2)
    eps_pre = eps_u + guidance_scale * (eps_c - eps_u)
    g = (1 - a) * (eps_pre - eps_lora)
    a_lora = guidance.alpha_bar(t_lora).view(-1, 1, 1, 1)
    loss_lora = guidance.lora_loss(a_lora.sqrt() * x + (1 - a_lora).sqrt() * noise_lora, t_lora, noise_lora, cond)
"""),
    "sdi-invert-inline": ("grading.cases.sdi", "sdi-invert-noise", """\
    n = len(noises)
    x = x0
    for k in range(n):
        tau, tau_next = (k * t / n).round().long(), ((k + 1) * t / n).round().long()
        eps_hat = guidance.predict_eps(x, tau, text_embeddings, guidance_scale)
        x = step(x, eps_hat, guidance.alpha_bar(tau), guidance.alpha_bar(tau_next), eta=eta, noise=noises[k])
    return x
"""),
    "sdi-invert-double-grid": ("grading.cases.sdi", "sdi-invert-noise", """\
    n_steps = len(noises)
    x = x0
    for k in range(n_steps):
        tau = torch.round(k * t.double() / n_steps).long()
        tau_next = torch.round((k + 1) * t.double() / n_steps).long()
        a = guidance.alpha_bar(tau)
        a_next = guidance.alpha_bar(tau_next)
        eps_hat = guidance.predict_eps(x, tau, text_embeddings, guidance_scale)
        x = step(x, eps_hat, a, a_next, eta, noises[k] if eta > 0 else None)
    return x
"""),
    "sdi-target-inline": ("grading.cases.sdi", "sdi-refresh", """\
    x_t = ddim_invert(guidance, x0, t, text_embeddings, inversion_guidance_scale, inversion_eta, noises, step=step)
    a = guidance.alpha_bar(t).view(-1, 1, 1, 1)
    eps_u, eps_c = guidance.unet_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), text_embeddings).chunk(2)
    eps_hat = eps_u + guidance_scale * (eps_c - eps_u)
    return (x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()
"""),
    "sdi-loss-mse-sum": ("grading.cases.sdi", "sdi-loss", """\
    if step % update_interval == 0 or target is None:
        target = refresh()
    loss = 0.5 * torch.nn.functional.mse_loss(latents, target, reduction="sum")
"""),
}

def _task(module: str):
    hw, task_id = MODULES[module]
    return hw, hw.task(task_id)


def _trees() -> dict[str, tuple]:
    """tree name -> (homework, region bodies, seeds, case modules run on it)."""
    trees = {}
    for module in MODULES:
        hw, task = _task(module)
        ref = workspace.reference_bodies(hw)
        short = module.rsplit(".", 1)[-1]
        trees[f"{short}-reference"] = (hw, ref, SEEDS, (module,))
        trees[f"{short}-stub"] = (hw, {k: v for k, v in ref.items() if k not in task.regions}, SEEDS[:1], (module,))
    for hw in (KAIST, UMICH):
        trees[f"{hw.id}-reference"] = (hw, workspace.reference_bodies(hw), SEEDS[:1], tuple(ALSO))
    nycu = workspace.reference_bodies(NYCU)
    for region in SDI_STUBS:
        trees[f"sdi-stub-{region}"] = (NYCU, {k: v for k, v in nycu.items() if k != region}, SEEDS[:1],
                                       ("grading.cases.sdi",))
    for mid, (module, mistake) in MISTAKES.items():
        hw, _ = _task(module)
        trees[f"mistake-{mid}"] = (hw, {**workspace.reference_bodies(hw), mistake.region: mistake.body}, SEEDS,
                                   (module,))
    for name, (module, region, body) in EQUIVALENT.items():
        hw, _ = _task(module)
        trees[f"equivalent-{name}"] = (hw, {**workspace.reference_bodies(hw), region: body}, SEEDS, (module,))
    return trees


def _build(hw, dest: Path, bodies: dict[str, str], built: dict[str, Path]) -> Path:
    """``workspace.build_tree(hw, dest, bodies)``; after the homework's first tree, a cheaper equal one: its own
    grafted ``distillation`` and links to that first tree's other packages (all but ``distillation`` are the same)."""
    base = built.get(hw.id)
    if base is None or hw.strip_functions:
        built.setdefault(hw.id, dest)
        return workspace.build_tree(hw, dest, bodies)
    dest.mkdir(parents=True)
    for entry in base.iterdir():
        if entry.name != "distillation":
            (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    shutil.copytree(base / "distillation", dest / "distillation")
    for rel, text in workspace.region_files(hw).items():
        if rel.startswith("distillation/"):
            ids = {r.id for r in markers.find_regions(text, rel)}
            (dest / rel).write_text(markers.graft(text, rel, {k: v for k, v in bodies.items() if k in ids}))
    return dest


def _load(run: str, result: multitree.Run) -> tuple[dict, dict]:
    return result.checked(run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """'<tree>-<seed>' -> (outputs, status) for every reference, stub, mistake and equivalent tree."""
    work = tmp_path_factory.mktemp("distillation-cases")
    jobs, built = [], {}
    for name, (hw, bodies, seeds, modules) in _trees().items():
        tree = _build(hw, work / "trees" / name, bodies, built)
        jobs.append({"name": name, "tree": str(tree), "seeds": list(seeds), "modules": list(modules),
                     "check": [*CHECK, *modules]})
    for module in MODULES:  # the references again, last, after every other tree ran in the same process
        short = module.rsplit(".", 1)[-1]
        jobs.append({"name": f"{short}-reference-again", "tree": str(work / "trees" / f"{short}-reference"),
                     "seeds": [SEEDS[0]], "modules": [module], "check": [*CHECK, module]})
    proc, results = multitree.run(jobs, work, drop=("distillation", "common", "grading"), deterministic=True,
                                  timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seconds = {f"{name}-{seed}": max(r.seconds.values()) for (name, seed), r in results.items()}
    assert max(seconds.values()) < 2, seconds  # each case well under a few seconds on one thread
    return {f"{name}-{seed}": _load(f"{name}-{seed}", r) for (name, seed), r in results.items()}


def _failing(runs: dict, module: str, tree: str, seed: int) -> set[str]:
    """Ids of the module's cases whose outputs on ``tree`` do not get full credit against its reference."""
    short = module.rsplit(".", 1)[-1]
    expected, _ = runs[f"{short}-reference-{seed}"]
    got, status = runs[f"{tree}-{seed}"]
    return {cid for cid, case in CASES[module].items()
            if score_case(case, expected[cid], got.get(cid), status.get(cid, "no output")).fraction < 1.0}


def test_catalogue_is_consistent_with_the_specs():
    for module in MODULES:
        mod = importlib.import_module(module)
        ids = [c.id for c in mod.CASES]
        assert len(ids) == len(set(ids)) and all(i.startswith(module.rsplit(".", 1)[-1] + "/") for i in ids)
        for hw, task_id in (MODULES[module], *ALSO.get(module, ())):
            task = hw.task(task_id)
            assert module in task.cases, f"{hw.id} {task_id} should name {module}"
            assert {m.region for m in mod.MISTAKES} <= set(task.regions)
        visible = [c for c in mod.CASES if c.visibility == "visible"]
        assert 1 <= len(visible) <= 2, module
        assert all(c.points > 0 and c.title and c.feedback and c.visibility in ("visible", "after_published")
                   for c in mod.CASES), module
        for mistake in mod.MISTAKES:
            assert mistake.feedback and mistake.caught_by and set(mistake.caught_by) <= set(ids), mistake.id
    assert len(MISTAKES) == sum(len(importlib.import_module(m).MISTAKES) for m in MODULES)  # ids unique


def test_mistake_and_equivalent_bodies_graft_and_parse():
    files = workspace.region_files(NYCU) | workspace.region_files(KAIST)
    bodies = [(m.region, m.body) for _, m in MISTAKES.values()] + [(r, b) for _, r, b in EQUIVALENT.values()]
    for region, body in bodies:
        rel = next(r for r, text in files.items() if region in markers.reference_bodies(text, r))
        compile(markers.graft(files[rel], rel, {**markers.reference_bodies(files[rel], rel), region: body}), rel,
                "exec")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_reference_is_finite_deterministic_and_seeded(runs, module):
    short = module.rsplit(".", 1)[-1]
    first, status = runs[f"{short}-reference-0"]
    again, status_again = runs[f"{short}-reference-again-0"]
    other, _ = runs[f"{short}-reference-1"]
    assert set(status.values()) == {"ok"} and set(status_again.values()) == {"ok"}, status
    assert set(first) == set(CASES[module])
    for cid, outputs in first.items():
        assert outputs and all(v.dtype == torch.float64 and torch.isfinite(v).all() for v in outputs.values()), cid
        assert outputs.keys() == again[cid].keys()
        assert all(torch.equal(v, again[cid][k]) for k, v in outputs.items()), f"{cid}: not bitwise reproducible"
        assert any(v.shape != other[cid][k].shape or not torch.equal(v, other[cid][k])
                   for k, v in outputs.items()), f"{cid}: seed 1 gives the same outputs as seed 0"


@pytest.mark.parametrize("hw_id", [KAIST.id, UMICH.id])
def test_cases_pass_the_same_on_the_other_homeworks_trees(runs, hw_id):
    """SDS and VSD cases on KAIST A4's and UMich HW5's trees (SDI's regions stubbed there, other packages shipped)
    give NYCU's tree's outputs bit for bit."""
    got, status = runs[f"{hw_id}-reference-0"]
    for module in ALSO:
        short = module.rsplit(".", 1)[-1]
        expected, _ = runs[f"{short}-reference-0"]
        for cid in CASES[module]:
            assert status[cid] == "ok" and all(torch.equal(v, got[cid][k]) for k, v in expected[cid].items()), cid


def test_batch_outputs_equal_their_singles(runs):
    """Within float32 rounding: the toy UNet runs in float32, and a batch of 3 and a batch of 1 may take different
    CPU kernels (a clean-clone CI saw 4e-6 on a value of 0.13). A batch bug (a shared t, a batch mean) is off by
    far more; the grader's own band for these cases is Case's rtol 1e-4."""
    for module in ("grading.cases.sds", "grading.cases.vsd", "grading.cases.pds"):
        short = module.rsplit(".", 1)[-1]
        outputs, _ = runs[f"{short}-reference-0"]
        case = outputs[f"{short}/batch-vs-singles"]
        for b in range(3):
            torch.testing.assert_close(case[f"batch_{b}"], case[f"singles_{b}"], rtol=1e-4, atol=1e-5)


def test_reference_properties(runs):
    """What the edge cases pin down holds on the reference: no UNet gradient, SDI refresh steps."""
    sds_out, _ = runs["sds-reference-0"]
    raw = sds_out["sds/no-unet-backward"]
    assert float(raw["unet_grad_calls"]) == 0.0 and not bool(raw["unet_params_with_grad"].any())
    derive = CASES["grading.cases.sds"]["sds/no-unet-backward"].derive  # the verdict, taken here in the parent
    assert float(derive(raw)["unet_untouched"]) == 1.0
    touched = {**raw, "unet_params_with_grad": torch.ones_like(raw["unet_params_with_grad"])}
    assert float(derive(touched)["unet_untouched"]) == 0.0
    sdi_out, _ = runs["sdi-reference-0"]
    assert torch.nonzero(sdi_out["sdi/loss-schedule"]["refreshed"]).flatten().tolist() == [0, 25, 50]
    assert torch.nonzero(sdi_out["sdi/loss-interval"]["refreshed"]).flatten().tolist() == [0, 2, 9, 16]  # 5, 7, 14, 21


@pytest.mark.parametrize("mistake_id", sorted(MISTAKES))
def test_mistake_fails_exactly_its_cases(runs, mistake_id):
    module, mistake = MISTAKES[mistake_id]
    for seed in SEEDS:
        assert _failing(runs, module, f"mistake-{mistake_id}", seed) == set(mistake.caught_by), f"seed {seed}"


@pytest.mark.parametrize("name", sorted(EQUIVALENT))
def test_equivalent_answers_pass_every_case(runs, name):
    module = EQUIVALENT[name][0]
    for seed in SEEDS:
        assert _failing(runs, module, f"equivalent-{name}", seed) == set(), f"seed {seed}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_stub_fails_every_case_of_its_task(runs, module):
    short = module.rsplit(".", 1)[-1]
    assert _failing(runs, module, f"{short}-stub", 0) == set(CASES[module])
    _, status = runs[f"{short}-stub-0"]
    assert all("NotImplementedError" in status[cid] for cid in CASES[module])


@pytest.mark.parametrize("region", sorted(SDI_STUBS))
def test_sdi_stub_of_one_region_fails_its_cases_and_the_end_to_end_one(runs, region):
    module = "grading.cases.sdi"
    expected = {cid for cid in CASES[module] if cid.startswith(SDI_STUBS[region])} | {"sdi/end-to-end"}
    assert _failing(runs, module, f"sdi-stub-{region}", 0) == expected
