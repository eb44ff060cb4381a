"""The distillation losses against the published reference code, written out here from the reference facts
(/work/shared/reference/distillation.md; docs/distillation.md has the analysis):

- PDS official (``KAIST-Visual-AI-Group/PDS`` ``compute_posterior_mean``): one-step beta_t = betas[t],
  alpha_t = 1 - beta_t, alpha_bar_{t-2}, sigma_t = sqrt((1 - alpha_bar_{t-2}) / (1 - alpha_bar_t) beta_t);
  ``posterior="exact"`` is k(t) times DDS; the official one adds psi(t) (x_tgt - x_src).
- SDI (threestudio ``ddim_inversion_step``, the authors'): sqrt(1 - a_next) eps_hat + eta sqrt(var) z.
- ISM: the 2d-sds and LucidDreamer inversion grids, the empty-prompt inversion, the UNet call count.
"""

import pytest
import torch
from distill_helpers import StubUNet, sd_alphas_cumprod

from common.ddim import ddim_inversion_step
from distillation.guidance import Guidance
from distillation.ism import inversion_start
from distillation.sdi import ddim_invert, inversion_step_of

A = sd_alphas_cumprod()
C, H = 4, 4


def bc(v):
    return v.view(-1, 1, 1, 1)


def grad_of(loss_fn, x):
    x = x.clone().requires_grad_(True)
    loss_fn(x).backward()
    return x.grad


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def tiny(load_tiny_sd):
    """(pipe, guidance, latents generator): the tiny random SD of tests/conftest.py."""
    pipe = load_tiny_sd()
    return pipe, Guidance.from_pipeline(pipe), torch.Generator().manual_seed(0)


