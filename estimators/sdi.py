"""Score Distillation via Inversion (SDI, Lukoianov et al. 2024; threestudio
``models/guidance/stable_diffusion_sdi_guidance.py``, ``configs/sdi.yaml``).

Instead of a random eps, x_t comes from DDIM inversion of the render (core/ddim.py) with the
guided prediction at ``inversion_guidance_scale`` (-7.5) and stochastic inversion noise
(eta = 0.3, from ctx.generator), on the "leading" ladder of ``inversion_n_steps`` = 10
(rungs 1, 101, ..., 901 below t, preceded by the clean image) plus a last rung
t + Delta, Delta = floor(u T / n), u ~ U(0, 1). With x_inv the result,

    eps_inv = (x_inv - alpha_t x) / sigma_t              (the noise remapped to t)
    x0_hat  = (x_inv - sigma_t cfg(x_inv, t)) / alpha_t
    G       = x - x0_hat = (sigma_t / alpha_t) (cfg(x_inv, t) - eps_inv)

SDI shares one t across the batch (t[0], as the original) and, with ``t_anneal`` (the
paper), replaces the harness's t by threestudio's deterministic linear schedule
(``update_step``: both percentages set to (max - min)(1 - step / trainer_max_steps) + min)

    t = int(T (t_end + (t_start - t_end) (1 - min(1, step / t_anneal_steps)))),

0.98 -> 0.25 (sdi.yaml's max/min_step_percent; t = 797 at step 2,500 of 10,000). The
harness's eps is not used.

Gradient injection scale: threestudio applies G with
``0.5 mse(latents, latents - G, reduction="mean") / B``, i.e. G / (B numel) per element, where
every other threestudio guidance (and this harness) uses ``reduction="sum"`` (G itself).
``injection = "mean"`` reproduces it (configs/sdi.yaml); the default ``"sum"`` keeps SDI on
the family's scale (with Adam the two differ only through Adam's eps and the other losses;
on the world a 1 / (B numel) gradient would leave the other methods' learning rates
meaningless for SDI).

CFG convention: threestudio's dreamfusion form eps_y + s (eps_y - eps_0) for both the
inversion (s = -7.5) and the estimate (s = 7.5); with ``perp_neg`` (sdi.yaml turns it on)
threestudio's perp-neg branch, which is the diffusers form eps_0 + s (e_pos + perp terms),
for both. NFE per step: cfg(inversion) (rungs - 1) + cfg, ~24 at t = 0.98 T (x 2 with
perp-neg). Kept deviation: threestudio's first inversion rung (timestep -99, the clean image
at the inverse scheduler's abar_0 and the UNet evaluated at -99) is here the clean image with
abar = 1 and the network at t = 0 (3-5% on the first step's x0 estimate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from core.ddim import ddim_invert
from core.guidance import CFGMode
from core.schedule import alpha_sigma
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import cfg_nfe, grad_norm, guided


@dataclass
class SDIConfig(GuidanceConfig):
    """World defaults (no guidance: dreamfusion s = 0 in the estimate and the inversion);
    the paper's s = 7.5, inversion -7.5 are configs/sdi.yaml."""

    cfg_mode: CFGMode = "dreamfusion"
    guidance_scale: float = 0.0
    inversion_guidance_scale: float = 0.0
    inversion_n_steps: int = 10
    inversion_eta: float = 0.3
    t_anneal: bool = True
    t_start: float = 0.98
    t_end: float = 0.25
    t_anneal_steps: int = 300
    #: "sum": G as every other method; "mean": threestudio's reduction="mean", G / (B numel)
    injection: Literal["sum", "mean"] = "sum"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inversion_n_steps < 1 or self.inversion_eta < 0 or self.t_anneal_steps < 1:
            raise ValueError("need inversion_n_steps >= 1, inversion_eta >= 0, t_anneal_steps >= 1")
        if not 0.0 <= self.t_end <= self.t_start <= 1.0:
            raise ValueError("need 0 <= t_end <= t_start <= 1")
        if self.injection not in ("sum", "mean"):
            raise ValueError(f"injection must be 'sum' or 'mean', got {self.injection!r}")


