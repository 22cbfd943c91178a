"""The world's Bayes depth / normal estimator: a differentiable stand-in for MiDaS/DPT on
noisy input.

    D(x_t) = E[d_i | x_t, y] = sum_i r_i(x_t) d_i,   N(x_t) = normalise(sum_i r_i(x_t) n_i)

with r_i the posterior responsibilities of the analytic prior's conditional mixture (same
references, same view-aware weights), so D sees exactly what the prior sees.
"""

from __future__ import annotations

from typing import Protocol

import torch

from core.interfaces import GeometryEstimator, PriorContext


class PosteriorExpectation(Protocol):
    """What the estimator needs of the world prior (``world.prior.WorldPrior``, which builds it:
    this module does not import the prior): E[v_i | x_t, y] of the prompt's reference ``field``
    ('depth' or 'normal') under the conditional mixture weights, [B, Dv]."""

    def posterior_expectation(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, field: str
    ) -> torch.Tensor: ...


class WorldBayesGeometry(GeometryEstimator):
    def __init__(self, prior: PosteriorExpectation) -> None:
        self.prior = prior
        self.n_evals = 0

    def depth(self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext) -> torch.Tensor:
        self.n_evals += x_t.shape[0]
        b, _, h, w = x_t.shape
        return self.prior.posterior_expectation(x_t, t, ctx, "depth").view(b, 1, h, w)

    def normal(self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext) -> torch.Tensor:
        self.n_evals += x_t.shape[0]
        b, _, h, w = x_t.shape
        mean = self.prior.posterior_expectation(x_t, t, ctx, "normal").view(b, 3, h, w)
        return torch.nn.functional.normalize(mean, dim=1, eps=1e-6)
