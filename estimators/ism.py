"""Interval Score Matching (ISM, LucidDreamer, Liang et al. 2024; EnVision-Research/LucidDreamer
``guidance/sd_utils.py``, ``train_step`` and ``add_noise_with_cfg``).

Per image, with t the harness's timestep and Delta the interval (annealed ``delta_t_start``
-> ``delta_t`` over ``delta_anneal_steps``):

    s      = max(t - Delta, 0),   t_0 = max(s - xs_inv_steps xs_delta_t, 0)
    x_{t0} = alpha_{t0} x + sigma_{t0} eps                          (the harness's eps)
    x_s    = DDIM inversion of x_{t0} with eps_0, rungs t0, min(t0 + xs_delta_t, s), ..., s
    e_s    = eps_0(x_s, s),   x_t = ddim_step(x_s, e_s, s -> t)     (one more inversion rung)
    G      = w(t) (cfg(x_t, t) - e_s),   w = ``ism`` = sqrt((1 - abar_t) / abar_t)

(core/ddim.py). With ``xs_inv_steps`` = 0, x_s = alpha_s x + sigma_s eps and ISM is SDS at
the one-step denoised x' = (x_s - sigma_s e_s) / alpha_s with the deterministic noise e_s and
ISM's weighting (tests/test_family.py).

CFG convention: diffusers, cfg = eps_0 + s (eps_y - eps_0), s = 7.5; the inversion is
unconditional (LucidDreamer's ``denoise_guidance_scale`` 1 on the empty prompt). Paper t range
[0.02, 0.5] warmed to 0.98 (the preset). NFE per step: xs_inv_steps + 1 + cfg (8 by default).
Deviations: the number of inversion rungs is fixed (rungs of zero length when s is small
cost an NFE and move nothing), and x_{t0} uses the harness's eps (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.ddim import abar_at, ddim_invert, ddim_step
from core.schedule import add_noise
from core.weighting import Weighting
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import broadcast_weight, cfg_nfe, grad_norm, guided, linear_anneal


@dataclass
class ISMConfig(GuidanceConfig):
    """World defaults (s = 1); the paper's settings are configs/ism.yaml."""

    weighting: Weighting = "ism"
    xs_inv_steps: int = 5
    xs_delta_t: int = 200
    delta_t: int = 80
    delta_t_start: int = 100
    delta_anneal_steps: int = 1500

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.xs_inv_steps < 0 or self.xs_delta_t < 1:
            raise ValueError("need xs_inv_steps >= 0 and xs_delta_t >= 1")
        if self.delta_t < 0 or self.delta_t_start < 0 or self.delta_anneal_steps < 0:
            raise ValueError("delta_t, delta_t_start and delta_anneal_steps must be >= 0")

    def interval(self, step: int) -> int:
        return round(linear_anneal(self.delta_t_start, self.delta_t, step, self.delta_anneal_steps))


class ISM(GradientEstimator):
    name = "ism"

    def __init__(self, config: ISMConfig) -> None:
        self.config = config

    @classmethod
    def nfe_per_step(cls, config: ISMConfig, t: int | None = None) -> dict[str, int]:
        return {"prior": config.xs_inv_steps + 1 + cfg_nfe(config)}

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        ac = prior.alphas_cumprod

        def eps_uncond(x_k, t_k):
            return prior.predict_branch(x_k, t_k, ctx, conditional=False)

        with torch.no_grad():
            s = (t - cfg.interval(ctx.step)).clamp_min(0)
            t0 = (s - cfg.xs_inv_steps * cfg.xs_delta_t).clamp_min(0)
            x_s = add_noise(x.detach(), t0, eps, ac)
            rungs = [torch.minimum(t0 + k * cfg.xs_delta_t, s) for k in range(cfg.xs_inv_steps)]
            x_s, _ = ddim_invert(x_s, [*rungs, s], eps_uncond, ac) if rungs else (x_s, None)
            e_s = eps_uncond(x_s, s)
            x_t = ddim_step(x_s, e_s, abar_at(ac, s), abar_at(ac, t))
            eps_hat = guided(prior, x_t, t, ctx, cfg)
        g = broadcast_weight(t, prior, cfg.weighting, x) * (eps_hat - e_s)
        return EstimatorOutput(
            g, {"grad_norm": grad_norm(g), "interval": float((t - s).float().mean())}
        )
