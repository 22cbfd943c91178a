"""The backbone interface: parameters theta and ``render(cameras, H, W) -> dict of images``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from core.cameras import Cameras


class Backbone(torch.nn.Module, ABC):
    """A differentiable 3D representation.

    ``render`` returns at least ``rgb`` [B,3,H,W] in [0, 1], ``depth`` [B,1,H,W] (expected ray
    distance) and ``opacity`` [B,1,H,W]; with ``normals=True`` also ``normal`` [B,3,H,W]
    (world-space unit normals). Backbones never know which prior is used.

    Capabilities (declared here with their defaults; every BACKBONES row is checked against
    them by the contract suite, tests/test_registry.py):
        supports_vmap: False makes the gradient-variance probe's ``auto`` engine use plain
            autograd instead of torch.func.
        variable_rows: parameters and buffers whose row count changes during training.

    Training strategy (gsplat ``DefaultStrategy`` style, no hidden state between two calls):
    the trainer holds ``state = backbone.initialize_state()`` and runs, per training step,

        state = backbone.step_pre_render(optimizer, state, step)
        out = backbone.render(cameras, H, W, info=info)        # info: {} filled by render
        state = backbone.step_pre_backward(optimizer, state, step, info)
        loss.backward()
        state = backbone.step_post_backward(optimizer, state, step, info)
        optimizer.step()

    Evaluation and the probe call ``render`` alone (no ``info``, no strategy calls).
    """

    supports_vmap: bool = True
    #: parameters and buffers whose row count (dim 0) changes during training (Gaussian
    #: densification); a checkpoint may hold them with any number of rows
    variable_rows: tuple[str, ...] = ()

    def initialize_state(self) -> dict[str, Any]:
        """The strategy state one training step hands the next (empty by default)."""
        return {}

    def step_pre_render(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any], step: int
    ) -> dict[str, Any]:
        """Before the render of training step ``step``: scheduled changes of theta and the
        optimiser surgery they need (occupancy-grid refresh, Gaussian densification, per-step
        learning rates). Returns the state. Default: nothing."""
        return state

    def step_pre_backward(
        self,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """After the training render (``info`` as ``render`` filled it), before backward:
        mark what the backward must keep. Returns the state. Default: nothing."""
        return state

    def step_post_backward(
        self,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """After backward, before the optimiser step: statistics of this step's gradients.
        Returns the state. Default: nothing."""
        return state

    @abstractmethod
    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        normals: bool = False,
        info: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Images of the B cameras; ``info``, when given, receives what the training
        strategy reads (e.g. screen-space means), untouched by backbones that need nothing."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Adam parameter groups with per-group learning rates, each with a ``name``."""
