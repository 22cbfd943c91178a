"""SDS-Bridge (McAllister et al. 2024, davidmcall/SDS-Bridge@240e06e,
``threestudio-sds-bridge/guidance/sds_bridge_guidance.py``, ``configs/sds-bridge.yaml``): two
stages.

    step <  switch_step:  G = w(t) (cfg(x_t, t) - eps)               (SDS; w: ``weighting``)
    step >= switch_step:  G = w2(t) (eps(x_t; y) - eps(x_t; y_src))  (``stage_two_weighting``)

with y_src = y + ", oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad
structure, noisy, malformed" + the camera's view suffix (BRIDGE_NEGATIVE; the prior's negative
branch, the world: its degraded distribution). Stage 2 bridges the source distribution (what
SDS produces) to the target one; NFE 2 in both stages (stage 1: the CFG branches).

The original's weighting: phase 1 multiplies by (1 - abar_t) inside the guidance whatever
``weighting_strategy`` says (the sds weighting here), phase 2 by the config's
``weighting_strategy: uniform`` (w2 = 1: ``stage_two_weighting`` defaults to ``uniform``).
Its config: guidance 100 (diffusers form), t_max 0.98 dropped to 0.5 at step 5,000, stage two
from step 20,000 of 25,000 (configs/bridge.yaml).

CFG convention: stage 1 uses ``cfg_mode`` / ``guidance_scale`` (the original: diffusers form
eps_0 + s (eps_y. - eps_0), s = 100); stage 2 has no guidance. Kept deviation: the original's
target prompt is y + ", ." (with the view suffix); here it is the conditional branch y with
its view suffix (the world has no analogue of the trailing ", .").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.schedule import add_noise
from core.weighting import Weighting
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
    #: stage two's w(t): the original's ``weighting_strategy: uniform`` (no weighting)
    stage_two_weighting: Weighting = "uniform"

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
        with torch.no_grad():
            x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
        if ctx.step < cfg.switch_step:
            w = broadcast_weight(t, prior, cfg.weighting, x)
            g = w * (guided(prior, x_t, t, ctx, cfg) - eps)
            return EstimatorOutput(g, {"grad_norm": grad_norm(g), "stage": 1.0})
        require_negative(prior, self.name)
        with torch.no_grad():
            eps_tgt = prior.predict_branch(x_t, t, ctx, conditional=True)
            eps_src = prior.predict_negative(x_t, t, ctx, cfg.negative_prompt)
        g = broadcast_weight(t, prior, cfg.stage_two_weighting, x) * (eps_tgt - eps_src)
        return EstimatorOutput(g, {"grad_norm": grad_norm(g), "stage": 2.0})
