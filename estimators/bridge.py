"""SDS-Bridge (McAllister et al. 2024, davidmcall/SDS-Bridge,
``threestudio-sds-bridge/guidance/sds_bridge_guidance.py``): two stages.

    step <  switch_step:  G = w(t) (cfg(x_t, t) - eps)                      (SDS)
    step >= switch_step:  G = w(t) (eps(x_t; y) - eps(x_t; y_src))

with y_src = y + ", oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad
structure, noisy, malformed" (BRIDGE_NEGATIVE; the prior's negative branch, the world: its
degraded distribution). Stage 2 bridges the source distribution (what SDS produces) to the
target one; NFE 2 in both stages (stage 1: the CFG branches).

CFG convention: stage 1 uses ``cfg_mode`` / ``guidance_scale`` (the paper: diffusers form,
eps_0 + s (eps_y - eps_0)); stage 2 has no guidance. Deviation: the paper's target prompt
is y + "."; here it is the conditional branch y itself (with its view suffix on SD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.schedule import add_noise
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import (
    BRIDGE_NEGATIVE,
    broadcast_weight,
    cfg_nfe,
    grad_norm,
    guided,
    require_negative,
)


@dataclass
class BridgeConfig(GuidanceConfig):
    switch_step: int = 150
    negative_prompt: str = BRIDGE_NEGATIVE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.switch_step < 0:
            raise ValueError("switch_step must be >= 0")


class Bridge(GradientEstimator):
    name = "bridge"

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config

    @classmethod
    def nfe_per_step(cls, config: BridgeConfig, t: int | None = None, step: int = 0):
        return {"prior": cfg_nfe(config) if step < config.switch_step else 2}

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        w = broadcast_weight(t, prior, cfg.weighting, x)
        with torch.no_grad():
            x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
        if ctx.step < cfg.switch_step:
            g = w * (guided(prior, x_t, t, ctx, cfg) - eps)
            return EstimatorOutput(g, {"grad_norm": grad_norm(g), "stage": 1.0})
        require_negative(prior, self.name)
        with torch.no_grad():
            eps_tgt = prior.predict_branch(x_t, t, ctx, conditional=True)
            eps_src = prior.predict_negative(x_t, t, ctx, cfg.negative_prompt)
        g = w * (eps_tgt - eps_src)
        return EstimatorOutput(g, {"grad_norm": grad_norm(g), "stage": 2.0})
