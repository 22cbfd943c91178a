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

``baseline=learned`` (estimators/learned_baseline.py): phi_b = scale * phi_psi, a network
fitted online (in ``update``, on this step's sample, used from the next step on) to minimise
||G||^2; ``learned_field=vector`` replaces S(phi) by the vector-field form S_i = eps_i f_i -
sigma d_i f_i. Its output starts at zero, so SSD starts as the form with the constant baseline.
mu multiplies the network's output like any baseline's; its neutral init is 1 here (in the
additive form mu = 0 would stop the network's gradient).

``baseline=posterior`` (estimators/posterior_field.py; priors with a closed-form posterior:
the world): the matrix-valued Stein fields of the prior's own posterior responsibilities,
S_post(beta) = -(alpha / sigma) sum_b a_b (sigma J_b eps - sigma^2 div J_b) / beta over the CFG
branches (J_b the Jacobian of branch b's x0-prediction under responsibilities tempered by
beta), one field per ``posterior_betas``, in the additive form

    G = w (eps_hat - eps - sum_f mu_{bin(t), f} S_post(beta_f)),

the coefficients per timestep bin (``posterior_t_bins``) fitted by least squares on past
samples (``mu=optimal``: ``BinnedLeastSquares``, EMA ``mu_ema``; 0 in a bin before its first
sample) or all ``mu_init`` (``mu=fixed``).

``baseline=posterior_mc`` (same priors): the posterior mean's own control variate. Each
branch's x0-prediction m_b depends on eps only through z = X eps, the references' projections
(core/stein_field.py); on the K <= ``posterior_mc_refs`` references that can carry weight,
chosen from the clean render x, t and the camera alone, the reduced mean h_b(eps) follows m_b,
and its mean hbar_b = E_eps[h_b] is a K-dimensional Gaussian integral, estimated from
``posterior_mc_draws`` draws of the step's estimator generator (never the current eps):

    G = w (eps_hat - eps - S_mc),   S_mc = -(alpha / sigma) sum_b a_b (h_b(eps) - hbar_b),

with coefficient 1 (``mu`` is not used). E[S_mc] = 0 over (eps, the draws) for any K; where
h_b = m_b, G = w (alpha / sigma)(x - sum_b a_b hbar_b): SDS's conditional mean E[G | c, t] up to
the draws' noise. For Gaussian eps every zero-mean function of eps is a Stein control variate
of the matrix-valued class, so S_mc is one, built from its mean rather than from its field.
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
from estimators.learned_baseline import LearnedDiagonal, LearnedField, LearnedSteinBaseline
from estimators.posterior_field import (
    BinnedLeastSquares,
    posterior_control_variate,
    subspace_control_variate,
    subspace_mean_image,
    subspace_means,
)
from estimators.sds import guided_residual_terms
from estimators.stein import stein_control_variate

SSDForm = Literal["paper", "additive", "offset"]
SSD_FORMS: tuple[str, ...] = ("paper", "additive", "offset")


@dataclass
class SSDConfig(GuidanceConfig):
    """SSD knobs. Default: the additive form (SDS - mu S(phi_depth)), mu learned, scalar,
    starting at 0. ``mu_init`` None means the form's neutral value (0 additive, 1 otherwise
    and for the learned baseline); ``baseline_offset`` is used by the offset form only.
    ``learned_*``: the learned baseline's field (scalar phi or vector field f), the vector
    field's Jacobian diagonal (exact: f affine in x_t; hutchinson: any f), its network's
    width, FiLM blocks, embedding size and Adam learning rate."""

    form: SSDForm = "additive"
    baseline: BaselineName = "depth_pearson"
    baseline_offset: float = 1.0
    baseline_scale: float = 1.0
    mu: MuStrategy = "learned"
    mu_shape: MuShape = "scalar"
    mu_init: float | None = None
    mu_lr: float = 1e-2
    mu_ema: float = 0.99
    learned_field: LearnedField = "scalar"
    learned_diagonal: LearnedDiagonal = "exact"
    learned_hidden: int = 16
    learned_blocks: int = 1
    learned_embed_dim: int = 32
    learned_lr: float = 1e-3
    posterior_betas: tuple[float, ...] = (0.3, 0.1, 0.03)
    posterior_t_bins: int = 10
    posterior_mc_draws: int = 256
    posterior_mc_refs: int = 32
    posterior_mc_nats: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.form not in SSD_FORMS:
            raise ValueError(f"form must be one of {SSD_FORMS}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}")
        if self.mu_lr <= 0 or not 0.0 <= self.mu_ema < 1.0:
            raise ValueError("need mu_lr > 0 and 0 <= mu_ema < 1")
        if self.learned_field not in ("scalar", "vector"):
            raise ValueError("learned_field must be 'scalar' or 'vector'")
        if self.learned_diagonal not in ("exact", "hutchinson"):
            raise ValueError("learned_diagonal must be 'exact' or 'hutchinson'")
        if self.learned_lr <= 0 or self.learned_hidden < 1 or self.learned_embed_dim < 2:
            raise ValueError("need learned_lr > 0, learned_hidden >= 1, learned_embed_dim >= 2")
        if self.learned_embed_dim % 2 or self.learned_blocks < 0:
            raise ValueError("need an even learned_embed_dim and learned_blocks >= 0")
        if not self.posterior_betas or min(self.posterior_betas) <= 0:
            raise ValueError("need posterior_betas, all > 0")
        if self.posterior_t_bins < 1:
            raise ValueError("need posterior_t_bins >= 1")
        if self.baseline == "posterior" and self.mu not in ("fixed", "optimal"):
            raise ValueError(
                "baseline 'posterior' fits its coefficients by least squares: mu "
                "must be 'optimal' (or 'fixed': every coefficient mu_init)"
            )
        if self.baseline in ("posterior", "posterior_mc") and self.form != "additive":
            raise ValueError(
                f"baseline {self.baseline!r} is a control variate for the additive form"
            )
        if self.posterior_mc_draws < 1 or self.posterior_mc_refs < 1:
            raise ValueError("need posterior_mc_draws >= 1 and posterior_mc_refs >= 1")
        if self.posterior_mc_nats <= 0:
            raise ValueError("need posterior_mc_nats > 0")
        if self.baseline == "posterior_mc" and self.perp_neg:
            raise ValueError("baseline 'posterior_mc' covers plain CFG only (perp_neg is set)")

    @property
    def neutral_mu(self) -> float:
        """mu_init when unset: 0 in the additive form (S(phi_b) added with weight 0: SDS),
        1 otherwise; 1 for the learned baseline (its output starts at 0 instead)."""
        return 0.0 if self.form == "additive" and self.baseline != "learned" else 1.0


def build_learned_baseline(
    config: SSDConfig, channels: int, generator: torch.Generator, device
) -> LearnedSteinBaseline:
    """The learned baseline of ``config`` for renders of ``channels`` channels."""
    return LearnedSteinBaseline(
        channels,
        generator,
        device,
        field=config.learned_field,
        diagonal=config.learned_diagonal,
        hidden=config.learned_hidden,
        blocks=config.learned_blocks,
        embed_dim=config.learned_embed_dim,
        lr=config.learned_lr,
    )


def camera_matrix(ctx: EstimatorContext, like: torch.Tensor) -> torch.Tensor:
    """The cameras' flattened 4x4 camera-to-world matrices [B, 16] (zeros without cameras)."""
    n = like.shape[0]
    if ctx.cameras is None:
        return torch.zeros(n, 16, dtype=like.dtype, device=like.device)
    return ctx.cameras.c2w.reshape(n, 16).to(dtype=like.dtype, device=like.device)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm() + 1e-12))