def tiny_inputs(pipe, g, batch):
    shape = (batch, 4, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    x_src = torch.randn(shape, generator=g)
    x_tgt = x_src + 2.0 * torch.randn(shape, generator=g)  # an edit well above float32 round-off in z_tgt - z_src
    e_src, e_tgt = torch.randn(2 * batch, 5, 16, generator=g), torch.randn(2 * batch, 5, 16, generator=g)
    e_tgt[:batch] = e_src[:batch]  # same uncond, edited cond
    return x_src, x_tgt, e_src, e_tgt, torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def official_pds(pipe, x_src, x_tgt, e_src, e_tgt, s, t, noise, noise_t_prev, t_prev):
    """The PDS code's grad = z_tgt - z_src, from diffusers' own schedule arrays and UNet calls."""
    sched = pipe.scheduler
    beta_t, alpha_t = bc(sched.betas[t]), bc(sched.alphas[t])
    alpha_bar_t, alpha_bar_t_prev = bc(sched.alphas_cumprod[t]), bc(sched.alphas_cumprod[t_prev])
    sigma_t = ((1 - alpha_bar_t_prev) / (1 - alpha_bar_t) * beta_t) ** 0.5
    zts = []
    for latent, emb in ((x_src, e_src), (x_tgt, e_tgt)):
        latents_noisy = alpha_bar_t.sqrt() * latent + (1 - alpha_bar_t).sqrt() * noise
        pred = pipe.unet(torch.cat([latents_noisy] * 2), torch.cat([t, t]), encoder_hidden_states=emb).sample
        uncond, text = pred.chunk(2)
        noise_pred = uncond + s * (text - uncond)
        x_t_prev = alpha_bar_t_prev.sqrt() * latent + (1 - alpha_bar_t_prev).sqrt() * noise_t_prev
        pred_x0 = (latents_noisy - (1 - alpha_bar_t).sqrt() * noise_pred) / alpha_bar_t.sqrt()
        c0 = alpha_bar_t_prev.sqrt() * beta_t / (1 - alpha_bar_t)
        c1 = alpha_t.sqrt() * (1 - alpha_bar_t_prev) / (1 - alpha_bar_t)
        zts.append((x_t_prev - (c0 * pred_x0 + c1 * latents_noisy)) / sigma_t)
    return zts[1] - zts[0]


def psi_k(t, t_prev, official=True):
    """g = psi (x_tgt - x_src) + k (eps_tgt - eps_src) with shared noises (docs/distillation.md), float64."""
    a = A.double()
    betas = 1 - a / torch.cat([a.new_ones(1), a[:-1]])
    a_t, a_p = a[t], a[t_prev]
    beta = betas[t] if official else 1 - a_t / a_p
    c0, c1 = a_p.sqrt() * beta / (1 - a_t), (1 - beta).sqrt() * (1 - a_p) / (1 - a_t)
    sigma = ((1 - a_p) / (1 - a_t) * beta).sqrt()
    return (a_p.sqrt() - c0 - c1 * a_t.sqrt()) / sigma, c0 * ((1 - a_t) / a_t).sqrt() / sigma


def test_pds_default_is_the_official_code(tiny):
    pipe, guidance, g = tiny
    x_src, x_tgt, e_src, e_tgt, noise_t, noise_prev = tiny_inputs(pipe, g, 3)
    t = torch.tensor([21, 301, 601])
    grad = grad_of(lambda v: guidance.get_pds_loss(x_src, v, e_src, e_tgt, 7.5, t=t, noise_t=noise_t,
                                                   noise_prev=noise_prev), x_tgt)
    with torch.no_grad():
        expected = official_pds(pipe, x_src, x_tgt, e_src, e_tgt, 7.5, t, noise_t, noise_prev, t - 2)
    for b in range(3):
        assert rel(grad[b], expected[b]) < 1e-5, (int(t[b]), rel(grad[b], expected[b]))


def test_pds_exact_is_k_times_dds_and_official_adds_psi_times_the_edit(tiny):
    pipe, guidance, g = tiny
    x_src, x_tgt, e_src, e_tgt, noise_t, noise_prev = tiny_inputs(pipe, g, 3)
    t = torch.tensor([21, 301, 601])
    kw = dict(t=t, noise_t=noise_t, noise_prev=noise_prev)
    exact = grad_of(lambda v: guidance.get_pds_loss(x_src, v, e_src, e_tgt, 7.5, posterior="exact", **kw), x_tgt)
    official = grad_of(lambda v: guidance.get_pds_loss(x_src, v, e_src, e_tgt, 7.5, **kw), x_tgt)
    guidance.w_schedule = "constant"  # DDS with w = 1: eps_tgt - eps_src at the shared noise eps_t
    dds = grad_of(lambda v: guidance.get_dds_loss(x_src, v, e_src, e_tgt, 7.5, t=t, noise=noise_t), x_tgt)
    a_t, a_p = A.double()[t], A.double()[t - 2]
    k_exact = ((a_p - a_t) / (a_t * (1 - a_p))).sqrt()  # closed form of c0 sqrt((1 - a_t) / a_t) / sigma
    assert torch.allclose(k_exact, psi_k(t, t - 2, official=False)[1])
    assert rel(exact, bc(k_exact).float() * dds) < 1e-4
    psi, k = psi_k(t, t - 2)
    assert rel(official, bc(psi).float() * (x_tgt - x_src) + bc(k).float() * dds) < 1e-4
    # the source pull of issue #18 on SD's schedule: psi ~ 1.6, 0.08, 0.02; the exact posterior has none
    torch.testing.assert_close(psi.float(), torch.tensor([1.613, 0.0794, 0.0214]), rtol=2e-3, atol=0)
    assert psi_k(t, t - 2, official=False)[0].abs().max() < 1e-12


def test_unknown_options_are_refused_before_any_work():
    guidance, x = Guidance(StubUNet(C, H), None, A), torch.zeros(1, C, H, H)
    emb = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="PDS posterior 'ddim'"):
        guidance.get_pds_loss(x, x, emb, emb, posterior="ddim")
    with pytest.raises(ValueError, match="SDI inversion form 'exact'"):
        guidance.get_sdi_loss(x, emb, t=torch.tensor([500]), inversion_form="exact")
    with pytest.raises(ValueError, match="ISM grid 'lucid'"):
        guidance.get_ism_loss(x, emb, grid="lucid")


def authors_invert(pipe, x0, taus, emb, s, eta, noises):
    """threestudio's SDI invert_noise loop on our grid: sqrt(1 - a_next) eps + eta sqrt(_get_variance(next, t)) z."""
    sched, x = pipe.scheduler, x0
    for k in range(len(taus) - 1):
        t, next_t = taus[k], taus[k + 1]
        pred = pipe.unet(torch.cat([x, x]), torch.stack([t, t]), encoder_hidden_states=emb).sample
        uncond, cond = pred.chunk(2)
        eps = uncond + s * (cond - uncond)  # diffusers' CFG form (ours)
        a, a_next = sched.alphas_cumprod[t], sched.alphas_cumprod[next_t]
        pred_original_sample = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        x = a_next ** 0.5 * pred_original_sample + (1 - a_next) ** 0.5 * eps
        x = x + eta * noises[k] * sched._get_variance(next_t, t) ** 0.5
    return x


