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
from core.cameras import Cameras


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

    def __post_init__(self) -> None:
        if self.resolution < 2 or self.n_samples < 1:
            raise ValueError("need resolution >= 2 and n_samples >= 1")
        if not (self.half_extent > 0 and self.blob_std > 0):
            raise ValueError("need half_extent > 0 and blob_std > 0")
        if not (self.lr_density > 0 and self.lr_color > 0):
            raise ValueError(f"learning rates must be > 0, got {self.lr_density}, {self.lr_color}")


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

    def _sample(self, grid_values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Trilinear lookup of [1, C, R, R, R] at points [..., 3] -> [..., C]."""
        grid = (points / self.config.half_extent).reshape(1, -1, 1, 1, 3)
        feats = F.grid_sample(grid_values, grid, mode="bilinear", align_corners=True)
        return feats.reshape(grid_values.shape[1], -1).T.reshape(*points.shape[:-1], -1)

    def density_at(self, points: torch.Tensor) -> torch.Tensor:
        """sigma(p) = softplus(d(p) + blob(p)), points [..., 3] -> [...]."""
        return F.softplus(self._sample(self.density, points)[..., 0] + self._blob(points))

    def _blob(self, points: torch.Tensor) -> torch.Tensor:
        return self.config.blob_scale * (1.0 - points.norm(dim=-1) / self.config.blob_std)

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [..., 3] -> sigma [...], colour [..., 3].

        One ``grid_sample`` of the stacked [1, 4, R, R, R] (density, colour) grid: the same
        numbers, bit for bit, as one lookup per grid (each channel is interpolated alone),
        at ~2/3 of the time, the backward of ``grid_sample`` being most of a training step.
        """
        feats = self._sample(torch.cat([self.density, self.color], dim=1), points)
        sigma = F.softplus(feats[..., 0] + self._blob(points))
        return sigma, torch.sigmoid(feats[..., 1:])

    def normals_at(self, points: torch.Tensor) -> torch.Tensor:
        """Unit normals -grad sigma / |grad sigma| by central differences (half a voxel)."""
        h = self.config.half_extent / self.config.resolution
        offsets = torch.eye(3, device=points.device, dtype=points.dtype) * h
        grad = torch.stack(
            [self.density_at(points + o) - self.density_at(points - o) for o in offsets], dim=-1
        )
        return -F.normalize(grad, dim=-1, eps=1e-8)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        normals: bool = False,
        info: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        points, t_starts, t_ends, _ = stratified_samples(
            cameras, height, width, self.config.n_samples, self.config.half_extent
        )
        sigma, color = self.query(points)
        extra = {"normal": self.normals_at(points)} if normals else {}
        rays = composite(t_starts, t_ends, sigma, color, self.background, extra)
        if normals:
            rays["normal"] = F.normalize(rays["normal"], dim=-1, eps=1e-8)
        return to_images(rays, len(cameras), height, width)
