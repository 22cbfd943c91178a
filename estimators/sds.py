"""Score Distillation Sampling (DreamFusion): G = w(t) (eps_hat(x_t, t, y) - eps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.interfaces import DiffusionPrior
from core.schedule import add_noise
from core.weighting import timestep_weight
from estimators.base import (
    EstimatorContext,
    EstimatorOutput,
    GradientEstimator,
    GuidanceConfig,
)


def guided_residual_terms(
    x: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    prior: DiffusionPrior,
    ctx: EstimatorContext,
    guidance: GuidanceConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared first half of every estimator: x_t, eps_hat(x_t, t, y) and w(t) shaped [B,1,...]."""
    with torch.no_grad():
        x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
        eps_hat = prior.predict_noise(x_t, t, ctx, guidance.guidance_scale, guidance.cfg_mode)
    w = timestep_weight(t, prior.alphas_cumprod, guidance.weighting)
    return x_t, eps_hat, w.view((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)


@dataclass
class SDSConfig(GuidanceConfig):
    """SDS knobs: exactly the shared guidance / weighting / timestep config."""


class SDS(GradientEstimator):
    name = "sds"
    mean_of = "sds"

    def __init__(self, guidance: GuidanceConfig) -> None:
        self.guidance = guidance

    def grad(self, x, t, eps, prior, ctx):
        _, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, self.guidance)
        g = w * (eps_hat - eps)
        diagnostics = {"grad_norm": float(g.flatten(1).norm(dim=1).mean())}
        return EstimatorOutput(g, diagnostics, score_term=w * eps_hat)
