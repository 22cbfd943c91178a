"""DDIM inversion and sampling over any noise predictor (pure functions over tensors).

Notation as docs/manual.md, "The estimators": abar_t = alphas_cumprod[t] (the one schedule,
core/schedule.py), alpha = sqrt(abar), sigma = sqrt(1 - abar), and a timestep t < 0 stands
for the clean image (abar = 1). One deterministic DDIM move of x from timestep a to b with
the noise prediction e = eps(x, a):

    x0_hat = (x - sigma_a e) / alpha_a
    x_b    = alpha_b x0_hat + sigma_b e                          (ddim_step)

Inversion walks a *rising* ladder t_0 < t_1 < ... < t_K (t_0 < 0: start from the clean x),
sampling a falling one; eps is evaluated at max(t_k, 0), one predictor call (one NFE per
image per branch, counted by the prior) per rung. ``eta`` > 0 adds SDI's stochastic
inversion noise eta sqrt(v) n with v = (1 - abar_lo) / (1 - abar_hi) (1 - abar_hi / abar_lo)
(abar_lo >= abar_hi the less / more noisy end; v = 0 from the clean image), drawn from the
given generator. With an exact eps and fine rungs, inversion then sampling returns the start
(tests/test_family.py measures the error with the world's exact prior).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, ...], t [B]) -> eps


def abar_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """abar_t for integer t [B] (t < 0: 1.0, the clean image) -> [B] float."""
    table = alphas_cumprod.to(t.device)
    return torch.where(t < 0, torch.ones_like(table[0]), table[t.clamp_min(0)])


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


def ddim_step(
    x: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor
) -> torch.Tensor:
    """One deterministic DDIM move of x [B, ...] with noise prediction eps from abar_from [B]
    to abar_to [B] (either direction).

    >>> x, e = torch.ones(1, 2), torch.zeros(1, 2)
    >>> ddim_step(x, e, torch.tensor([1.0]), torch.tensor([0.25]))
    tensor([[0.5000, 0.5000]])
    """
    a_from, a_to = _view(abar_from, x), _view(abar_to, x)
    x0 = (x - (1.0 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1.0 - a_to).sqrt() * eps


def inversion_noise_std(abar_from: torch.Tensor, abar_to: torch.Tensor) -> torch.Tensor:
    """sqrt(v), v = (1 - abar_lo) / (1 - abar_hi) (1 - abar_hi / abar_lo), [B] (see module)."""
    lo, hi = torch.maximum(abar_from, abar_to), torch.minimum(abar_from, abar_to)
    v = (1.0 - lo) / (1.0 - hi).clamp_min(1e-12) * (1.0 - hi / lo)
    return v.clamp_min(0.0).sqrt()


def ddim_invert(
    x: torch.Tensor,
    timesteps: Sequence[torch.Tensor],
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DDIM inversion of x [B, ...] (at timestep ``timesteps[0]``, < 0 = clean) up the rungs
    ``timesteps`` (K + 1 tensors [B] int64, rising). K predictor calls.

    Returns (x at timesteps[-1], the eps of the last rung or None when K = 0).

    >>> from core.schedule import ddpm_alphas_cumprod
    >>> ac = ddpm_alphas_cumprod()
    >>> ts = [torch.tensor([-1]), torch.tensor([499])]
    >>> x_t, e = ddim_invert(torch.zeros(1, 3), ts, lambda x, t: torch.ones_like(x), ac)
    >>> torch.allclose(x_t, (1 - ac[499]).sqrt() * torch.ones(1, 3))
    True
    """
    eps = None
    for t_from, t_to in zip(timesteps[:-1], timesteps[1:], strict=True):
        eps = eps_fn(x, t_from.clamp_min(0))
        a_from, a_to = abar_at(alphas_cumprod, t_from), abar_at(alphas_cumprod, t_to)
        x = ddim_step(x, eps, a_from, a_to)
        if eta > 0.0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = x + eta * _view(inversion_noise_std(a_from, a_to), x) * noise
    return x, eps


def ddim_sample(
    x_t: torch.Tensor,
    timesteps: Sequence[torch.Tensor],
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """Deterministic DDIM sampling of x_t [B, ...] (at ``timesteps[0]``) down the falling
    rungs ``timesteps`` (the last may be < 0: the clean x0 estimate). K predictor calls."""
    for t_from, t_to in zip(timesteps[:-1], timesteps[1:], strict=True):
        eps = eps_fn(x_t, t_from.clamp_min(0))
        x_t = ddim_step(x_t, eps, abar_at(alphas_cumprod, t_from), abar_at(alphas_cumprod, t_to))
    return x_t


def ladder(start: torch.Tensor, stop: torch.Tensor, n_steps: int) -> list[torch.Tensor]:
    """n_steps + 1 rungs [B] int64 from ``start`` to ``stop`` (per image), evenly spaced and
    rounded; equal neighbours are allowed (a zero move is the identity up to rounding)."""
    start, stop = start.to(torch.float64), stop.to(torch.float64)
    return [
        torch.round(start + (stop - start) * k / n_steps).to(torch.int64)
        for k in range(n_steps + 1)
    ]
