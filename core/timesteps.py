"""Timestep sampling t ~ U{t_min .. t_max} with optional linear annealing of t_max and t_min."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TimestepSchedule:
    """Fractions of T. t_max (and t_min) move linearly to ``t_max_final`` (``t_min_final``)
    between steps ``anneal_start`` and ``anneal_start + anneal_steps`` when set: threestudio's
    ``[start_step, start_value, end_value, end_step]`` schedules (``C``). ProlificDreamer's
    ``max_step_percent: [5000, 0.98, 0.5, 5001]`` (hold 0.98, then 0.5) is
    ``anneal_start=5000, anneal_steps=1``.

    >>> s = TimestepSchedule(t_max=0.98, t_max_final=0.5, anneal_start=5000, anneal_steps=1)
    >>> s.bounds(4999, 1000), s.bounds(5000, 1000), s.bounds(5001, 1000)
    ((20, 980), (20, 980), (20, 500))
    """

    t_min: float = 0.02
    t_max: float = 0.98
    t_max_final: float | None = None
    anneal_steps: int = 0
    t_min_final: float | None = None
    anneal_start: int = 0

    def fractions(self, step: int) -> tuple[float, float]:
        """(t_min, t_max) as fractions of T at ``step``."""
        frac = 0.0
        if self.anneal_steps > 0:
            frac = min(1.0, max(0.0, (step - self.anneal_start) / self.anneal_steps))
        t_min, t_max = self.t_min, self.t_max
        if self.t_max_final is not None and self.anneal_steps > 0:
            t_max = self.t_max + (self.t_max_final - self.t_max) * frac
        if self.t_min_final is not None and self.anneal_steps > 0:
            t_min = self.t_min + (self.t_min_final - self.t_min) * frac
        return t_min, t_max

    def bounds(self, step: int, num_train_timesteps: int) -> tuple[int, int]:
        """Inclusive integer bounds (lo, hi) of t at ``step``."""
        t_min, t_max = self.fractions(step)
        lo = round(t_min * num_train_timesteps)
        hi = max(lo, round(t_max * num_train_timesteps))
        return lo, min(hi, num_train_timesteps - 1)

    def sample(
        self, n: int, step: int, num_train_timesteps: int, generator: torch.Generator
    ) -> torch.Tensor:
        """n integer timesteps [n] int64. Always draws n uniforms from ``generator``."""
        lo, hi = self.bounds(step, num_train_timesteps)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (lo + torch.floor(u * (hi - lo + 1))).clamp(max=hi).to(torch.int64)


# --- CARV's t levers (importance-sampled and stratified t), pure functions -----------------
#
# The schedule draws t uniformly on {lo .. hi} (N = hi - lo + 1 values). A proposal q over t
# changes the draw, and the weight  r(t) = (1 / N) / q(t)  keeps the mean unchanged:
#
#     E_{t ~ q}[ r(t) f(t) ] = sum_t q(t) (1/N) / q(t) f(t) = E_{t ~ U{lo..hi}}[ f(t) ].
#
# Both levers are written on the uniform u in [0, 1) behind a draw: u = (t - lo + v) / N with
# v ~ U[0, 1) recovers an exactly uniform u from a uniform integer t, t = F_q^{-1}(u) maps it
# to the proposal, and K rotated copies u_k = frac(u + k / K) put exactly one of K draws in
# each stratum [j / K, (j + 1) / K) while each u_k alone stays uniform (systematic sampling).


def importance_proposal(
    lo: int, hi: int, alphas_cumprod: torch.Tensor, weighting: str = "sds"
) -> torch.Tensor:
    """Proposal q [T] float64 over t, q(t) proportional to w(t) sigma_t on {lo .. hi}, zero
    outside, summing to 1 (the expected size of w(t) (eps_hat - eps) grows like w(t) sigma_t
    when the render is far from the data).

    >>> abar = torch.linspace(0.99, 0.01, 10)
    >>> q = importance_proposal(2, 7, abar)
    >>> float(q.sum()), bool((q[:2] == 0).all() and (q[8:] == 0).all())
    (1.0, True)
    """
    from core.weighting import timestep_weight

    t = torch.arange(alphas_cumprod.shape[0])
    abar = alphas_cumprod.to(torch.float64)
    density = timestep_weight(t, abar, weighting) * (1.0 - abar).clamp(min=0).sqrt()
    inside = (t >= lo) & (t <= hi)
    density = torch.where(inside, density.clamp(min=1e-12), torch.zeros_like(density))
    return density / density.sum()


def importance_weight(t: torch.Tensor, q: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """r(t) = (1 / N) / q(t) [B] float64 for t [B] int64 drawn from q (N = hi - lo + 1)."""
    return (1.0 / (hi - lo + 1)) / q.to(t.device)[t]


def inverse_cdf(u: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """t = F_q^{-1}(u): the smallest t with u < F_q(t), for u [...] in [0, 1); int64, only t
    with q(t) > 0 (float rounding at the top end is clamped to the last such t)."""
    cdf = torch.cumsum(q.to(torch.float64), 0).to(u.device)
    t = torch.searchsorted(cdf, u.to(torch.float64).contiguous(), right=True)
    support = torch.nonzero(q > 0).flatten()
    return t.clamp(int(support[0]), int(support[-1])).to(torch.int64)


def uniform_from_timestep(t: torch.Tensor, lo: int, hi: int, v: torch.Tensor) -> torch.Tensor:
    """u = (t - lo + v) / N in [0, 1) [B] float64: exactly uniform when t ~ U{lo..hi} and
    v ~ U[0, 1) independent; ``timestep_from_uniform`` inverts it."""
    return (t.to(torch.float64) - lo + v.to(torch.float64)) / (hi - lo + 1)


def timestep_from_uniform(u: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """t = lo + floor(u N), clamped to hi: uniform on {lo .. hi} for u ~ U[0, 1)."""
    return (lo + torch.floor(u * (hi - lo + 1))).clamp(max=hi).to(torch.int64)


def rotated_strata(u: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] = frac(u[:, None] + j / k), j = 0..k-1: column 0 is u, each column is uniform
    when u is, and every row has exactly one value in each stratum [j / k, (j + 1) / k).

    >>> rotated_strata(torch.tensor([0.1], dtype=torch.float64), 4).tolist()
    [[0.1, 0.35, 0.6, 0.85]]
    """
    shift = torch.arange(k, dtype=torch.float64, device=u.device) / k
    return torch.remainder(u.to(torch.float64)[:, None] + shift, 1.0)
