"""The grading seam: solution functions are pure math; a NaN is a clear error (never a zero); aux is not theirs."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from distill_helpers import StubUNet, sd_alphas_cumprod

from common.cli import UserError
from common.tweedie import add_noise
from distillation import dds, ism, pds, sdi, sds, vsd
from distillation.guidance import Guidance
from distillation.runner import Item, Run, RunConfig
from distillation.update import NonFiniteUpdate

A = sd_alphas_cumprod()
B, C, H = 2, 4, 4
REGION_IDS = {"sds.py": ["sds-loss"], "vsd.py": ["vsd-loss"], "pds.py": ["pds-loss"], "dds.py": ["dds-loss"],
              "ism.py": ["ism-loss"], "sdi.py": ["sdi-invert-noise", "sdi-refresh", "sdi-loss"]}


class NanUNet(StubUNet):
    """A UNet whose prediction is NaN everywhere (an fp16 overflow, a student's division by zero...)."""

    def forward(self, x, t, encoder_hidden_states):
        return SimpleNamespace(sample=torch.full_like(x, float("nan")))


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, src = torch.randn(B, C, H, H, generator=g), torch.randn(B, C, H, H, generator=g)
    emb, emb_tgt = torch.randn(2 * B, 3, 5, generator=g), torch.randn(2 * B, 3, 5, generator=g)
    return x, src, emb, emb_tgt


def call_loss(guidance, method, x, s=7.5):
    _, src, emb, emb_tgt = inputs()
    gens = [torch.Generator().manual_seed(i) for i in range(B)]
    if method in ("pds", "dds"):
        fn = guidance.get_pds_loss if method == "pds" else guidance.get_dds_loss
        return fn(src, x, emb, emb_tgt, s, generators=gens)
    if method == "sdi":
        return guidance.get_sdi_loss(x, emb, s, t=torch.tensor([700, 300]), inversion_n_steps=2, generators=gens)
    return getattr(guidance, f"get_{method}_loss")(x, emb, s, generators=gens)


@pytest.mark.parametrize("method", ["sds", "vsd", "sdi", "pds", "dds", "ism"])
def test_nan_unet_raises_a_clear_error_instead_of_zero_gradients(method):
    x = inputs()[0].requires_grad_(True)
    with pytest.raises(NonFiniteUpdate, match=rf"^the {method} .* became NaN or infinite \(t = \[") as err:
        call_loss(Guidance(NanUNet(C, H), None, A), method, x)
    assert "\n" not in str(err.value) and x.grad is None


def test_nan_guidance_scale_raises_and_the_runner_names_method_and_step(load_tiny_sd):
    with pytest.raises(NonFiniteUpdate, match="the sds gradient g became NaN"):
        call_loss(Guidance(StubUNet(C, H), None, A), "sds", inputs()[0].requires_grad_(True), s=float("nan"))
    cfg = RunConfig(loss_type="sds", items=[Item("a red circle")], steps=2, log_step=0, guidance_scale=float("nan"))
    with pytest.raises(UserError, match=r"the sds gradient g became NaN or infinite at step 0 \(t = \[\d+\]\); try"):
        Run(cfg, load_tiny_sd(), torch.device("cpu")).optimise(progress=False)


class NoState:
    """The guidance seen by a solution function: model calls work; reading or writing state (aux...) fails."""

    def __init__(self, guidance):
        object.__setattr__(self, "_guidance", guidance)

    def __getattr__(self, name):
        if name in ("aux", "sdi_target"):
            raise AssertionError(f"a solution function read guidance.{name}")
        return getattr(self._guidance, name)

    def __setattr__(self, name, value):
        raise AssertionError(f"a solution function set guidance.{name}")


def test_solution_functions_touch_no_state_and_their_wrappers_fill_aux():
    x, src, emb, emb_tgt = inputs()
    unet = StubUNet(C, H)
    guidance = Guidance(unet, None, A)
    free = NoState(guidance)
    t, noise, noise2 = torch.tensor([123, 800]), torch.randn(B, C, H, H), torch.randn(B, C, H, H)
    g_sds = sds.sds_gradient(free, x, emb, 7.5, 1.0, t, noise)[0]
    g_vsd = vsd.vsd_terms(free, x, emb, 7.5, t, noise, t, noise2)[0]
    unet.disable_adapters()  # VSD leaves the adapters on; every other method sees the pretrained model
    g_pds = pds.pds_gradient(free, src, x, emb, emb_tgt, 7.5, 1.0, t, noise, noise2, 2, guidance.beta(t))[0]
    g_dds = dds.dds_gradient(free, src, x, emb, emb_tgt, 7.5, t, noise)[0]
    g_ism = ism.ism_gradient(free, x, emb, 7.5, t, noise, 80, 200, ism.inversion_start(t, 80, 200, 5), emb[:B])[0]
    target = sdi.sdi_target(free, x, t, emb, 7.5, -7.5, 0.0, [None, None])
    for name, g, loss_fn in [
        ("sds", g_sds, lambda v: guidance.get_sds_loss(v, emb, 7.5, t=t, noise=noise)),
        ("vsd", g_vsd, lambda v: guidance.get_vsd_loss(v, emb, 7.5, t=t, noise=noise, t_lora=t, noise_lora=noise2)),
        ("pds", g_pds, lambda v: guidance.get_pds_loss(src, v, emb, emb_tgt, 7.5, t=t, noise_t=noise,
                                                       noise_prev=noise2)),
        ("dds", g_dds, lambda v: guidance.get_dds_loss(src, v, emb, emb_tgt, 7.5, t=t, noise=noise)),
        ("ism", g_ism, lambda v: guidance.get_ism_loss(v, emb, 7.5, t=t, noise=noise)),
        ("sdi", x - target, lambda v: guidance.get_sdi_loss(v, emb, 7.5, t=t, inversion_n_steps=2,
                                                           inversion_eta=0.0)),
    ]:
        guidance.aux, guidance.sdi_target = {}, None
        unet.disable_adapters()
        v = x.clone().requires_grad_(True)
        loss_fn(v).backward()
        torch.testing.assert_close(v.grad, g, rtol=1e-5, atol=1e-5, msg=name)
        assert set(guidance.aux) >= {"x0_hat", "g", "t"} and guidance.aux["x0_hat"].shape == x.shape, name
        torch.testing.assert_close(guidance.aux["g"], g, rtol=1e-5, atol=1e-5, msg=name)


def test_sdi_loss_refreshes_at_step_zero_and_every_interval_only():
    x = inputs()[0]
    calls = []

    def refresh():
        calls.append(1)
        return torch.full_like(x, float(len(calls)))

    target = None
    for step in range(7):
        loss, target = sdi.sdi_loss(x, target, step, 3, refresh)
        torch.testing.assert_close(loss, 0.5 * ((x - target) ** 2).sum())
    assert len(calls) == 3 and float(target[0, 0, 0, 0]) == 3.0  # steps 0, 3, 6


def test_a_student_region_without_bookkeeping_runs_and_logs(tmp_path, monkeypatch, load_tiny_sd):
    """A student's SDS that is only the math (no aux, no NaN handling) drives a full run with progress previews;
    a loss that never fills aux at all does not KeyError in the runner either."""

    def student_sds(guidance, x, text_embeddings, guidance_scale, grad_scale, t, noise):
        x_t = add_noise(x, noise, guidance.alpha_bar(t))
        eps_hat = guidance.predict_eps(x_t, t, text_embeddings, guidance_scale)
        return grad_scale * guidance.weight(t).view(-1, 1, 1, 1) * (eps_hat - noise), x_t, eps_hat

    monkeypatch.setattr(sds, "sds_gradient", student_sds)
    cfg = RunConfig(loss_type="sds", items=[Item("a red circle")], steps=2, log_step=1, warmup_steps=0,
                    save_dir=str(tmp_path / "a"))
    job = Run(cfg, load_tiny_sd(), torch.device("cpu"))
    job.optimise(progress=False)
    assert set(job.guidance.aux) == {"x0_hat", "g", "t"}

    monkeypatch.setattr(Guidance, "get_sds_loss", lambda self, latents, *a, **k: (latents ** 2).sum())
    cfg.save_dir = str(tmp_path / "b")
    job = Run(cfg, load_tiny_sd(), torch.device("cpu"))
    job.optimise(progress=False)
    assert job.guidance.aux == {} and len(list(Path(cfg.save_dir, "progress").rglob("step_*.png"))) == 2


def test_one_region_per_id_with_a_todo_line_and_no_nan_to_num():
    root = Path(__file__).resolve().parents[2] / "distillation"
    found = {}
    for path in sorted(root.glob("*.py")):
        lines = path.read_text().splitlines()
        assert "nan_to_num" not in path.read_text(), f"{path.name}: nan_to_num hides a NaN"
        for i, line in enumerate(lines):
            if line.strip().startswith("# BEGIN SOLUTION"):
                found.setdefault(path.name, []).append(line.split()[-1])
                todo = lines[i - 1].strip()
                assert todo.startswith("# TODO: ") and len(todo) - len("# TODO: ") <= 100, (path.name, i)
    assert found == REGION_IDS


def test_vsd_lora_loss_written_inline_without_autograd_is_a_clear_error(monkeypatch):
    """The VSD region runs without autograd; a LoRA loss not made by guidance.lora_loss would never train."""
    x, _, emb, _ = inputs()
    unet = StubUNet(C, H)
    guidance = Guidance(unet, None, A)
    guidance.lora_params = [unet.lora_shift.requires_grad_(True)]
    real = vsd.vsd_terms

    def inline_lora(guidance, x, text_embeddings, *args):
        g, _, x_t, eps_pre = real(guidance, x, text_embeddings, *args)
        return g, ((guidance.unet_eps(x_t, args[1], text_embeddings[B:]) - args[2]) ** 2).mean(), x_t, eps_pre

    monkeypatch.setattr(vsd, "vsd_terms", inline_lora)
    with pytest.raises(ValueError, match="LoRA loss has no gradient"):
        guidance.get_vsd_loss(x.requires_grad_(True), emb, 7.5)
