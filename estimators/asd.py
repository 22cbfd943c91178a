"""Asynchronous Score Distillation (ASD, ScaleDreamer, Ma et al. 2024;
theEricMa/ScaleDreamer@23f433f ``threestudio/models/guidance/stable_diffusion_asd_guidance.py``,
``configs/single-prompt_benchmark/asd_sd_nerf.yaml``):

    G = w(t) (cfg(x_t, t) - eps_y(x_{t+dt}, t + dt)),
    x_t = alpha_t x + sigma_t eps,  x_{t+dt} = alpha_{t+dt} x + sigma_{t+dt} eps (same eps),
    dt = floor(min(dt_scale (t - t_min), T - 1 - t) u),  u ~ U(0, 1) per image,

with t_min the schedule's current lower bound in timesteps and u drawn from the estimator's
stream (ctx.generator). As the original's ``get_t_plus``, the room above t is clamped *before*
the draw (so t + dt <= T - 1 and dt stays uniform on its range; clamping after the draw
would pile the mass of large t on T - 1). The conditional prediction at a later timestep
replaces the noise: its bias against eps_y(x_t, t) is small while it shares most of its noise
with cfg(x_t, t). The no-LoRA variant (the paper's default for text-to-3D at scale).

With dt = 0 (dt_scale = 0): G = w (cfg(x_t, t) - eps_y(x_t, t)) = (s - 1) w (eps_y - eps_0)
in the diffusers form, the guidance term alone (zero at s = 1; tests/test_family.py).

CFG convention: diffusers, cfg = eps_0 + s (eps_y - eps_0), s = 7.5 in the paper, with
perp-neg (``guidance_perp_neg: -0.5``: threestudio's view weights times 0.5, configs/asd.yaml).
Its schedules: t_min 0.5 -> 0.02 and t_max 0.98 -> 0.5 linearly over the run's 25,000 steps.
NFE per step: cfg (2, 1 without guidance, 4 with perp-neg) + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.schedule import add_noise
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import broadcast_weight, cfg_nfe, grad_norm, guided


@dataclass
class ASDConfig(GuidanceConfig):
    """World defaults (s = 1); the paper's s = 7.5 is configs/asd.yaml."""

    dt_scale: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.dt_scale <= 1.0:
            raise ValueError(f"dt_scale must lie in [0, 1], got {self.dt_scale}")


def later_timestep(
    config: ASDConfig, t: torch.Tensor, u: torch.Tensor, step: int, num_train_timesteps: int
) -> torch.Tensor:
    """t + dt [B] for uniforms u [B] (module docstring: the room clamped before the draw).

    >>> cfg = ASDConfig(dt_scale=0.1, t_min=0.02)
    >>> later_timestep(cfg, torch.tensor([980, 500]), torch.tensor([0.999, 0.5]), 0, 1000).tolist()
    [998, 524]
    """
    t_min = config.timesteps.bounds(step, num_train_timesteps)[0]
    room = (config.dt_scale * (t - t_min).clamp_min(0).double()).clamp(
        max=(num_train_timesteps - 1 - t).double()
    )
    return (t + torch.floor(room * u).to(torch.int64)).clamp(max=num_train_timesteps - 1)


class ASD(GradientEstimator):
    name = "asd"

    def __init__(self, config: ASDConfig) -> None:
        self.config = config

    @classmethod
    def nfe_per_step(cls, config: ASDConfig, t: int | None = None) -> dict[str, int]:
        return {"prior": cfg_nfe(config) + 1}

    def later_timestep(self, t: torch.Tensor, ctx, num_train_timesteps: int) -> torch.Tensor:
        """t + dt [B] (see module docstring); draws B uniforms from ctx.generator."""
        u = torch.rand(t.shape[0], generator=ctx.generator, dtype=torch.float64).to(t.device)
        return later_timestep(self.config, t, u, ctx.step, num_train_timesteps)

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        t2 = self.later_timestep(t, ctx, prior.num_train_timesteps)
        with torch.no_grad():
            x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
            x_t2 = add_noise(x.detach(), t2, eps, prior.alphas_cumprod)
            eps_hat = guided(prior, x_t, t, ctx, cfg)
            eps_later = prior.predict_branch(x_t2, t2, ctx, conditional=True)
        g = broadcast_weight(t, prior, cfg.weighting, x) * (eps_hat - eps_later)
        return EstimatorOutput(g, {"grad_norm": grad_norm(g), "dt": float((t2 - t).float().mean())})
