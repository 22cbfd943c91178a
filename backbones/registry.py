"""BACKBONES: one row per 3D representation (name -> config class, builder).

The run config gets one section per row (``voxel.*``, ``hashgrid.*``, ...), the CLI's
``--backbone`` choices are the row names, and ``benchmark.run.factories.build_backbone`` builds
the chosen one. Adding a backbone is one file plus one row here.

>>> sorted(BACKBONES)
['gaussians', 'hashgrid', 'image', 'voxel']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from backbones.base import Backbone
from backbones.gaussians import GaussianConfig
from backbones.hashgrid import HashGridConfig
from backbones.image import ImageConfig
from backbones.voxel import VoxelConfig


@dataclass(frozen=True)
class BackboneBuild:
    """What a builder gets: its config section, the render size, the device, and the cell's
    ``init`` generator for random initial parameters."""

    config: object
    height: int
    width: int
    device: torch.device
    generator: torch.Generator | None


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    config_class: type
    build: Callable[[BackboneBuild], Backbone]
    description: str


def _voxel(b: BackboneBuild) -> Backbone:
    from backbones.voxel import VoxelGrid

    return VoxelGrid(b.config, device=b.device)


def _hashgrid(b: BackboneBuild) -> Backbone:
    from backbones.hashgrid import HashGridNeRF

    return HashGridNeRF(b.config, b.device, b.generator)


def _gaussians(b: BackboneBuild) -> Backbone:
    from backbones.gaussians import GaussianSplats

    return GaussianSplats(b.config, b.device, b.generator)


def _image(b: BackboneBuild) -> Backbone:
    from backbones.image import ImageBackbone

    return ImageBackbone(b.config, b.height, b.width, b.device)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("voxel", VoxelConfig, _voxel, "dense 32^3 density + colour voxel grid"),
        BackboneSpec("hashgrid", HashGridConfig, _hashgrid, "hash-grid NeRF (threestudio)"),
        BackboneSpec("gaussians", GaussianConfig, _gaussians, "3D Gaussian splatting (3DGS)"),
        BackboneSpec("image", ImageConfig, _image, "the 2D world: one image, fixed camera"),
    )
}
