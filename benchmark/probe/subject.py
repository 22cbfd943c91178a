"""What the gradient-variance probe measures: an explicit subject, not the whole trainer.

The trainer builds one with ``CellTrainer.probe_subject()``; the probe never calls back into
the trainer (no import circle) and never steps an optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backbones.base import Backbone
from benchmark.streams import RandomStreams
from core.cameras import CameraConfig, Cameras
from core.interfaces import DiffusionPrior
from core.timesteps import TimestepSchedule
from estimators.base import GradientEstimator


def draw_cameras_and_t(
    camera: CameraConfig,
    timesteps: TimestepSchedule,
    n: int,
    step: int,
    num_train_timesteps: int,
    camera_generator: torch.Generator,
    timestep_generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[Cameras, torch.Tensor]:
    """n training-distribution cameras and n timesteps [n] (the schedule at ``step``) from
    the given generators: the training streams (the trainer's steps) or the probe's
    ``measure`` sub-streams."""
    cameras = camera.sample(n, camera_generator).to(device)
    t = timesteps.sample(n, step, num_train_timesteps, timestep_generator).to(device)
    return cameras, t


@dataclass
class ProbeSubject:
    """One cell's state at a frozen checkpoint.

    Attributes:
        backbone: theta (parameters are read, never stepped).
        estimator: its ``grad`` is called; ``update`` never is.
        prior: the diffusion prior (its ``n_evals`` counter is restored after the probe).
        prompt, streams: the cell's prompt and random streams (the ``measure`` stream).
        camera, timesteps: the training camera distribution and t schedule.
        height, width: render size.
        optimizer: the backbone's Adam (its second moments precondition the update
            statistics), or None.
        twin: a plain SDS estimator evaluated at the same theta and draws where the bias
            check runs (benchmark/probe/twin.py), or None (SDS itself; twin off).
    """

    backbone: Backbone
    estimator: GradientEstimator
    prior: DiffusionPrior
    prompt: str
    streams: RandomStreams
    device: torch.device
    camera: CameraConfig
    timesteps: TimestepSchedule
    height: int
    width: int
    optimizer: torch.optim.Optimizer | None = None
    twin: GradientEstimator | None = None

    def draw_cameras_and_t(
        self,
        n: int,
        step: int,
        camera_generator: torch.Generator,
        timestep_generator: torch.Generator,
    ) -> tuple[Cameras, torch.Tensor]:
        return draw_cameras_and_t(
            self.camera,
            self.timesteps,
            n,
            step,
            self.prior.num_train_timesteps,
            camera_generator,
            timestep_generator,
            self.device,
        )
