"""A matrix-valued Stein field built from the world prior's posterior responsibilities.

For x_t = alpha x + sigma eps, eps ~ N(0, I), and any differentiable A: R^D -> R^{D x D},
Stein's lemma row by row gives E[sum_j eps_j A_ij(x_t)] = sigma E[sum_j d_j A_ij(x_t)], so

    S_i = sum_j ( eps_j A_ij(x_t) - sigma d A_ij / d x_{t,j} ),        E_eps[S] = 0

(complete for Gaussian eps: every zero-mean function of eps is such an S). The world's exact
denoiser is a mixture: with responsibilities r_n = softmax_n(log pi_n - ||x_t - alpha x_n||^2 /
(2 s^2)) over references x_n, its x0-prediction is m = sum_n r_n x_n. Its eps-dependence is
jump-like: r flips between references with the sign of <eps, x_n - x_k>. The field here is
A = sigma J_beta / beta, J_beta the Jacobian of the posterior mean of a *tempered* posterior
(logits' distance term times beta; beta = 1 is the prior's own, beta < 1 a smoother field;
the 1 / beta keeps the field's scale that of the untempered Jacobian, so that the coefficient
of the first-order control variate stays near 1):

    k        = alpha / s^2,        s^2 = sigma^2 + alpha^2 tau^2
    J_beta   = beta k Cov_r(x_n)                    (symmetric; u_n = x_n - m, r tempered)
    div J_b  = (beta k)^2 sum_n r_n u_n ||u_n||^2   (sum_j d_j J_ij: a third cumulant)
    S_beta   = sigma k sum_n r_n u_n ( <u_n, eps> - sigma beta k ||u_n||^2 )

For a posterior mean linear in eps (a Gaussian prior) sigma J eps is exactly m(x_t) - E m and
the divergence vanishes: S_beta then *is* the eps-part of the x0-prediction. For the jump-like
mixture it is its first-order (Jacobian) approximation; any beta keeps E[S] = 0 exactly, since
A is a function of x_t alone. Cost: the responsibilities of one prior pass (O(N D)).

>>> import torch
>>> refs = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
>>> s = mixture_stein_field(torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.tensor([1.0]),
...     torch.tensor([1.0]), refs, torch.zeros(1, 2))
>>> s  # r = (1/2, 1/2), m = 0, u_n = +-e1: S = sum_n r_n u_n (<u_n, eps> - 1)
tensor([[1., 0.]])
"""

from __future__ import annotations

import torch


def mixture_responsibilities(
    x_t: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    refs: torch.Tensor,
    log_prior: torch.Tensor,
    beta: float = 1.0,
    tau: float = 0.0,
) -> torch.Tensor:
    """r_n(x_t) = softmax_n(log pi_n - beta ||x_t - alpha x_n||^2 / (2 s^2)), [B, N].

    Args:
        x_t: [B, D]; alpha, sigma: [B]; refs: [N, D]; log_prior: [B, N].
    """
    s2 = sigma**2 + alpha**2 * tau**2
    dist2 = (
        (x_t**2).sum(1, keepdim=True)
        - 2.0 * alpha[:, None] * (x_t @ refs.T)
        + alpha[:, None] ** 2 * (refs**2).sum(1)
    ).clamp_min(0.0)
    return torch.softmax(log_prior - beta * dist2 / (2.0 * s2[:, None]), dim=1)


def mixture_stein_field(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    refs: torch.Tensor,
    log_prior: torch.Tensor,
    beta: float = 1.0,
    tau: float = 0.0,
) -> torch.Tensor:
    """S_beta [B, D] of the module docstring (zero mean over eps for x_t = alpha x + sigma eps).

    Args:
        x_t, eps: [B, D]; alpha, sigma: [B]; refs: [N, D] the references x_n;
        log_prior: [B, N] log pi_n (any normalisation); beta > 0; tau >= 0.
    """
    if beta <= 0:
        raise ValueError("need beta > 0")
    r = mixture_responsibilities(x_t, alpha, sigma, refs, log_prior, beta, tau)  # [B, N]
    m = r @ refs  # [B, D]
    k = alpha / (sigma**2 + alpha**2 * tau**2)  # [B]
    proj = eps @ refs.T - (m * eps).sum(1, keepdim=True)  # <u_n, eps>        [B, N]
    norm2 = ((refs**2).sum(1) - 2.0 * (m @ refs.T) + (m**2).sum(1, keepdim=True)).clamp_min(0)
    c = r * (proj - (beta * sigma * k)[:, None] * norm2)  # r_n (<u_n, eps> - ...)
    field = c @ refs - c.sum(1, keepdim=True) * m  # sum_n c_n u_n
    return (sigma * k)[:, None] * field