@pytest.mark.parametrize("form", ["authors", "ddim"])
def test_sdi_inversion_forms(tiny, form):
    """The default step is the authors' one; "ddim" takes sigma^2 out of the direction (common.ddim)."""
    pipe, guidance, g = tiny
    x0 = torch.randn(1, 4, 8, 8, generator=g)
    emb = torch.randn(2, 5, 16, generator=g)
    noises = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(3)]
    t = torch.tensor([900])
    taus = torch.tensor([0, 300, 600, 900])
    with torch.no_grad():
        got = ddim_invert(guidance, x0, t, emb, -7.5, 0.3, noises, inversion_step_of(form))
        authors = authors_invert(pipe, x0, taus, emb, -7.5, 0.3, noises)
        if form == "ddim":
            ours = x0
            for k in range(3):
                eps = guidance.predict_eps(ours, taus[k:k + 1], emb, -7.5)
                ours = ddim_inversion_step(ours, eps, A[taus[k]], A[taus[k + 1]], 0.3, noises[k])
            assert rel(got, ours) < 1e-5
            assert rel(got, authors) > 1e-3  # the forms differ at eta > 0
        else:
            assert rel(got, authors) < 1e-5
        if form == "authors":  # at eta = 0 both are plain DDIM inversion
            zero = [None] * 3
            torch.testing.assert_close(ddim_invert(guidance, x0, t, emb, -7.5, 0.0, zero),
                                       ddim_invert(guidance, x0, t, emb, -7.5, 0.0, zero, ddim_inversion_step))


class RecordingUNet(StubUNet):
    """The stub's closed form, recording (t, mean embedding, batch) of every call."""

    def __init__(self):
        super().__init__(C, H)
        self.calls = []

    def forward(self, x, t, encoder_hidden_states):
        self.calls.append((t.tolist(), encoder_hidden_states.float().mean(dim=(1, 2)).tolist(), x.shape[0]))
        return super().forward(x, t, encoder_hidden_states)


@pytest.mark.parametrize("grid, t, levels", [("2d-sds", 700, [20, 220, 420, 620]),
                                             ("luciddreamer", 700, [0, 200, 400, 600, 620]),
                                             ("luciddreamer", 980, [0, 200, 400, 600, 800, 900]),
                                             ("2d-sds", 150, [70])])
def test_ism_grids_and_empty_prompt_inversion(grid, t, levels):
    """2d-sds: noise at s - n delta_s, n = min(s // delta_s, 5); LucidDreamer: noise at max(s - 5 delta_s, 0), steps
    of delta_s, a partial last one to s. The inversion (every call but the last, CFG one) uses the given empty
    prompt, not the negative prompt; UNet calls per step = inversion steps + eps_s + one CFG call."""
    unet = RecordingUNet()
    guidance = Guidance(unet, None, A, w_schedule="lucid")
    x = torch.randn(1, C, H, H, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(1, C, H, H, generator=torch.Generator().manual_seed(5))
    emb = torch.cat([torch.full((1, 3, 5), 0.25), torch.ones(1, 3, 5)])  # [negative prompt, cond]
    empty = torch.full((1, 3, 5), -0.5)
    tt = torch.tensor([t])
    assert inversion_start(tt, 80, 200, 5, grid).item() == levels[0]
    grad = grad_of(lambda v: guidance.get_ism_loss(v, emb, 7.5, t=tt, noise=noise, grid=grid,
                                                   inversion_embeddings=empty), x)
    assert [c[0][0] for c in unet.calls[:-1]] == levels and unet.calls[-1][0] == [t, t]
    assert all(c[1] == [-0.5] and c[2] == 1 for c in unet.calls[:-1]) and unet.calls[-1][1] == [0.25, 1.0]
    assert len(unet.calls) == len(levels) + 1  # n inversion steps + eps_s (batch 1) + one CFG call (batch 2)
    # the gradient written out: DDIM inversion along the levels, then s -> t
    xb = A[levels[0]].sqrt() * x + (1 - A[levels[0]]).sqrt() * noise
    for tau, tau_next in zip(levels + [levels[-1]], levels[1:] + [t]):
        eps = StubUNet.closed_form(xb, torch.tensor([tau]), empty)
        x0 = (xb - (1 - A[tau]).sqrt() * eps) / A[tau].sqrt()
        xb = A[tau_next].sqrt() * x0 + (1 - A[tau_next]).sqrt() * eps
        if tau_next == t:
            break
    eps_u, eps_c = (StubUNet.closed_form(xb, tt, e) for e in (emb[:1], emb[1:]))
    expected = ((1 - A[t]) / A[t]).sqrt() * (eps_u + 7.5 * (eps_c - eps_u) - eps)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-4)


