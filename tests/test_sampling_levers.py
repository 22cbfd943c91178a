"""CARV's levers (core/timesteps.py samplers, estimators/sampling.py): exact identities of the
importance weight, the inverse CDF and the strata, the K-draw average against its definition,
and unbiasedness of importance-sampled and stratified t by Monte Carlo."""

from __future__ import annotations

import pytest
import torch

from core.schedule import ddpm_alphas_cumprod
from core.timesteps import (
    importance_proposal,
    importance_weight,
    inverse_cdf,
    rotated_strata,
    timestep_from_uniform,
    uniform_from_timestep,
)
from estimators.base import EstimatorContext, EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.sampling import SampledEstimator, multi_draws, with_sampling_levers

torch.set_num_threads(1)
ABAR = ddpm_alphas_cumprod(1000)
LO, HI = 20, 980


def test_importance_weight_keeps_every_expectation_exactly():
    """sum_t q(t) r(t) f(t) = mean over {lo..hi} of f(t), for any f."""
    q = importance_proposal(LO, HI, ABAR, "sds")
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(q[:LO].sum()) == 0.0 and float(q[HI + 1 :].sum()) == 0.0
    t = torch.arange(1000)
    f = torch.sin(t.double() / 37.0) + (t.double() / 1000) ** 3
    inside = (t >= LO) & (t <= HI)
    weighted = (q[inside] * importance_weight(t[inside], q, LO, HI) * f[inside]).sum()
    assert float(weighted) == pytest.approx(float(f[inside].mean()), rel=1e-12)
    # q ~ w(t) sigma_t = sigma_t^3 for the sds weighting
    ratio = q[inside] / (1 - ABAR.double()[inside]) ** 1.5
    assert float(ratio.std() / ratio.mean()) < 1e-9


def test_inverse_cdf_hits_every_t_on_its_own_cdf_interval():
    q = importance_proposal(LO, HI, ABAR, "sds")
    cdf = torch.cumsum(q, 0)
    t = torch.arange(LO + 1, HI + 1)
    inside = (cdf[t - 1] + cdf[t]) / 2  # a point of t's interval [F(t-1), F(t))
    assert torch.equal(inverse_cdf(inside, q), t)
    assert int(inverse_cdf(torch.tensor([0.0]), q)) == LO
    assert int(inverse_cdf(torch.tensor([1.0 - 1e-17]), q)) == HI


def test_uniform_and_timestep_round_trip_exactly():
    t = torch.arange(LO, HI + 1)
    for v in (1e-6, 0.5, 0.999):  # (v = 0 exactly may round down a step; draw 0 keeps t0)
        u = uniform_from_timestep(t, LO, HI, torch.full(t.shape, v, dtype=torch.float64))
        assert ((u >= 0) & (u < 1)).all()
        assert torch.equal(timestep_from_uniform(u, LO, HI), t)


def test_rotated_strata_put_one_draw_in_each_stratum():
    u = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    strata = rotated_strata(u, 5)
    assert torch.equal(strata[:, 0], u)
    assert torch.equal(
        torch.sort(torch.floor(strata * 5), 1).values, torch.arange(5.0).expand(500, 5)
    )


class _Prior:
    alphas_cumprod = ABAR
    num_train_timesteps = 1000


class _Toy(GradientEstimator):
    """G = f(t) + eps with f(t) = (t / 1000)^2: E[G] = E_t[f(t)] under uniform t."""

    name = "toy"

    def __init__(self):
        self.calls = 0

    def grad(self, x, t, eps, prior, ctx):
        self.calls += int(x.shape[0])
        return EstimatorOutput(((t.double() / 1000) ** 2).to(x.dtype)[:, None] + eps, {})


def _ctx(seed: int, n: int) -> EstimatorContext:
    return EstimatorContext(
        prompt="p", cameras=None, step=0, generator=torch.Generator().manual_seed(seed)
    )


def test_k_draw_average_is_the_mean_of_the_inner_grads_on_its_draws():
    config = GuidanceConfig(noise_samples=3, t_importance=True, t_stratified=True)
    lo, hi = config.timesteps.bounds(0, 1000)
    t0 = torch.tensor([100, 700])
    eps0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    x = torch.zeros(2, 4)
    wrapped = SampledEstimator(_Toy(), config)
    g = wrapped.grad(x, t0, eps0, _Prior(), _ctx(5, 2)).grad
    q = importance_proposal(lo, hi, ABAR, config.weighting)
    t, eps, r = multi_draws(t0, eps0, 3, lo, hi, torch.Generator().manual_seed(5), q, True)
    inner = _Toy().grad(x.repeat_interleave(3, 0), t, eps, _Prior(), None).grad
    expected = (r[:, None].float() * inner).reshape(2, 3, 4).mean(1)
    torch.testing.assert_close(g, expected, rtol=0, atol=0)
    assert torch.equal(eps[::3], eps0)  # draw 0 keeps the harness's eps


def test_k1_without_importance_is_not_wrapped_and_k2_keeps_draw_zero():
    est = _Toy()
    assert with_sampling_levers(est, GuidanceConfig()) is est
    t, eps, r = multi_draws(
        torch.tensor([30, 500]), torch.zeros(2, 3), 2, LO, HI, torch.Generator().manual_seed(0)
    )
    assert t[0] == 30 and t[2] == 500 and bool((r == 1).all())


@pytest.mark.parametrize(
    "levers",
    [
        dict(t_importance=True),
        dict(noise_samples=4, t_stratified=True),
        dict(noise_samples=4, t_importance=True, t_stratified=True),
    ],
    ids=str,
)
def test_levers_leave_the_mean_unchanged_monte_carlo(levers):
    """E[G] over 20000 rows within 4 standard errors of the uniform-t mean E_t[(t/1000)^2]."""
    config = GuidanceConfig(**levers)
    lo, hi = config.timesteps.bounds(0, 1000)
    exact = float(((torch.arange(lo, hi + 1).double() / 1000) ** 2).mean())
    n = 20000
    gen = torch.Generator().manual_seed(3)
    t0 = lo + torch.randint(0, hi - lo + 1, (n,), generator=gen)
    eps0 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    g = (
        SampledEstimator(_Toy(), config)
        .grad(torch.zeros(n, 1, dtype=torch.float64), t0, eps0, _Prior(), _ctx(4, n))
        .grad[:, 0]
    )
    se = float(g.std() / n**0.5)
    assert abs(float(g.mean()) - exact) < 4 * se, (float(g.mean()), exact, se)
