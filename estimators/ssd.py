"""Stein Score Distillation (SteinDreamer), in three forms (``SSDConfig.form``):

    S(phi) = eps phi(x_t) - sigma_t grad_{x_t} phi(x_t)        (estimators.stein)

    paper     G = w (eps_hat - mu (.) S(phi_b)),          phi_b = scale * phi_base
              the paper's pure form: the baseline replaces SDS's eps entirely
    additive  G = w (eps_hat - eps - mu (.) S(phi_b))     SDS plus the baseline's control
              variate with its own coefficient (mu_init 0: starts as SDS)
    offset    G = w (eps_hat - mu (.) S(offset + phi_b))  phi = 1 + lambda phi_base keeps the
              SDS term inside one control variate (mu_init 1)

E_eps[S] = 0 for any phi, so every form has the mean of plain score distillation w E[eps_hat]
whatever phi and mu are (mu from past samples only). Identities: offset with phi = 1
(baseline constant, offset 1) and mu = 1 is SDS; additive with the constant baseline is SDS
for any mu (phi_b = 0). No gradient flows into theta through phi: G is a fixed image-space
direction. Measured in the world (2026-12-01): with one scalar mu the offset form is SDS up to
a scale (mu fits 0.87-0.92) and the paper form is 1.3-1.8 nats worse than SDS; the additive
form is never worse than SDS in expectation (mu -> the variance-minimising coefficient of
S(phi_b) on top of SDS), which is why it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

SSDForm = Literal["paper", "additive", "offset"]
SSD_FORMS: tuple[str, ...] = ("paper", "additive", "offset")


@dataclass
class SSDConfig(GuidanceConfig):
    """SSD knobs. Default: the additive form (SDS - mu S(phi_depth)), mu learned, scalar,
    starting at 0. ``mu_init`` None means the form's neutral value (0 additive, 1 otherwise);
    ``baseline_offset`` is used by the offset form only."""

    form: SSDForm = "additive"
    baseline: BaselineName = "depth_pearson"
    baseline_offset: float = 1.0
    baseline_scale: float = 1.0
    mu: MuStrategy = "learned"
    mu_shape: MuShape = "scalar"
    mu_init: float | None = None
    mu_lr: float = 1e-2
    mu_ema: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.form not in SSD_FORMS:
            raise ValueError(f"form must be one of {SSD_FORMS}")
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
        mu_init = config.mu_init
        if mu_init is None:
            mu_init = 0.0 if config.form == "additive" else 1.0
        self.mu = ControlCoefficient(
            config.mu, config.mu_shape, mu_init, config.mu_lr, config.mu_ema, device
        )
        self.render_outputs = ("normal",) if config.baseline == "normal" else ()

    def control_variate(self, x_t, t, eps, prior, ctx: EstimatorContext):
        """S [B, ...] and phi [B] at this step's x_t and eps (phi of the form: the offset
        form adds ``baseline_offset``; paper and additive use scale * phi_base only)."""
        offset = self.config.baseline_offset if self.config.form == "offset" else 0.0
        phi_fn = baseline_function(
            self.config.baseline,
            t,
            ctx,
            ctx.render,
            self.geometry,
            offset,
            self.config.baseline_scale,
        )
        _, sigma = alpha_sigma(prior.alphas_cumprod, t)
        return stein_control_variate(phi_fn, x_t, eps, sigma.to(x_t.dtype), return_phi=True)

    def grad(self, x, t, eps, prior, ctx):
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, self.config)
        s, phi = self.control_variate(x_t, t, eps, prior, ctx)
        mu = self.mu.value(s)
        if self.config.form == "additive":
            # the coefficient is fitted to the SDS residual a = w (eps_hat - eps)
            g = w * (eps_hat - eps - mu * s)
            score = w * (eps_hat - eps)
        else:
            g = w * (eps_hat - mu * s)
            score = w * eps_hat
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
        return EstimatorOutput(
            g, diagnostics, {"score": score, "control": w * s}, score_term=w * eps_hat
        )

    def update(self, x, prior, ctx, output: EstimatorOutput | None = None):
        """Feed this step's sample (``output.update_inputs``: w eps_hat and w S) to mu, used
        from the next step on."""
        if output is None:
            raise ValueError("SSD.update needs this step's grad output (mu learns from it)")
        self.mu.observe(output.update_inputs["score"], output.update_inputs["control"])

    def probe_flags(self) -> dict[str, float]:
        """``mu_uninformed`` = 1 while mu has seen no sample (a learned or optimal mu at its
        init value: SSD's step-0 probe is not SSD yet)."""
        return {"mu_uninformed": float(self.config.mu != "fixed" and self.mu.mu is None)}

    def network_evaluations(self) -> dict[str, int]:
        return {} if self.geometry is None else {"depth": self.geometry.n_evals}

    def state_dict(self) -> dict:
        evals = None if self.geometry is None else self.geometry.n_evals
        return {"mu": self.mu.state_dict(), "n_evals_depth": evals}

    def load_state_dict(self, state: dict) -> None:
        self.mu.load_state_dict(state["mu"])
        if self.geometry is not None and state.get("n_evals_depth") is not None:
            self.geometry.n_evals = int(state["n_evals_depth"])
