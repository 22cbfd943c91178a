"""Classifier Score Distillation (CSD, Yu et al. 2023):

    G = k w(t) (c_y eps_y + c_0 eps_0 + c_neg eps_neg + c_eps eps) / ||.||_2   (per image)

at x_t = alpha_t x + sigma_t eps. ``normalize`` divides each image's combination by its L2
norm (CSD's code normalises the gradient); k = ``scale``. Defaults as the paper's code
(CVMI-Lab/Classifier-Score-Distillation, guidance ``deep_floyd_simple_guidance.py``,
``configs/csd-if.yaml``): c_y = 1, c_0 = -1 -> 0 and c_neg = 0 -> -1 linearly over
``coef_anneal_steps`` = 5000 steps, c_eps = 0: it starts as the pure classifier score
eps_y - eps_0 and ends as eps_y - eps_neg.

CFG convention: none of its own; the coefficients *are* the convention. The diffusers form
with scale s is c_y = s, c_0 = 1 - s, c_neg = 0, c_eps = -1 without normalisation: that is
SDS exactly (bit for bit: the sum is evaluated as (c_y + c_0 + c_neg) eps_0 + c_y (eps_y -
eps_0) + c_neg (eps_neg - eps_0) + c_eps eps, tests/test_family.py). The inherited
``guidance_scale`` / ``cfg_mode`` are unused.

NFE per step: 1 (eps_y) + 1 if c_0 or its final value is non-zero + 1 if c_neg or its final
value is non-zero (3 with the defaults). Deviation: the original applies the gradient with
threestudio's ``0.5 mse(reduction="sum") / B``, which is ours; no gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.schedule import add_noise
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import (
    NFSD_NEGATIVE,
    broadcast_weight,
    grad_norm,
    linear_anneal,
    require_negative,
)


@dataclass
class CSDConfig(GuidanceConfig):
    """CSD coefficients (see module docstring); ``*_final`` are reached after
    ``coef_anneal_steps`` (None: constant)."""

    c_y: float = 1.0
    c_0: float = -1.0
    c_0_final: float | None = 0.0
    c_neg: float = 0.0
    c_neg_final: float | None = -1.0
    c_eps: float = 0.0
    coef_anneal_steps: int = 300  # the paper: 5000 (configs/csd.yaml)
    normalize: bool = True
    scale: float = 1.0
    negative_prompt: str = NFSD_NEGATIVE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.coef_anneal_steps < 0:
            raise ValueError("coef_anneal_steps must be >= 0")

    def coefficients(self, step: int) -> tuple[float, float, float]:
        """(c_y, c_0, c_neg) at ``step``."""
        c_0_end = self.c_0 if self.c_0_final is None else self.c_0_final
        c_neg_end = self.c_neg if self.c_neg_final is None else self.c_neg_final
        return (
            self.c_y,
            linear_anneal(self.c_0, c_0_end, step, self.coef_anneal_steps),
            linear_anneal(self.c_neg, c_neg_end, step, self.coef_anneal_steps),
        )

    @property
    def uses_uncond(self) -> bool:
        return self.c_0 != 0.0 or (self.c_0_final or 0.0) != 0.0

    @property
    def uses_negative(self) -> bool:
        return self.c_neg != 0.0 or (self.c_neg_final or 0.0) != 0.0


class CSD(GradientEstimator):
    name = "csd"

    def __init__(self, config: CSDConfig) -> None:
        self.config = config

    @classmethod
    def nfe_per_step(cls, config: CSDConfig, t: int | None = None) -> dict[str, int]:
        return {"prior": 1 + int(config.uses_uncond) + int(config.uses_negative)}

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        if cfg.uses_negative:
            require_negative(prior, self.name)
        c_y, c_0, c_neg = cfg.coefficients(ctx.step)
        with torch.no_grad():
            x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
            eps_y = prior.predict_branch(x_t, t, ctx, conditional=True)
            if cfg.uses_uncond:
                eps_0 = prior.predict_branch(x_t, t, ctx, conditional=False)
                combo = (c_y + c_0 + c_neg) * eps_0 + c_y * (eps_y - eps_0)
            else:
                eps_0, combo = None, c_y * eps_y
            if cfg.uses_negative:
                eps_neg = prior.predict_negative(x_t, t, ctx, cfg.negative_prompt)
                combo = combo + c_neg * (eps_neg if eps_0 is None else eps_neg - eps_0)
            if cfg.c_eps != 0.0:
                combo = combo + cfg.c_eps * eps
        g = broadcast_weight(t, prior, cfg.weighting, x) * combo
        if cfg.normalize:
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (x.dim() - 1))
        g = cfg.scale * g
        return EstimatorOutput(g, {"grad_norm": grad_norm(g), "c_0": c_0, "c_neg": c_neg})