def annealed_timestep(config: SDIConfig, step: int, num_train_timesteps: int) -> int:
    """threestudio's linear SDI schedule (module docstring).

    >>> annealed_timestep(SDIConfig(t_anneal_steps=10000), 2500, 1000)
    797
    """
    frac = min(1.0, step / config.t_anneal_steps)
    percent = (config.t_start - config.t_end) * (1.0 - frac) + config.t_end
    return min(int(num_train_timesteps * percent), num_train_timesteps - 1)


def injection_factor(config: SDIConfig, x: torch.Tensor) -> float:
    """1 (``sum``) or 1 / (B numel) = 1 / x.numel() (``mean``: threestudio's SDI) for a batch
    x [B, ...]: with the harness's 0.5 ||x - (x - G)||^2 / B the gradient on x is then
    G / (B^2 numel), the gradient of threestudio's 0.5 mse(x, x - G, "mean") / B."""
    return 1.0 if config.injection == "sum" else 1.0 / x.numel()


def leading_rungs(t: int, n_steps: int, num_train_timesteps: int, offset: int = 1) -> list[int]:
    """The inversion rungs below t: [r_0 - T / n, r_0, r_1, ...] with r_k = k T / n + offset
    < t (diffusers' "leading" spacing; the first rung is < 0, i.e. the clean image).

    >>> leading_rungs(350, 10, 1000)
    [-99, 1, 101, 201, 301]
    """
    ratio = num_train_timesteps // n_steps
    rungs = [k * ratio + offset for k in range(n_steps) if k * ratio + offset < t]
    rungs = rungs or [offset]
    return [rungs[0] - ratio, *rungs]


class SDI(GradientEstimator):
    name = "sdi"

    def __init__(self, config: SDIConfig) -> None:
        self.config = config

    def timestep(self, t: torch.Tensor, step: int, num_train_timesteps: int) -> int:
        cfg = self.config
        if not cfg.t_anneal:
            return int(t[0])
        return annealed_timestep(cfg, step, num_train_timesteps)

    @classmethod
    def nfe_per_step(cls, config: SDIConfig, t: int | None = None) -> dict[str, int]:
        """At timestep t (None: the worst case t = T - 1)."""
        n_rungs = len(leading_rungs(999 if t is None else t, config.inversion_n_steps, 1000))
        inv = cfg_nfe(dataclasses.replace(config, guidance_scale=config.inversion_guidance_scale))
        return {"prior": inv * n_rungs + cfg_nfe(config)}

    def grad(self, x, t, eps, prior, ctx):
        del eps  # SDI's noise comes from inversion
        cfg = self.config
        T = prior.num_train_timesteps
        t_used = self.timestep(t, ctx.step, T)
        n = x.shape[0]
        u = float(torch.rand((), generator=ctx.generator, dtype=torch.float64))
        last = min(t_used + int(u * T // cfg.inversion_n_steps), T - 1)
        rungs = [*leading_rungs(t_used, cfg.inversion_n_steps, T), last]
        ladder = [torch.full((n,), r, dtype=torch.int64, device=x.device) for r in rungs]

        inv_cfg = dataclasses.replace(cfg, guidance_scale=cfg.inversion_guidance_scale)

        def eps_inv_fn(x_k, t_k):
            return guided(prior, x_k, t_k, ctx, inv_cfg)

        tt = ladder[0].clone().fill_(t_used)
        shape = (-1,) + (1,) * (x.dim() - 1)
        with torch.no_grad():
            x0 = x.detach()
            x_inv, _ = ddim_invert(
                x0, ladder, eps_inv_fn, prior.alphas_cumprod, cfg.inversion_eta, ctx.generator
            )
            alpha, sigma = (
                v.view(shape).to(x.dtype) for v in alpha_sigma(prior.alphas_cumprod, tt)
            )
            eps_hat = guided(prior, x_inv, tt, ctx, cfg)
            x0_hat = (x_inv - sigma * eps_hat) / alpha
            eps_inv = (x_inv - alpha * x0) / sigma
        g = (x0 - x0_hat) * injection_factor(cfg, x)
        return EstimatorOutput(
            g,
            {
                "grad_norm": grad_norm(g),
                "t_used": float(t_used),
                "eps_inv_std": float(eps_inv.std()),
            },
        )
