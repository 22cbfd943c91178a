"""The estimator interface: an image-space descent direction G for a rendered batch.

The harness applies G to the 3D parameters with the target trick
``loss = 0.5 * ||x - (x - G).detach()||^2`` so that d loss / d x = G.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from core.guidance import CFGMode
from core.interfaces import DiffusionPrior, PriorContext
from core.timesteps import TimestepSchedule
from core.weighting import Weighting


@dataclass
class EstimatorContext(PriorContext):
    """PriorContext (prompt, cameras and the backbone's ``render`` outputs for the batch:
    ``rgb`` [B,3,H,W], ``depth`` [B,1,H,W], ...) plus what the harness knows about this step.

    Attributes:
        step: training step index.
        generator: an estimator-private random stream for this step (e.g. VSD's LoRA
            training), separate from the camera/timestep/noise streams so that every
            method sees the same cameras, t and eps.
    """

    step: int = 0
    generator: torch.Generator | None = None


@dataclass
class EstimatorOutput:
    """What ``grad`` returns (diffusers-style explicit output, no hidden state for ``update``).

    Attributes:
        grad: G [B, ...], the image-space descent direction (no graph).
        diagnostics: scalar diagnostics logged per step.
        update_inputs: what ``update`` needs from this step (e.g. SSD's w eps_hat and w S
            for mu); the trainer passes the whole output to ``update``.
        score_term: the raw score term w eps_hat [B, ...] before any control variate (G =
            score_term - control variate), or None; the probe's control-variate view.

    Unpacks as ``grad, diagnostics = estimator.grad(...)``.
    """

    grad: torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)
    update_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    score_term: torch.Tensor | None = None

    def __iter__(self):
        return iter((self.grad, self.diagnostics))


@dataclass
class GuidanceConfig:
    """How the prior's noise prediction is formed and weighted (shared by all estimators)."""

    cfg_mode: CFGMode = "diffusers"
    guidance_scale: float = 1.0
    weighting: Weighting = "sds"
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_final: float | None = None
    anneal_steps: int = 0
    #: t_min's end value (annealed with t_max: ScaleDreamer's 0.5 -> 0.02), None: constant
    t_min_final: float | None = None
    #: the step at which the anneal starts (ProlificDreamer: 5000 with anneal_steps 1)
    anneal_start: int = 0
    #: perp-neg (core/guidance.py): the view prompts not seen from the camera as negatives,
    #: weighted by azimuth (threestudio's defaults) times ``perp_neg_scale``; diffusers form
    perp_neg: bool = False
    perp_neg_scale: float = 1.0
    #: CARV's levers (estimators/sampling.py): K (t, eps) draws per render, averaged
    noise_samples: int = 1
    #: t from the proposal q(t) ~ w(t) sigma_t, weighted by (1/N) / q(t) (same mean)
    t_importance: bool = False
    #: the K draws' t stratified (one per stratum of the t distribution's CDF)
    t_stratified: bool = False

    def __post_init__(self) -> None:
        if self.noise_samples < 1:
            raise ValueError(f"noise_samples must be >= 1, got {self.noise_samples}")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.t_max_final is not None and not self.t_min <= self.t_max_final <= 1.0:
            raise ValueError(f"t_max_final must lie in [t_min, 1], got {self.t_max_final}")
        if self.anneal_steps < 0 or self.anneal_start < 0:
            raise ValueError("anneal_steps and anneal_start must be >= 0")
        if self.t_min_final is not None and not 0.0 <= self.t_min_final <= self.t_max:
            raise ValueError(f"t_min_final must lie in [0, t_max], got {self.t_min_final}")

    @property
    def uses_sampling_levers(self) -> bool:
        """True when any CARV lever is on (the estimator is wrapped in ``SampledEstimator``)."""
        return self.noise_samples > 1 or self.t_importance or self.t_stratified

    @property
    def timesteps(self) -> TimestepSchedule:
        return TimestepSchedule(
            self.t_min,
            self.t_max,
            self.t_max_final,
            self.anneal_steps,
            self.t_min_final,
            self.anneal_start,
        )


class GradientEstimator(ABC):
    """A score-distillation gradient estimator. Pure math: no I/O, no global RNG."""

    name: str = "base"
    #: extra render outputs the estimator reads from ctx.render (e.g. ("normal",))
    render_outputs: tuple[str, ...] = ()
    #: the estimator whose expectation this one claims to have ("sds": SDS itself, SSD and
    #: any zero-mean control variate on SDS), checked by the probe's bias check; None: none
    mean_of: str | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable state of the estimator itself (LoRA, mu), optimised by ``update``."""
        return []

    @abstractmethod
    def grad(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        prior: DiffusionPrior,
        ctx: EstimatorContext,
    ) -> EstimatorOutput:
        """Descent direction G [B, ...] (same shape as x, no graph) and scalar diagnostics.

        Pure: no side effect on the estimator (its state changes only in ``update``), so
        the gradient-variance probe can call it at a frozen checkpoint.

        Args:
            x: [B, C, H, W] renders in the prior's space (may require grad; G must not).
            t: [B] int64 timesteps.
            eps: [B, C, H, W] standard normal noise.
        """

    def update(
        self,
        x: torch.Tensor,
        prior: DiffusionPrior,
        ctx: EstimatorContext,
        output: EstimatorOutput | None = None,
    ) -> None:
        """Optional online update after the theta step (VSD's LoRA, SSD's mu), given this
        step's ``grad`` output. x is detached."""

    def probe_flags(self) -> dict[str, float]:
        """Flags the variance probe logs as ``var/<name>`` (e.g. ``mu_uninformed``)."""
        return {}

    def network_evaluations(self) -> dict[str, int]:
        """Cumulative evaluations of the estimator's own networks by kind (``phi``: VSD's
        eps_phi, ``depth``: SSD's depth/normal model); the prior counts its own."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state
