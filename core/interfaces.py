"""The one interface every diffusion prior implements (world analytic prior, Stable Diffusion).

A prior maps rendered RGB into its own space (``encode``), predicts noise for a batch with a
named CFG mode (``predict_noise``) and counts its own network evaluations (``n_evals``: one
per image per branch that went through the network) and the wall-clock they took
(``seconds``, CUDA-synchronised), so the harness can split a step's time.

A prior may also offer a third branch, the *negative* prediction eps_neg(x_t, t, y)
(``predict_negative``; capability flag ``supports_negative``), counted like the others:
for Stable Diffusion a negative text prompt, for the world a degraded distribution of the
same object (world/degraded.py). Methods that need it refuse a prior without it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from core.errors import UserError
from core.guidance import CFGMode, classifier_free_guidance, needs_unconditional


@dataclass
class PriorContext:
    """What a prior may condition on: the prompt and the B cameras of the batch.

    ``render`` holds the backbone's outputs for the batch when there are any (``depth``
    [B, 1, H, W], ...): a geometry estimator sizes its output to ``render["depth"]``.
    """

    prompt: str
    cameras: Any  # core.cameras.Cameras (kept untyped: priors/ must not depend on world/)
    render: dict[str, torch.Tensor] = field(default_factory=dict)


class DiffusionPrior(ABC):
    """Base class: subclasses provide ``alphas_cumprod``, ``encode`` and ``_predict_branch``
    (and, to set ``supports_negative``, ``_predict_negative``).

    Capabilities, declared here with their defaults and read by the harness and the
    registries instead of type checks or ``getattr`` probing (every registered prior is
    checked against them by the contract suite, tests/test_capabilities.py):
        shape: (C, h, w) of the prior's space, or None for the render's RGB
            (3, H, W) at the run's resolution (``space_shape``).
        eps_phi_kind: how VSD builds its eps_phi over this prior: ``residual`` (prior +
            a small pixel-space network, the world) or ``lora`` (a LoRA copy of the
            prior's noise network, ``denoiser`` / ``predict_with``).
        supports_negative: ``predict_negative`` works (a negative / degraded branch).
        supports_posterior_field: ``posterior_stein_field`` works (the world's mixture: a
            matrix-valued Stein field from its posterior responsibilities, SSD's
            ``baseline=posterior``).
        vmap_encode: ``encode`` can run under torch.func.vmap (False: the variance probe
            vmaps the render only and encodes with batched autograd).
        probe_chunk: most probe samples vectorised at once (a memory cap), None: no cap.
        knows_exact_score: ``exact_eps`` gives the exact eps* the prior approximates (the
            learned prior: the world's exact score of its training classes); the variance
            probe then logs the prior's error at its draws.
        lora_class_embedding(network, camera_embedding): the class embedding of a LoRA
            eps_phi's copy (default: the camera embedding alone).
        geometry_estimator(depth_model): the depth/normal model SSD's baseline uses.
        prepare(prompts): build per-prompt state before cells share the prior on threads.
    """

    alphas_cumprod: torch.Tensor  # [T]
    #: (C, h, w) of the prior's space; None: the render's RGB (3, H, W)
    shape: tuple[int, int, int] | None = None
    eps_phi_kind: str = "residual"
    #: True when ``predict_negative`` works (a negative / degraded branch exists)
    supports_negative: bool = False
    #: True when ``posterior_stein_field`` works (a closed-form posterior over references)
    supports_posterior_field: bool = False
    #: False when ``encode`` cannot run under torch.func.vmap (a real VAE)
    vmap_encode: bool = True
    #: most probe samples vectorised at once (a memory cap); None: no cap
    probe_chunk: int | None = None
    #: True when ``exact_eps`` works (the exact score the prior approximates is known)
    knows_exact_score: bool = False

    def __init__(self) -> None:
        self.n_evals = 0
        self.seconds = 0.0

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def space_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the prior's space for renders of ``height`` x ``width``.

        >>> class Pixels(DiffusionPrior):
        ...     def encode(self, rgb):
        ...         return rgb
        ...     def _predict_branch(self, x_t, t, ctx, conditional):
        ...         return x_t
        >>> Pixels().space_shape(16, 24)
        (3, 16, 24)
        """
        return tuple(self.shape) if self.shape is not None else (3, height, width)

    def prepare(self, prompts: list[str]) -> None:
        """Build any per-prompt state up front (before cells share this prior on threads);
        a prompt the prior does not know is left for its cell to report. Default: nothing."""

    def denoiser(self) -> torch.nn.Module:
        """The frozen noise network a LoRA eps_phi copies (``eps_phi_kind == "lora"``)."""
        raise UserError(f"prior {type(self).__name__} has no noise network to adapt")

    def predict_with(
        self,
        network: torch.nn.Module,
        x_t: torch.Tensor,
        t: torch.Tensor,
        ctx: PriorContext,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditional eps [B, C, h, w] fp32 from ``network`` (a copy of ``denoiser()``,
        e.g. with LoRA adapters) under this prior's text conditioning and output convention;
        ``class_labels`` [B, K] feed the network's class embedding. Not counted here."""
        raise UserError(f"prior {type(self).__name__} has no noise network to adapt")

    def lora_class_embedding(
        self, network: torch.nn.Module, camera_embedding: torch.nn.Module
    ) -> torch.nn.Module:
        """The class embedding of a LoRA copy of ``denoiser()``: the camera embedding alone
        (a class-conditional network keeps its classes and adds the camera)."""
        return camera_embedding

    def exact_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, conditional: bool = True
    ) -> torch.Tensor:
        """The exact eps* [B, C, h, w] this prior approximates (``knows_exact_score``)."""
        raise UserError(f"prior {type(self).__name__} does not know its exact score")

    def geometry_estimator(self, depth_model: str = "") -> GeometryEstimator:
        """The monocular depth/normal estimator on this prior's (noisy) images."""
        raise UserError(f"no depth/normal estimator is available for prior {type(self).__name__}")

    @abstractmethod
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> x in the prior's space (differentiable)."""

    @abstractmethod
    def _predict_branch(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, conditional: bool
    ) -> torch.Tensor:
        """One branch of the noise prediction, eps(x_t, t, y) or eps(x_t, t, empty)."""

    def _predict_negative(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, negative_prompt: str
    ) -> torch.Tensor:
        """eps_neg(x_t, t): the negative branch (override and set ``supports_negative``)."""
        raise NotImplementedError(f"{type(self).__name__} has no negative branch")

    def posterior_stein_field(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        ctx: PriorContext,
        eps: torch.Tensor,
        conditional: bool,
        beta: float = 1.0,
    ) -> torch.Tensor:
        """A zero-mean (over eps) Stein field from the branch's posterior, [B, ...] (override
        and set ``supports_posterior_field``)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form posterior field")

    def _counted(self, fn, x_t: torch.Tensor, *args) -> torch.Tensor:
        self.n_evals += x_t.shape[0]
        if x_t.is_cuda:
            torch.cuda.synchronize(x_t.device)
        start = time.perf_counter()
        eps = fn(x_t, *args)
        if eps.is_cuda:
            torch.cuda.synchronize(eps.device)
        self.seconds += time.perf_counter() - start
        return eps

    def predict_branch(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, conditional: bool
    ) -> torch.Tensor:
        """Counted and timed single-branch noise prediction, [B, ...] -> [B, ...]."""
        return self._counted(self._predict_branch, x_t, t, ctx, conditional)

    def predict_negative(
        self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext, negative_prompt: str
    ) -> torch.Tensor:
        """Counted and timed negative branch eps_neg(x_t, t), [B, ...] -> [B, ...].

        ``negative_prompt`` is a text template (``{prompt}`` is replaced by ctx.prompt) read
        by text-conditioned priors; the world ignores the text and uses its degraded
        distribution of the prompt's object. NotImplementedError without the capability.
        """
        if not self.supports_negative:
            raise NotImplementedError(f"{type(self).__name__} has no negative branch")
        return self._counted(self._predict_negative, x_t, t, ctx, negative_prompt)

    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        ctx: PriorContext,
        guidance_scale: float,
        cfg_mode: CFGMode,
    ) -> torch.Tensor:
        """Guided noise prediction eps_hat(x_t, t, y) (see core.guidance), [B, ...]."""
        eps_cond = self.predict_branch(x_t, t, ctx, conditional=True)
        if not needs_unconditional(guidance_scale, cfg_mode):
            return eps_cond
        eps_uncond = self.predict_branch(x_t, t, ctx, conditional=False)
        return classifier_free_guidance(eps_cond, eps_uncond, guidance_scale, cfg_mode)


class GeometryEstimator(ABC):
    """Monocular geometry from a (noisy) image: the D of SSD's baseline function.

    Implementations: the world's Bayes estimator (world/geometry.py); a frozen DPT on real
    priors. Both must be differentiable w.r.t. x_t and must not train.
    """

    @abstractmethod
    def depth(self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext) -> torch.Tensor:
        """[B, C, H, W] noisy images -> [B, 1, H, W] depth (any affine scale)."""

    @abstractmethod
    def normal(self, x_t: torch.Tensor, t: torch.Tensor, ctx: PriorContext) -> torch.Tensor:
        """[B, C, H, W] noisy images -> [B, 3, H, W] unit normals (world frame)."""
