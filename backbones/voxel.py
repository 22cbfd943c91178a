"""Dense voxel-grid radiance field sampled with trilinear ``grid_sample``.

theta = (density logits [1,1,R,R,R], colour logits [1,3,R,R,R]) over the box
[-h, h]^3. Density sigma(p) = softplus(d(p) + b(p)) with a fixed blob bias
b(p) = blob_scale (1 - |p| / blob_std) (threestudio's ``blob_magic3d`` init);
colour c(p) = sigmoid(k(p)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backbones.base import Backbone
from backbones.volume import composite, stratified_samples, to_images
from world.cameras import Cameras


@dataclass
class VoxelConfig:
    resolution: int = 32
    n_samples: int = 48
    half_extent: float = 1.0
    blob_scale: float = 10.0
    blob_std: float = 0.5
    lr_density: float = 0.1
    lr_color: float = 0.05
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


class VoxelGrid(Backbone):
    def __init__(self, config: VoxelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        r = config.resolution
        self.density = torch.nn.Parameter(torch.zeros(1, 1, r, r, r, device=device))
        self.color = torch.nn.Parameter(torch.zeros(1, 3, r, r, r, device=device))
        self.register_buffer("background", torch.tensor(config.background, device=device))

    def param_groups(self) -> list[dict]:
        return [
            {"name": "density", "params": [self.density], "lr": self.config.lr_density},
            {"name": "color", "params": [self.color], "lr": self.config.lr_color},
        ]

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [..., 3] -> sigma [...], colour [..., 3]."""
        shape = points.shape[:-1]
        grid = (points / self.config.half_extent).reshape(1, -1, 1, 1, 3)
        raw = torch.cat([self.density, self.color], dim=1)
        feats = F.grid_sample(raw, grid, mode="bilinear", align_corners=True)  # [1,4,N,1,1]
        feats = feats.reshape(4, -1).T.reshape(*shape, 4)
        radius = points.norm(dim=-1)
        blob = self.config.blob_scale * (1.0 - radius / self.config.blob_std)
        sigma = F.softplus(feats[..., 0] + blob)
        return sigma, torch.sigmoid(feats[..., 1:])

    def render(self, cameras: Cameras, height: int, width: int) -> dict[str, torch.Tensor]:
        points, t_starts, t_ends, _ = stratified_samples(
            cameras, height, width, self.config.n_samples, self.config.half_extent
        )
        sigma, color = self.query(points)
        rays = composite(t_starts, t_ends, sigma, color, self.background)
        return to_images(rays, len(cameras), height, width)