def test_ism_default_inversion_prompt_is_the_guidance_attribute_then_uncond():
    unet = RecordingUNet()
    guidance = Guidance(unet, None, A, w_schedule="lucid")
    x, emb = torch.zeros(2, C, H, H), torch.cat([torch.full((2, 3, 5), 0.25), torch.ones(2, 3, 5)])
    guidance.get_ism_loss(x, emb, t=torch.tensor([500, 500]))
    assert unet.calls[0][1] == [0.25, 0.25]  # no empty prompt given: the uncond half (the old behaviour)
    unet.calls.clear()
    guidance.inversion_embeddings = torch.full((1, 3, 5), -0.5)  # set once by the caller, repeated over B
    guidance.get_ism_loss(x, emb, t=torch.tensor([500, 500]))
    assert unet.calls[0][1] == [-0.5, -0.5] and unet.calls[-1][1] == [0.25, 0.25, 1.0, 1.0]
    with pytest.raises(ValueError, match="inversion embeddings of shape"):
        guidance.get_ism_loss(x, emb, inversion_embeddings=torch.zeros(3, 3, 5))


def test_a_batched_ism_chain_runs_only_the_rows_still_inverting_and_equals_each_single_run():
    """Per-sample chain lengths (2d-sds: n = min(s // 200, 5) = 0, 3, 4 for t = 150, 700, 980): inversion step k
    calls the UNet on the rows with n > k only (2, 2, 2, 1 rows), then eps_s on all 3 and one CFG call on 6; the
    gradient of each row equals its own batch-1 run."""
    t = torch.tensor([150, 700, 980])
    gen = torch.Generator().manual_seed(6)
    x, noise = torch.randn(3, C, H, H, generator=gen), torch.randn(3, C, H, H, generator=gen)
    emb = torch.cat([torch.full((3, 3, 5), 0.25), torch.ones(3, 3, 5)])
    unet = RecordingUNet()
    guidance = Guidance(unet, None, A, w_schedule="lucid")
    grad = grad_of(lambda v: guidance.get_ism_loss(v, emb, 7.5, t=t, noise=noise), x)
    assert [c[2] for c in unet.calls] == [2, 2, 2, 1, 3, 6]
    assert unet.calls[0][0] == [20, 100] and unet.calls[3][0] == [700]  # rows 1 and 2 at their own levels
    for b in range(3):
        row = slice(b, b + 1)
        single = grad_of(lambda v, e=emb[[b, 3 + b]], r=row: guidance.get_ism_loss(v, e, 7.5, t=t[r], noise=noise[r]),
                         x[row])
        torch.testing.assert_close(grad[row], single, rtol=1e-5, atol=1e-6)
    assert grad.abs().amin(dim=(1, 2, 3)).min() > 0  # every row got its own, non-zero update


@pytest.mark.parametrize("t, eager_calls, graph_calls", [
    ([150, 700, 980, 300, 500], [4, 3, 2, 1, 5, 10], [4, 4, 3, 3, 2, 2, 1, 1, 5, 5, 10, 10]),
    ([300] * 5 + [150] * 2, [5, 7, 14], [6, 6, 7, 7, 14, 14])])
def test_under_cuda_graphs_the_ism_chain_pads_its_calls_to_few_sizes_and_changes_nothing(t, eager_calls,
                                                                                         graph_calls):
    """Chain lengths n = 0, 3, 4, 1, 2 (t = 150, 700, 980, 300, 500): inversion step k runs the rows with n > k
    (4, 3, 2, 1 rows, every one a graph size); five rows of seven with n = 1 (t = 300; 150: n = 0) are padded with
    an idle row to 6. Each new size is captured (one call) and replayed (one more), and the gradient equals the
    unpadded run's. ``graph_rows``: the next 2^k or 3 * 2^k, at most n."""
    from common.graphs import CudaGraphUNet, EagerCapture, graph_rows

    assert [graph_rows(m, 10) for m in (1, 2, 3, 5, 6, 7, 9, 10)] == [1, 2, 3, 6, 6, 8, 10, 10]
    assert graph_rows(13, 40) == 16 and graph_rows(17, 40) == 24 and graph_rows(5, 5) == 5
    t = torch.tensor(t)
    n = t.numel()
    gen = torch.Generator().manual_seed(7)
    x, noise = torch.randn(n, C, H, H, generator=gen), torch.randn(n, C, H, H, generator=gen)
    emb = torch.cat([torch.full((n, 3, 5), 0.25), torch.ones(n, 3, 5)])
    runs, capture = {}, EagerCapture()
    for graphs in (False, True):
        unet = RecordingUNet()
        wrapped = CudaGraphUNet(unet, capture=capture, device_types=("cpu",)) if graphs else unet
        guidance = Guidance(wrapped, None, A, w_schedule="lucid")
        assert guidance.replays_graphs(x) == graphs
        runs[graphs] = (grad_of(lambda v, g=guidance: g.get_ism_loss(v, emb, 7.5, t=t, noise=noise), x),
                        [c[2] for c in unet.calls])
    assert runs[False][1] == eager_calls and runs[True][1] == graph_calls
    assert capture.calls == len(graph_calls) // 2
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-6, atol=1e-7)