class SSD(GradientEstimator):
    name = "ssd"
    mean_of = "sds"  # E_eps[S] = 0: every form has SDS's mean (module doc)

    def __init__(
        self,
        config: SSDConfig,
        geometry: GeometryEstimator | None = None,
        device: torch.device | str = "cpu",
        learned: LearnedSteinBaseline | None = None,
    ) -> None:
        if (config.baseline == "learned") != (learned is not None):
            raise ValueError("pass a LearnedSteinBaseline exactly when baseline='learned'")
        self.config = config
        self.geometry = geometry
        self.learned = learned
        mu_init = config.neutral_mu if config.mu_init is None else config.mu_init
        self.mu = ControlCoefficient(
            config.mu, config.mu_shape, mu_init, config.mu_lr, config.mu_ema, device
        )
        self.render_outputs = ("normal",) if config.baseline == "normal" else ()
        self.posterior_mu = None
        if config.baseline == "posterior":
            self.posterior_mu = BinnedLeastSquares(
                len(config.posterior_betas), config.posterior_t_bins, config.mu_ema
            )

    @property
    def offset(self) -> float:
        """The constant part of phi: ``baseline_offset`` in the offset form, else 0."""
        return self.config.baseline_offset if self.config.form == "offset" else 0.0

    def control_variate(self, x_t, t, eps, prior, ctx: EstimatorContext, x=None):
        """S [B, ...] and phi [B] at this step's x_t and eps (phi of the form: the offset
        form adds ``baseline_offset``; paper and additive use scale * phi_base only). The
        learned baseline also reads the render x: S = offset eps + scale S_psi (S is linear
        in phi), its phi is the network's summary (phi, or the field's mean)."""
        offset = self.offset
        _, sigma = alpha_sigma(prior.alphas_cumprod, t)
        if self.learned is not None:
            s_psi, summary = self.learned.control_variate(
                x_t, eps, sigma.to(x_t.dtype), x, t, camera_matrix(ctx, x_t), ctx.generator
            )
            scale = self.config.baseline_scale
            return offset * eps + scale * s_psi, offset + scale * summary
        phi_fn = baseline_function(
            self.config.baseline,
            t,
            ctx,
            ctx.render,
            self.geometry,
            offset,
            self.config.baseline_scale,
        )
        return stein_control_variate(phi_fn, x_t, eps, sigma.to(x_t.dtype), return_phi=True)

    def posterior_fields(self, x_t, t, eps, prior, ctx) -> torch.Tensor:
        """S_post(beta_f) for every ``posterior_betas``, stacked [B, F, C, H, W]."""
        c = self.config
        return torch.stack(
            [
                posterior_control_variate(x_t, t, eps, prior, ctx, c.guidance_scale, c.cfg_mode, b)
                for b in c.posterior_betas
            ],
            dim=1,
        )

    def _grad_posterior(self, x, t, eps, prior, ctx):
        """G = w (eps_hat - eps - sum_f mu_f S_post(beta_f)) (module doc)."""
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, self.config)
        fields = self.posterior_fields(x_t, t, eps, prior, ctx)  # [B, F, C, H, W]
        if self.config.mu == "fixed":
            mu = torch.full(fields.shape[:2], float(self.mu.init), dtype=torch.float64)
        else:
            mu = self.posterior_mu.value(t, prior.num_train_timesteps)  # [B, F]
        mu = mu.to(device=x.device, dtype=x.dtype)
        s = (mu.view(*mu.shape, 1, 1, 1) * fields).sum(1)
        g = w * (eps_hat - eps - s)
        diagnostics = {
            "grad_norm": float(g.flatten(1).norm(dim=1).mean()),
            "cv_norm": float(s.flatten(1).norm(dim=1).mean()),
            "mu_mean": float(mu.mean()),
            "corr_eps_hat_cv": _corr(eps_hat, s),
        }
        update_inputs = {"t": t, "score": w * (eps_hat - eps), "fields": w[:, None] * fields}
        return EstimatorOutput(g, diagnostics, update_inputs, score_term=w * eps_hat)

    def _grad_posterior_mc(self, x, t, eps, prior, ctx):
        """G = w (eps_hat - eps - S_mc) (module doc); the eps-free half first."""
        c = self.config
        means = subspace_means(
            x,
            t,
            prior,
            ctx,
            c.guidance_scale,
            c.cfg_mode,
            ctx.generator,
            c.posterior_mc_draws,
            c.posterior_mc_refs,
            c.posterior_mc_nats,
        )
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, c)
        alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
        s = subspace_control_variate(means, eps, alpha, sigma)
        g = w * (eps_hat - eps - s)
        refs = [len(plan.index) for _, rows in means for plan, _ in rows]
        diagnostics = {
            "grad_norm": float(g.flatten(1).norm(dim=1).mean()),
            "cv_norm": float(s.flatten(1).norm(dim=1).mean()),
            "mu_mean": 1.0,
            "corr_eps_hat_cv": _corr(eps_hat, s),
            "mc_refs": sum(refs) / len(refs),
            "mc_refs_max": float(max(refs)),
        }
        update_inputs = {"cv_mean": subspace_mean_image(means, x)}
        return EstimatorOutput(g, diagnostics, update_inputs, score_term=w * eps_hat)

    def grad(self, x, t, eps, prior, ctx):
        if self.config.baseline == "posterior_mc":
            return self._grad_posterior_mc(x, t, eps, prior, ctx)
        if self.posterior_mu is not None:
            return self._grad_posterior(x, t, eps, prior, ctx)
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, self.config)
        s, phi = self.control_variate(x_t, t, eps, prior, ctx, x)
        mu = self.mu.value(s)
        # additive: the coefficient is fitted to the SDS residual a = w (eps_hat - eps)
        residual = eps_hat - eps if self.config.form == "additive" else eps_hat
        g = w * (residual - mu * s)
        score = w * residual
        counts = {} if self.geometry is None else {"n_evals_depth": float(self.geometry.n_evals)}
        update_inputs = {"score": score, "control": w * s}
        if self.learned is not None:
            counts = {"n_evals_phi": float(self.learned.n_evals), **self.learned_diagnostics()}
            update_inputs.update(self._fit_sample(x, x_t, t, eps, prior, ctx, w, residual, mu))
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
        return EstimatorOutput(g, diagnostics, update_inputs, score_term=w * eps_hat)

    def _fit_sample(self, x, x_t, t, eps, prior, ctx, w, residual, mu) -> dict:
        """What the learned baseline's ``fit`` needs from this step (all detached)."""
        _, sigma = alpha_sigma(prior.alphas_cumprod, t)
        detached = {"x_t": x_t, "eps": eps, "render": x, "w": w, "residual": residual}
        return {
            **{k: v.detach() for k, v in detached.items()},
            "sigma": sigma.to(x_t.dtype),
            "t": t,
            "c2w": camera_matrix(ctx, x_t),
            "mu": mu.detach(),
            "offset": torch.tensor(self.offset, dtype=x_t.dtype, device=x_t.device),
            "scale": torch.tensor(self.config.baseline_scale, dtype=x_t.dtype, device=x_t.device),
        }

    def learned_diagnostics(self) -> dict[str, float]:
        """The learned baseline's latest fit loss (absent before the first fit)."""
        if self.learned is None or not self.learned.n_updates:
            return {}
        return {"baseline_loss": self.learned.last_loss}

    def update(self, x, prior, ctx, output: EstimatorOutput | None = None):
        """Feed this step's sample (``output.update_inputs``: w eps_hat and w S) to mu, and
        fit the learned baseline on it (with the mu this step used); both are used from the
        next step on."""
        if self.config.baseline == "posterior_mc":
            return  # nothing is fitted: the coefficient is 1, the mean comes from fresh draws
        if output is None:
            raise ValueError("SSD.update needs this step's grad output (mu learns from it)")
        if self.posterior_mu is not None:
            inputs = output.update_inputs
            self.posterior_mu.observe(
                inputs["t"], prior.num_train_timesteps, inputs["score"], inputs["fields"]
            )
            return
        if self.learned is not None:
            self.learned.fit(output.update_inputs, ctx.generator)
        self.mu.observe(output.update_inputs["score"], output.update_inputs["control"])

    def probe_flags(self) -> dict[str, float]:
        """``mu_uninformed`` = 1 while mu has seen no sample (a learned or optimal mu at its
        init value: SSD's step-0 probe is not SSD yet), or the learned baseline none (its
        output is still zero)."""
        mu_unseen = self.config.mu != "fixed" and self.mu.mu is None
        if self.config.baseline == "posterior_mc":
            mu_unseen = False  # nothing to learn: coefficient 1 from the first step
        if self.posterior_mu is not None:
            mu_unseen = self.config.mu != "fixed" and not bool(self.posterior_mu.seen.any())
        net_unseen = self.learned is not None and self.learned.n_updates == 0
        return {"mu_uninformed": float(mu_unseen or net_unseen)}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.learned is None else self.learned.parameters()

    def network_evaluations(self) -> dict[str, int]:
        counts = {} if self.geometry is None else {"depth": self.geometry.n_evals}
        if self.learned is not None:
            counts["phi"] = self.learned.n_evals
        return counts

    def state_dict(self) -> dict:
        evals = None if self.geometry is None else self.geometry.n_evals
        state = {"mu": self.mu.state_dict(), "n_evals_depth": evals}
        if self.learned is not None:
            state["learned"] = self.learned.state_dict()
        if self.posterior_mu is not None:
            state["posterior_mu"] = self.posterior_mu.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.mu.load_state_dict(state["mu"])
        if self.learned is not None:
            self.learned.load_state_dict(state["learned"])
        if self.posterior_mu is not None:
            self.posterior_mu.load_state_dict(state["posterior_mu"])
        if self.geometry is not None and state.get("n_evals_depth") is not None:
            self.geometry.n_evals = int(state["n_evals_depth"])
