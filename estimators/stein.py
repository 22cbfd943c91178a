"""The Stein control variate (SteinDreamer, arXiv 2401.00604), with the sign and scale that
make it zero-mean.

For x_t = alpha x + sigma eps, eps ~ N(0, I) and any differentiable phi, Gaussian integration
by parts (Stein's lemma) gives E_eps[eps phi(x_t)] = sigma E_eps[grad_{x_t} phi(x_t)], so

    S = eps phi(x_t) - sigma grad_{x_t} phi(x_t),        E_eps[S] = 0.

The relative sign and the sigma factor matter: the paper's printed form
``eps phi + grad phi`` has mean (sigma + 1) E[grad phi] != 0 and would bias the estimator.
A global sign or scale of S is absorbed by the coefficient mu.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def stein_control_variate(
    phi_fn: Callable[[torch.Tensor], torch.Tensor],
    x_t: torch.Tensor,
    eps: torch.Tensor,
    sigma_t: torch.Tensor | float,
    return_phi: bool = False,
):
    """S = eps * phi(x_t) - sigma_t * grad_{x_t} phi(x_t).

    Args:
        phi_fn: maps [B, ...] -> [B], one scalar per image (must not depend across images).
        x_t: [B, ...] noisy images; eps: [B, ...] the noise that made them.
        sigma_t: [B] or a scalar.
        return_phi: also return phi(x_t) [B].
    Returns:
        S with the shape of x_t (no graph), and phi [B] if requested. Gradients are taken
        w.r.t. a detached copy of x_t only: no other tensor's ``.grad`` is touched.
    """
    x = x_t.detach().requires_grad_(True)
    with torch.enable_grad():
        phi = phi_fn(x)
        if phi.requires_grad:
            (grad,) = torch.autograd.grad(phi.sum(), x)
        else:  # phi constant in x_t
            grad = torch.zeros_like(x)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    sigma = torch.as_tensor(sigma_t, dtype=x_t.dtype, device=x_t.device).reshape(-1)
    s = eps * phi.detach().view(shape) - sigma.view(shape) * grad
    return (s, phi.detach()) if return_phi else s


def stein_vector_control_variate(
    field: torch.Tensor,
    jacobian_diagonal: torch.Tensor,
    eps: torch.Tensor,
    sigma_t: torch.Tensor | float,
) -> torch.Tensor:
    """The vector-field form S_i = eps_i f_i(x_t) - sigma_t d f_i / d x_{t,i}.

    For x_t = alpha x + sigma eps and a differentiable f: R^d -> R^d, Stein's lemma applied to
    each coordinate gives E[eps_i f_i(x_t)] = sigma E[d_i f_i(x_t)], so E[S] = 0 (any f; f may
    depend on x, t, c but not on eps except through x_t). f_i = phi for every i is not the
    scalar form (that one has the full gradient, S = eps phi - sigma grad phi); a field can
    subtract a per-coordinate function of eps that no scalar phi gives. ``jacobian_diagonal``
    may be an unbiased estimate (Hutchinson v (.) (J^T v), v Rademacher independent of eps):
    E[S] = 0 still holds.

    Args:
        field: f(x_t) [B, ...]; jacobian_diagonal: d_i f_i [B, ...] (exact or estimated).
        eps: [B, ...] the noise that made x_t; sigma_t: [B] or a scalar.
    Returns:
        S [B, ...] (keeps the inputs' graph, so a learned f can be trained through it).

    >>> eps = torch.ones(1, 2)
    >>> stein_vector_control_variate(torch.tensor([[2.0, 3.0]]), torch.ones(1, 2), eps, 0.5)
    tensor([[1.5000, 2.5000]])
    """
    shape = (-1,) + (1,) * (eps.dim() - 1)
    sigma = torch.as_tensor(sigma_t, dtype=eps.dtype, device=eps.device).reshape(-1)
    return eps * field - sigma.view(shape) * jacobian_diagonal
