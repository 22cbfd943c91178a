"""Variational Score Distillation (ProlificDreamer), one particle:

    G = w(t) (eps_hat(x_t, t, y) - eps_phi(x_t, t, y, c))

eps_phi (``estimators.eps_phi``) is a camera-conditioned noise predictor of the current
renders, evaluated under no_grad in ``grad`` and trained online in ``update`` on the detached
render with its own t, eps and camera dropout drawn from ``ctx.generator`` (the estimator's
private stream). With a perfect eps_phi of a single particle VSD equals SDS; at init
(delta_psi = 0) and CFG s = 1 it is exactly zero, with diffusers CFG s it is
(s - 1) w (eps_c - eps_u). The world defaults and the experiments behind them are in
docs/vsd_world.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch

from core.guidance import needs_unconditional
from core.interfaces import DiffusionPrior
from core.timesteps import TimestepSchedule
from estimators.base import (
    EstimatorContext,
    EstimatorOutput,
    GradientEstimator,
    GuidanceConfig,
)
from estimators.eps_phi import (
    PhiLossWeighting,
    PhiParameterization,
    ResidualEpsPhi,
    VariationalScoreModel,
)
from estimators.sds import guided_residual_terms

PhiTimesteps = Literal["all", "guidance"]


@dataclass
class VSDConfig(GuidanceConfig):
    """VSD knobs on top of the shared guidance/weighting/timestep config.

    Attributes:
        lr, weight_decay: AdamW on the world's pixel-space eps_phi (DeltaNet; the phi_*
            knobs below apply to it only).
        lora_rank, lora_alpha, lora_lr: with a latent diffusers prior (``sd:PATH``) eps_phi
            is a peft LoRA copy of the UNet + camera class embedding
            (estimators.eps_phi.LoRAEpsPhi), trained by AdamW with ``lora_lr``.
        camera_dropout: probability that eps_phi's camera condition is replaced by zeros in
            a training step (per image).
        warmup_steps: the first ``warmup_steps`` steps return G = 0 (theta does not move)
            while eps_phi trains on the initial renders.
        updates_per_step: eps_phi AdamW steps per ``update`` call (fresh t, eps, dropout
            each).
        phi_timesteps: t of eps_phi's training: ``all`` = U{0 .. T-1} (ProlificDreamer),
            ``guidance`` = the same (annealed) range as the estimator's t.
        phi_loss_weighting: ``eps`` | ``x0`` | ``grad`` (see estimators.eps_phi).
        phi_parameterization: delta_psi predicts an ``x0`` correction or ``eps`` directly.
        phi_hidden, phi_blocks, phi_embed_dim: DeltaNet width, depth, conditioning size.
        phi_prior_input: feed the prior's x0 prediction to delta_psi next to x_t.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    #: AdamW's betas and eps (threestudio's prolificdreamer.yaml: (0.9, 0.99), 1e-15 with
    #: torch's weight decay 0.01; configs/reference.yaml and configs/esd.yaml set them)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    camera_dropout: float = 0.1
    warmup_steps: int = 0
    updates_per_step: int = 1
    phi_timesteps: PhiTimesteps = "all"
    phi_loss_weighting: PhiLossWeighting = "x0"
    phi_parameterization: PhiParameterization = "x0"
    phi_hidden: int = 32
    phi_blocks: int = 2
    phi_embed_dim: int = 64
    phi_prior_input: bool = True
    lora_rank: int = 4
    lora_alpha: int = 4
    lora_lr: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lr > 0.0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lora_rank < 1 or self.lora_alpha <= 0 or self.lora_lr <= 0:
            raise ValueError("need lora_rank >= 1, lora_alpha > 0 and lora_lr > 0")
        if self.weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.camera_dropout <= 1.0:
            raise ValueError(f"camera_dropout must lie in [0, 1], got {self.camera_dropout}")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if self.updates_per_step < 1:
            raise ValueError("updates_per_step must be >= 1")
        if self.phi_timesteps not in ("all", "guidance"):
            raise ValueError(f"unknown phi_timesteps {self.phi_timesteps!r}")
        if self.phi_loss_weighting not in ("eps", "x0", "grad"):
            raise ValueError(f"unknown phi_loss_weighting {self.phi_loss_weighting!r}")
        if self.phi_parameterization not in ("x0", "eps"):
            raise ValueError(f"unknown phi_parameterization {self.phi_parameterization!r}")
        if self.phi_hidden < 1 or self.phi_blocks < 0:
            raise ValueError("phi_hidden must be >= 1 and phi_blocks >= 0")
        if self.phi_embed_dim < 2 or self.phi_embed_dim % 2:
            raise ValueError("phi_embed_dim must be an even number >= 2")


def build_residual_eps_phi(
    config: VSDConfig,
    shape: tuple[int, int, int],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> ResidualEpsPhi:
    """The pixel-space eps_phi of ``config`` for images of ``shape`` (C, H, W)."""
    return ResidualEpsPhi(
        shape,
        generator,
        device,
        hidden=config.phi_hidden,
        blocks=config.phi_blocks,
        embed_dim=config.phi_embed_dim,
        prior_input=config.phi_prior_input,
        parameterization=config.phi_parameterization,
        loss_weighting=config.phi_loss_weighting,
        weighting=config.weighting,
    )


class VSD(GradientEstimator):
    """VSD with one particle (the backbone) and an online-trained ``VariationalScoreModel``.

    Attributes:
        model: eps_phi. ``n_evals_phi`` counts its network evaluations (images; a training
            forward+backward counts as one), separately from the prior's ``n_evals`` (which
            also counts the conditional prior calls eps_phi's residual form makes).
        last_loss: eps_phi's mean training loss in the latest ``update`` (nan before any).
    """

    name = "vsd"

    def __init__(self, config: VSDConfig, model: VariationalScoreModel) -> None:
        self.config = config
        self.model = model
        params = model.parameters()
        self.optimizer = (
            torch.optim.AdamW(
                params,
                lr=config.lr,
                weight_decay=config.weight_decay,
                betas=tuple(config.adam_betas),
                eps=config.adam_eps,
            )
            if params
            else None  # a fixed model (e.g. an oracle) has nothing to train
        )
        self.last_loss = float("nan")
        self.n_updates = 0

    @property
    def n_evals_phi(self) -> int:
        return self.model.n_evals

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.model.parameters()

    def network_evaluations(self) -> dict[str, int]:
        return {"phi": self.n_evals_phi}

    def grad(self, x, t, eps, prior, ctx):
        if ctx.step < self.config.warmup_steps:
            return EstimatorOutput(
                torch.zeros_like(x), {"grad_norm": 0.0, **self._loss_diagnostics()}
            )
        x_t, eps_hat, w = guided_residual_terms(x, t, eps, prior, ctx, self.config)
        guided = needs_unconditional(self.config.guidance_scale, self.config.cfg_mode)
        with torch.no_grad():
            eps_phi = self.model.predict(
                x_t, t, ctx, prior, camera_dropped=None, eps_prior=None if guided else eps_hat
            )
        residual = eps_hat - eps_phi
        g = w * residual
        diagnostics = {
            "grad_norm": float(g.flatten(1).norm(dim=1).mean()),
            "phi_residual_norm": float(residual.flatten(1).norm(dim=1).mean()),
            "n_evals_phi": float(self.n_evals_phi),
            **self._loss_diagnostics(),
        }
        return EstimatorOutput(g, diagnostics, score_term=w * eps_hat)

    def _loss_diagnostics(self) -> dict[str, float]:
        """eps_phi's loss in the latest update (absent before the first one)."""
        return {"phi_loss": self.last_loss} if self.n_updates else {}

    def _phi_timesteps(self, n: int, step: int, num_train_timesteps: int, generator):
        if self.config.phi_timesteps == "guidance":
            schedule = self.config.timesteps
        else:
            schedule = TimestepSchedule(0.0, 1.0)
        return schedule.sample(n, step, num_train_timesteps, generator)

    def update(
        self,
        x: torch.Tensor,
        prior: DiffusionPrior,
        ctx: EstimatorContext,
        output: EstimatorOutput | None = None,
    ) -> None:
        """``updates_per_step`` AdamW steps of eps_phi on the detached renders x [B, C, H, W].

        Per step, from ``ctx.generator`` in this order: t [B], eps [B, C, H, W], camera
        dropout uniforms [B] (always drawn, so the stream advances the same way for any
        dropout rate).
        """
        if ctx.generator is None:
            raise ValueError("VSD.update needs ctx.generator (the estimator's random stream)")
        x = x.detach()
        n = x.shape[0]
        losses = []
        for _ in range(self.config.updates_per_step):
            t = self._phi_timesteps(n, ctx.step, prior.num_train_timesteps, ctx.generator)
            eps = torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype)
            dropped = torch.rand(n, generator=ctx.generator) < self.config.camera_dropout
            t, eps, dropped = t.to(x.device), eps.to(x.device), dropped.to(x.device)
            loss = self.model.loss(x, t, eps, ctx, prior, dropped)
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            losses.append(float(loss.detach()))
        self.last_loss = sum(losses) / len(losses)
        self.n_updates += 1

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "last_loss": self.last_loss,
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            # Optimizer.load_state_dict keeps references to the given tensors: copy, so the
            # source estimator's in-place Adam updates never leak into this one.
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.last_loss = float(state["last_loss"])
        self.n_updates = int(state["n_updates"])
