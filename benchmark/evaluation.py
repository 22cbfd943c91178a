"""Held-out evaluation of a backbone against the world's true object (GT metrics)."""

from __future__ import annotations

import re

import torch

from backbones.base import Backbone
from benchmark.config import RunConfig
from world.cameras import Cameras, orbit_cameras
from world.metrics import psnr
from world.objects import get_object
from world.renderer import render_object


def slug(text: str) -> str:
    """File-name-safe form of a prompt: 'a red sphere' -> 'a-red-sphere'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "prompt"


def held_out_cameras(config: RunConfig) -> Cameras:
    """A ring of eval cameras at an elevation and azimuth offset no reference camera uses."""
    cam = config.camera
    return orbit_cameras(
        config.eval.n_views,
        (config.eval.elevation,),
        0.5 * (cam.distance_range[0] + cam.distance_range[1]),
        0.5 * (cam.fovy_range[0] + cam.fovy_range[1]),
        azimuth_offset=config.eval.azimuth_offset,
    )


def image_row(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [3, H, B*W] side by side."""
    return torch.cat(list(images), dim=-1)


class HeldOutEvaluator:
    """GT renders of one prompt at the held-out cameras, and metrics of a backbone there."""

    def __init__(self, prompt: str, config: RunConfig, device: torch.device) -> None:
        self.config = config
        self.cameras = held_out_cameras(config).to(device)
        self.truth = render_object(
            get_object(prompt),
            self.cameras,
            config.render.height,
            config.render.width,
            supersample=config.world.supersample,
            background=config.voxel.background,
        )

    @torch.no_grad()
    def __call__(self, backbone: Backbone) -> tuple[dict[str, float], torch.Tensor]:
        """Metrics {psnr} (mean over views) and the renders [B, 3, H, W]."""
        out = backbone.render(self.cameras, self.config.render.height, self.config.render.width)
        rgb = out["rgb"].clamp(0.0, 1.0)
        return {"psnr": float(psnr(rgb, self.truth["rgb"]).mean())}, rgb
