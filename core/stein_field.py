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


# --- the posterior mean's own control variate, its mean by Monte Carlo in the references'
# subspace (SSD's ``baseline=posterior_mc``) -------------------------------------------------
#
# With x_t = alpha x + sigma eps the logits of the responsibilities are, up to a constant
# common to every n (which the softmax ignores),
#
#     l_n(eps) = a_n + c <x_n, eps>,   a_n = log pi_n - alpha^2 ||x - x_n||^2 / (2 s^2),
#     c = alpha sigma / s^2,
#
# so the posterior mean m = (1 - alpha g) sum_n r_n x_n + g x_t (g = alpha tau^2 / s^2) depends
# on eps only through z = X eps ~ N(0, X X^T) and the linear term g sigma eps. On the K
# references that can carry weight (chosen from x, c, t alone: ``subspace_plan``) the reduced
# mean h(eps) = (1 - alpha g) sum_{n in K} softmax_K(a + c z)_n x_n + g x_t has E[h] =
# (1 - alpha g) rbar X_K + g alpha x with rbar = E[softmax(a + c z_K)], z_K ~ N(0, X_K X_K^T):
# a K-dimensional Gaussian integral, estimated from L independent draws xi (never the
# current eps). h(eps) - hbar then has zero mean over (eps, xi) exactly, whatever K is (K only
# decides how closely h follows m, i.e. how much variance is left).


def pooled_images(images: torch.Tensor, shape: tuple[int, int, int], factor: int) -> torch.Tensor:
    """Each image [N, C*H*W] average-pooled by ``factor`` x ``factor`` and scaled by
    ``factor`` so that ||pooled(a) - pooled(b)||^2 <= ||a - b||^2 (Cauchy-Schwarz: the
    squared mean of f^2 numbers times f^2 is at most their sum of squares), [N, C*H*W/f^2].

    >>> a = torch.arange(16.0).view(1, 16)
    >>> p = pooled_images(a, (1, 4, 4), 2)
    >>> bool((p**2).sum() <= (a**2).sum())
    True
    """
    c, h, w = shape
    if factor == 1:
        return images
    pooled = torch.nn.functional.avg_pool2d(images.view(-1, c, h, w), factor)
    return factor * pooled.flatten(1)


class SubspacePlan:
    """One image's reduced posterior on one mixture: the references K, their images and
    logit offsets a_K, from (x, alpha, sigma, log pi) alone (no eps).

    Attributes:
        index: [K] the chosen references; images: [K, D] (float64); a: [K]; c, g, alpha,
        sigma: floats (module comment above).
    """

    def __init__(self, index, images, a, c, g, alpha, sigma):
        self.index, self.images, self.a = index, images, a
        self.c, self.g, self.alpha, self.sigma = c, g, alpha, sigma

    def centred_mean(self, eps: torch.Tensor, rbar: torch.Tensor) -> torch.Tensor:
        """h(eps) - hbar [D] (float64) for one eps [D] (module comment above)."""
        eps = eps.to(self.images)
        r = torch.softmax(self.a + self.c * (self.images @ eps), dim=0)
        return (1.0 - self.alpha * self.g) * ((r - rbar) @ self.images) + (
            self.g * self.sigma * eps
        )


def gaussian_root(gram: torch.Tensor) -> torch.Tensor:
    """R with R R^T = gram for a PSD gram [K, K] (Cholesky; eigh when singular).

    >>> g = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> r = gaussian_root(g); torch.allclose(r @ r.T, g)
    True
    """
    root, info = torch.linalg.cholesky_ex(gram)
    if int(info):  # singular (duplicate references): an exact square root all the same
        lam, vec = torch.linalg.eigh(gram)
        root = vec * lam.clamp_min(0.0).sqrt()
    return root


def mean_responsibilities(
    plans: list[SubspacePlan], draws: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """rbar_b [K_b] per plan: the mean of softmax(a_b + c_b z_b) over ``draws`` independent
    draws of z = X eps' (eps' ~ N(0, I_D) never materialised: z ~ N(0, X X^T) on the union
    of the plans' references, so the branches share each draw, as they share eps; with CFG
    the branches' means then cancel as their values do). Unbiased for E_eps[r_b(eps)]."""
    images = torch.cat([p.images for p in plans])
    unique, inverse = torch.unique(images, dim=0, return_inverse=True)
    root = gaussian_root(unique @ unique.T)
    xi = torch.randn((draws, len(unique)), generator=generator, dtype=torch.float64)
    z = (xi @ root.T)[:, inverse]
    out, start = [], 0
    for p in plans:
        zb = z[:, start : start + len(p.index)]
        out.append(torch.softmax(p.a + p.c * zb, dim=1).mean(0))
        start += len(p.index)
    return out


def subspace_plan(
    x: torch.Tensor,
    alpha: float,
    sigma: float,
    refs: torch.Tensor,
    log_prior: torch.Tensor,
    pooled_refs: torch.Tensor,
    pooled_x: torch.Tensor,
    tau: float = 0.0,
    max_refs: int = 32,
    nats: float = 30.0,
    spread: float = 4.0,
) -> SubspacePlan:
    """Choose the references that can carry weight at (x, t) for one image, from x alone.

    ub_n = log pi_n - alpha^2 ||P x - P x_n||^2 / (2 s^2) >= a_n (``pooled_images``) ranks
    every reference at 1/f^2 of a prior pass; the 2 ``max_refs`` best get their exact a_n;
    a reference is kept when a_n + spread c (d_n + d_*) >= a_* - nats (d_n = ||x - x_n||, *
    the best; spread c (d_n + d_*) bounds ``spread`` standard deviations of the eps part of
    l_n - l_*), the ``max_refs`` highest. Any choice keeps the control variate's zero mean.

    Args:
        x: [D]; refs: [N, D]; log_prior: [N]; pooled_refs: [N, D'], pooled_x: [D'].
    """
    s2 = sigma**2 + alpha**2 * tau**2
    c, g = alpha * sigma / s2, alpha * tau**2 / s2
    ub = log_prior - alpha**2 * ((pooled_refs - pooled_x) ** 2).sum(1) / (2 * s2)
    cand = torch.topk(ub, min(len(ub), 2 * max_refs)).indices
    xc = refs[cand].double()
    d2 = ((xc - x.double()) ** 2).sum(1)
    a = log_prior[cand].double() - alpha**2 * d2 / (2 * s2)
    best = int(torch.argmax(a))
    d = d2.sqrt()
    score = a + spread * c * (d + d[best])
    keep = torch.nonzero(score >= a[best] - nats).flatten()
    keep = keep[torch.argsort(score[keep], descending=True)][:max_refs]
    return SubspacePlan(cand[keep], xc[keep], a[keep], c, g, alpha, sigma)
