"""The responsibilities' matrix-valued Stein field (core/stein_field.py): equal to its
definition sigma J eps - sigma^2 div J by autograd, zero mean by Monte Carlo (4 standard
errors; the flipped divergence sign caught), and the exact eps-part of a linear posterior."""

import pytest
import torch
from torch.func import jacfwd

from core.stein_field import mixture_responsibilities, mixture_stein_field

Z = 4.0


def _mixture(seed: int = 0, n: int = 5, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    refs = torch.randn(n, d, generator=g, dtype=torch.float64)
    log_prior = torch.randn(1, n, generator=g, dtype=torch.float64)
    x = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
    return refs, log_prior, x


def _tempered_mean(z, alpha, sigma, refs, log_prior, beta, tau):
    r = mixture_responsibilities(z[None], alpha, sigma, refs, log_prior, beta, tau)
    return (r @ refs)[0]


@pytest.mark.parametrize(("beta", "tau"), [(1.0, 0.0), (0.3, 0.0), (1.0, 0.4)])
def test_field_equals_its_definition_by_autograd(beta, tau):
    """S = (sigma J eps - sigma^2 sum_j d_j J_ij) / beta with J = d m_beta / d x_t (full
    Jacobians)."""
    refs, log_prior, x = _mixture()
    alpha, sigma = (
        torch.tensor([0.7], dtype=torch.float64),
        torch.tensor([0.6], dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        eps = torch.randn(refs.shape[1], generator=g, dtype=torch.float64)
        x_t = alpha * x + sigma * eps

        def mean(z):
            return _tempered_mean(z, alpha, sigma, refs, log_prior, beta, tau)

        jac = jacfwd(mean)(x_t)  # [D, D]
        hess = jacfwd(jacfwd(mean))(x_t)  # [D(i), D(j), D(k)] = d_k J_ij
        div = torch.einsum("ijj->i", hess)
        expected = (sigma * jac @ eps - sigma**2 * div) / beta
        got = mixture_stein_field(x_t[None], eps[None], alpha, sigma, refs, log_prior, beta, tau)
        torch.testing.assert_close(got[0], expected, rtol=1e-9, atol=1e-9)


def test_field_is_zero_mean_and_flipped_divergence_is_not():
    """E_eps[S] = 0 over 200k draws at a t where the responsibilities jump (4 SE); the form
    with + sigma^2 div J is detectably biased on the same draws."""
    refs, log_prior, x = _mixture(seed=2, n=6, d=5)
    n = 200_000
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(n, refs.shape[1], generator=g, dtype=torch.float64)
    alpha = torch.full((n,), 0.8, dtype=torch.float64)
    sigma = torch.full((n,), 0.6, dtype=torch.float64)
    x_t = alpha[:, None] * x + sigma[:, None] * eps
    lp = log_prior.expand(n, -1)
    s = mixture_stein_field(x_t, eps, alpha, sigma, refs, lp)
    z = s.mean(0) / (s.std(0) / n**0.5)
    assert bool((z.abs() < Z).all()), z.tolist()
    # flipped sign of the divergence: S + 2 sigma^2 div J = 2 sigma J eps - S
    linear = mixture_stein_field(x_t, eps, alpha, sigma, refs, lp) - mixture_stein_field(
        x_t, torch.zeros_like(eps), alpha, sigma, refs, lp
    )  # sigma J eps (the field is affine in its eps argument)
    wrong = 2 * linear - s
    z_wrong = wrong.mean(0) / (wrong.std(0) / n**0.5)
    assert bool((z_wrong.abs() > Z).any()), z_wrong.tolist()


def test_field_is_the_eps_part_when_the_posterior_is_smooth():
    """Two references at a large noise level: m(x_t) is nearly linear in eps, and S tracks
    m(x_t) - E[m] (R^2 > 0.99 over 20k draws)."""
    refs = torch.tensor([[0.2, 0.0], [-0.2, 0.0]], dtype=torch.float64)
    n = 20_000
    g = torch.Generator().manual_seed(4)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    alpha = torch.full((n,), 0.3, dtype=torch.float64)
    sigma = torch.full((n,), 0.95, dtype=torch.float64)
    x_t = alpha[:, None] * torch.tensor([0.1, 0.0], dtype=torch.float64) + sigma[:, None] * eps
    lp = torch.zeros(n, 2, dtype=torch.float64)
    m = mixture_responsibilities(x_t, alpha, sigma, refs, lp) @ refs
    s = mixture_stein_field(x_t, eps, alpha, sigma, refs, lp)
    resid = (m - m.mean(0)) - s
    r2 = 1 - resid.var(0).sum() / m.var(0).sum()
    assert r2 > 0.99, float(r2)
