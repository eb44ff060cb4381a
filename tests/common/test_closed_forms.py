"""Closed-form checks of the diffusion math (they fail if a formula is wrong)."""

import pytest
import torch

from common.cfg import cfg_combine, split_cfg_batch
from common.ddim import ddim_inversion_step, ddim_sigma, ddim_step
from common.ddpm import ddpm_posterior_mean, ddpm_posterior_variance
from common.schedules import alpha_bar_at, inference_timesteps, make_alphas_cumprod, previous_timesteps
from common.tweedie import (
    add_noise,
    eps_from_v,
    eps_from_x0,
    v_from_eps,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)

AC = make_alphas_cumprod("linear").double()


def oracle_eps(x_t, alpha_bar_t, x0):
    """Exact noise prediction for a single-point dataset {x0}."""
    return (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_eta0_with_oracle_recovers_x0(spacing):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    grid = inference_timesteps(20, 1000, spacing)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    for t, t_prev in zip(grid, previous_timesteps(grid)):
        a_t, a_prev = alpha_bar_at(AC, t).double(), alpha_bar_at(AC, t_prev).double()
        x, _ = ddim_step(x, oracle_eps(x, a_t, x0), a_t, a_prev)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-8)


def test_eta1_equals_ddpm_posterior_variance():
    for t, t_prev in [(999, 998), (500, 499), (10, 9), (980, 960), (1, 0)]:
        a_t, a_prev = AC[t].float(), AC[t_prev].float()
        sigma = ddim_sigma(a_t, a_prev, eta=1.0)
        torch.testing.assert_close(sigma**2, ddpm_posterior_variance(a_t, a_prev, "fixed_small"), rtol=1e-5, atol=0)


def test_ddim_noise_term_has_variance_sigma_squared():
    a_t, a_prev = AC[600].float(), AC[580].float()
    x_t, eps = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    noise = torch.ones(1, 1, 2, 2)
    x_prev, _ = ddim_step(x_t, eps, a_t, a_prev, eta=0.5, noise=noise)
    torch.testing.assert_close(x_prev, torch.full_like(x_prev, float(ddim_sigma(a_t, a_prev, 0.5))))
    with pytest.raises(ValueError, match="needs `noise`"):
        ddim_step(x_t, eps, a_t, a_prev, eta=0.5)


def test_inversion_then_ddim_step_returns_start():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    t, t_next = 300, 500
    x_t = add_noise(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), AC[t])
    x_next = ddim_inversion_step(x_t, oracle_eps(x_t, AC[t], x0), AC[t], AC[t_next])
    back, _ = ddim_step(x_next, oracle_eps(x_next, AC[t_next], x0), AC[t_next], AC[t])
    torch.testing.assert_close(back, x_t, rtol=0, atol=1e-10)


def test_inversion_with_eta_keeps_marginal_variance():
    # with the oracle and eta > 0, x_next = sqrt(a_next) x0 + sqrt(1-a_next-s^2) eps_t + s z ~ q(x_next | x0)
    n = 200_000
    g = torch.Generator().manual_seed(2)
    x0 = torch.zeros(n, 1, 1, 1, dtype=torch.float64)
    x_t = add_noise(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), AC[200])
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_next = ddim_inversion_step(x_t, oracle_eps(x_t, AC[200], x0), AC[200], AC[400], eta=1.0, noise=noise)
    assert abs(x_next.var().item() - (1 - AC[400]).item()) < 0.01


def test_tweedie_round_trips():
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    a = torch.tensor([0.9, 0.05])
    x_t = add_noise(x0, eps, a)
    torch.testing.assert_close(x0_from_eps(x_t, eps, a), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eps_from_x0(x_t, x0, a), eps, rtol=1e-4, atol=1e-4)
    v = v_from_x0_eps(x0, eps, a)
    torch.testing.assert_close(v_from_eps(x_t, eps, a), v, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x0_from_v(x_t, v, a), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eps_from_v(x_t, v, a), eps, rtol=1e-4, atol=1e-4)


def test_tweedie_on_gaussian_data_is_the_posterior_mean():
    # data x0 ~ N(mu, s^2): the optimal eps predictor gives
    # E[x0 | x_t] = mu + s^2 sqrt(a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)
    mu, s2, a = 0.7, 0.25, torch.tensor(0.4, dtype=torch.float64)
    x_t = torch.linspace(-3, 3, 11, dtype=torch.float64).reshape(11, 1)
    var_t = a * s2 + 1 - a
    posterior_mean = mu + s2 * a.sqrt() * (x_t - a.sqrt() * mu) / var_t
    eps_opt = (1 - a).sqrt() * (x_t - a.sqrt() * mu) / var_t  # E[eps | x_t]
    torch.testing.assert_close(x0_from_eps(x_t, eps_opt, a), posterior_mean)


def test_posterior_mean_interpolates_correctly():
    # at t = 1 (prev = 0 with alpha_bar_prev = 1) the posterior mean is x0 itself
    x_t, x0 = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    torch.testing.assert_close(ddpm_posterior_mean(x_t, x0, AC[0].float(), 1.0), x0, rtol=1e-5, atol=1e-5)
    # posterior of consecutive steps: mean = E[x_prev | x_t, x0] from the joint Gaussian
    a_t, a_prev = AC[500].float(), AC[499].float()
    alpha_t = a_t / a_prev
    cov = alpha_t.sqrt() * (1 - a_prev)  # Cov(x_t, x_prev | x0)
    expected = a_prev.sqrt() * x0 + cov / (1 - a_t) * (x_t - a_t.sqrt() * x0)
    torch.testing.assert_close(ddpm_posterior_mean(x_t, x0, a_t, a_prev), expected, rtol=1e-5, atol=1e-5)


def test_cfg_conventions():
    u, c = torch.zeros(2, 1), torch.ones(2, 1)
    assert torch.equal(cfg_combine(u, c, 1.0), c)
    assert torch.equal(cfg_combine(u, c, 7.5), torch.full_like(c, 7.5))
    # threestudio's cond + s (cond - uncond) equals ours at s + 1
    assert torch.equal(c + 100 * (c - u), cfg_combine(u, c, 101))
    torch.testing.assert_close(cfg_combine(u, c, torch.tensor([1.0, 3.0])), torch.tensor([[1.0], [3.0]]))
    eu, ec = split_cfg_batch(torch.cat([u, c]))
    assert torch.equal(eu, u) and torch.equal(ec, c)
