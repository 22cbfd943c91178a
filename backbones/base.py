"""The backbone interface: parameters theta and ``render(cameras, H, W) -> dict of images``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from core.cameras import Cameras


class Backbone(torch.nn.Module, ABC):
    """A differentiable 3D representation.

    ``render`` returns at least ``rgb`` [B,3,H,W] in [0, 1], ``depth`` [B,1,H,W] (expected ray
    distance) and ``opacity`` [B,1,H,W]; with ``normals=True`` also ``normal`` [B,3,H,W]
    (world-space unit normals). Backbones never know which prior is used.

    ``supports_vmap`` False makes the gradient-variance probe's ``auto`` engine use plain
    autograd instead of torch.func; ``before_step(step)`` runs before each training step's
    render (e.g. occupancy-grid updates), never during evaluation or the probe.
    """

    supports_vmap: bool = True
    #: parameters and buffers whose row count (dim 0) changes during training (Gaussian
    #: densification); a checkpoint may hold them with any number of rows
    variable_rows: tuple[str, ...] = ()

    def before_step(self, step: int) -> None:
        """Hook called by the trainer before the render of training step ``step``."""

    def update_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook called by the trainer right after ``before_step``: a backbone whose parameter
        shapes or per-step learning rates changed there (Gaussian densification) updates the
        optimiser's state and groups. Default: nothing."""

    @abstractmethod
    def render(
        self, cameras: Cameras, height: int, width: int, normals: bool = False
    ) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Adam parameter groups with per-group learning rates, each with a ``name``."""
