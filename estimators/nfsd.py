"""Noise-Free Score Distillation (NFSD, Katzir et al. 2023, arXiv 2310.17590, Eq. 6):

    G = w(t) (delta_D + s delta_C),   delta_C = eps_y - eps_0,
    delta_D = eps_0                  if t < t_threshold (200)
            = eps_0 - eps_neg        otherwise,

all at x_t = alpha_t x + sigma_t eps; eps_neg is the prior's negative branch under the fixed
negative prompt (NFSD_NEGATIVE; the world: its degraded distribution). No noise is
subtracted: the noise term is what delta_D avoids. s = 7.5 in the paper.

CFG convention: NFSD's own (delta_C scaled by s, no conditional term; ``cfg_mode`` unused).
No public code (project page orenkatzir/nfsd); this follows Eq. 6 as the paper and the
threestudio-style ``compute_grad_nfsd`` re-implementations write it. NFE per step: 3 (the
negative branch is evaluated at every t so the cost does not depend on t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.schedule import add_noise
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import NFSD_NEGATIVE, broadcast_weight, grad_norm, require_negative


@dataclass
class NFSDConfig(GuidanceConfig):
    """World defaults (s = 1); the paper's s = 7.5 is configs/nfsd.yaml."""

    t_threshold: int = 200
    negative_prompt: str = NFSD_NEGATIVE


class NFSD(GradientEstimator):
    name = "nfsd"

    def __init__(self, config: NFSDConfig) -> None:
        self.config = config

    @classmethod
    def nfe_per_step(cls, config: NFSDConfig, t: int | None = None) -> dict[str, int]:
        return {"prior": 3}

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        require_negative(prior, self.name)
        with torch.no_grad():
            x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
            eps_y = prior.predict_branch(x_t, t, ctx, conditional=True)
            eps_0 = prior.predict_branch(x_t, t, ctx, conditional=False)
            eps_neg = prior.predict_negative(x_t, t, ctx, cfg.negative_prompt)
            small = (t < cfg.t_threshold).view((-1,) + (1,) * (x.dim() - 1))
            delta_d = torch.where(small, eps_0, eps_0 - eps_neg)
            delta_c = eps_y - eps_0
        g = broadcast_weight(t, prior, cfg.weighting, x) * (delta_d + cfg.guidance_scale * delta_c)
        return EstimatorOutput(
            g, {"grad_norm": grad_norm(g), "frac_small_t": float(small.float().mean())}
        )
