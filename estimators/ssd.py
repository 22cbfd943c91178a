"""Stein Score Distillation (SteinDreamer):  G = w(t) (eps_hat(x_t, t, y) - mu (.) S),
S = eps phi(x_t) - sigma_t grad_{x_t} phi(x_t)  (estimators.stein).

E_eps[S] = 0 for any phi, so SSD has the mean of plain score distillation w E[eps_hat]
whatever phi and mu are (mu from past samples only); phi = 1, mu = 1 gives S = eps, i.e. SDS.
No gradient flows into theta through phi: G is a fixed image-space direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.interfaces import GeometryEstimator
from core.schedule import alpha_sigma
from estimators.base import (
    EstimatorContext,
    EstimatorOutput,
    GradientEstimator,
    GuidanceConfig,
)
from estimators.baselines import BASELINES, BaselineName, baseline_function
from estimators.control_coefficient import ControlCoefficient, MuShape, MuStrategy
from estimators.sds import guided_residual_terms
from estimators.stein import stein_control_variate


@dataclass
class SSDConfig(GuidanceConfig):
    """SSD knobs. Default phi = 1 + phi_depth (keeps the SDS term), mu learned, scalar."""

    baseline: BaselineName = "depth_pearson"
    baseline_offset: float = 1.0
    baseline_scale: float = 1.0
    mu: MuStrategy = "learned"
    mu_shape: MuShape = "scalar"
    mu_init: float = 1.0
    mu_lr: float = 1e-2
    mu_ema: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}")
        if self.mu_lr <= 0 or not 0.0 <= self.mu_ema < 1.0:
            raise ValueError("need mu_lr > 0 and 0 <= mu_ema < 1")


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm() + 1e-12))


class SSD(GradientEstimator):
    name = "ssd"

    def __init__(
        self,
        config: SSDConfig,
        geometry: GeometryEstimator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.geometry = geometry
        self.mu = ControlCoefficient(
            config.mu, config.mu_shape, config.mu_init, config.mu_lr, config.mu_ema, device
        )
        self.render_outputs = ("normal",) if config.baseline == "normal" else ()

    def control_variate(self, x_t, t, eps, prior, ctx: EstimatorContext):
        """S [B, ...] and phi [B] at this step's x_t and eps."""
        phi_fn = baseline_function(
            self.config.baseline,
            t,
            ctx,
            ctx.render,
            self.geometry,
            self.config.baseline_offset,
            self.config.baseline_scale,
        )
        _, sigma = alpha_sigma(prior.alphas_cumprod, t)
        return stein_control_variate(phi_fn, x_t, eps, sigma.to(x_t.dtype), return_phi=True)

    def grad(self, x, t, eps, prior, ctx):
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, self.config)
        s, phi = self.control_variate(x_t, t, eps, prior, ctx)
        mu = self.mu.value(s)
        g = w * (eps_hat - mu * s)
        counts = {} if self.geometry is None else {"n_evals_depth": float(self.geometry.n_evals)}
        diagnostics = {
            **counts,
            "grad_norm": float(g.flatten(1).norm(dim=1).mean()),
            "phi": float(phi.mean()),
            "cv_norm": float(s.flatten(1).norm(dim=1).mean()),
            "mu_mean": float(mu.mean()),
            "mu_std": float(mu.std()) if mu.numel() > 1 else 0.0,
            "corr_eps_hat_cv": _corr(eps_hat, s),
            "corr_eps_cv": _corr(eps, s),
        }
        return EstimatorOutput(g, diagnostics, {"score": w * eps_hat, "control": w * s})

    def update(self, x, prior, ctx, output: EstimatorOutput | None = None):
        """Feed this step's sample (``output.update_inputs``: w eps_hat and w S) to mu, used
        from the next step on."""
        if output is None:
            raise ValueError("SSD.update needs this step's grad output (mu learns from it)")
        self.mu.observe(output.update_inputs["score"], output.update_inputs["control"])

    def network_evaluations(self) -> dict[str, int]:
        return {} if self.geometry is None else {"depth": self.geometry.n_evals}

    def state_dict(self) -> dict:
        evals = None if self.geometry is None else self.geometry.n_evals
        return {"mu": self.mu.state_dict(), "n_evals_depth": evals}

    def load_state_dict(self, state: dict) -> None:
        self.mu.load_state_dict(state["mu"])
        if self.geometry is not None and state.get("n_evals_depth") is not None:
            self.geometry.n_evals = int(state["n_evals_depth"])
