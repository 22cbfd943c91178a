"""Pinhole cameras on a sphere around the origin, threestudio conventions.

World frame: z up. A camera at elevation ``e``, azimuth ``a`` and distance ``d`` sits at
``d * (cos e cos a, cos e sin a, sin e)`` and looks at the origin. Camera-to-world matrices
use the OpenGL convention (camera looks along its -z axis, +y up in the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cameras:
    """A batch of B cameras.

    Attributes:
        c2w: [B, 4, 4] camera-to-world matrices.
        fovy: [B] vertical field of view in degrees.
        elevation, azimuth: [B] degrees.
        distance: [B] distance to the origin.
    """

    c2w: torch.Tensor
    fovy: torch.Tensor
    elevation: torch.Tensor
    azimuth: torch.Tensor
    distance: torch.Tensor

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> torch.Tensor:
        """[B, 3] camera centres."""
        return self.c2w[:, :3, 3]

    @property
    def view_direction(self) -> torch.Tensor:
        """[B, 3] unit vectors from the origin towards the camera."""
        return torch.nn.functional.normalize(self.position, dim=-1)

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(*(getattr(self, f).to(device) for f in _FIELDS))

    def __getitem__(self, index) -> Cameras:
        def take(v: torch.Tensor) -> torch.Tensor:
            out = v[index]
            return out.unsqueeze(0) if out.dim() == v.dim() - 1 else out

        return Cameras(*(take(getattr(self, f)) for f in _FIELDS))

    @staticmethod
    def cat(cameras: list[Cameras]) -> Cameras:
        return Cameras(*(torch.cat([getattr(c, f) for c in cameras]) for f in _FIELDS))


_FIELDS = ("c2w", "fovy", "elevation", "azimuth", "distance")


def look_at_origin(
    elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor, fovy: torch.Tensor
) -> Cameras:
    """Cameras at spherical positions (degrees), looking at the origin with z up. Shapes [B]."""
    e = torch.deg2rad(elevation)
    a = torch.deg2rad(azimuth)
    position = torch.stack(
        [distance * e.cos() * a.cos(), distance * e.cos() * a.sin(), distance * e.sin()], dim=-1
    )
    forward = torch.nn.functional.normalize(-position, dim=-1)
    up_world = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype).expand_as(forward)
    right = torch.linalg.cross(forward, up_world)
    # Looking straight down or up: any right vector orthogonal to forward works.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    up = torch.linalg.cross(right, forward)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return Cameras(c2w, fovy, elevation, azimuth, distance)


def sample_cameras(
    n: int,
    generator: torch.Generator,
    elevation_range: tuple[float, float],
    azimuth_range: tuple[float, float],
    distance_range: tuple[float, float],
    fovy_range: tuple[float, float],
) -> Cameras:
    """Draw n cameras uniformly in (elevation, azimuth, distance, fovy) from ``generator``.

    Always draws 4*n numbers, so the stream advances the same way whatever the ranges are.
    """
    u = torch.rand(4, n, generator=generator, dtype=torch.float32)

    def lerp(lo_hi: tuple[float, float], v: torch.Tensor) -> torch.Tensor:
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * v

    return look_at_origin(
        lerp(elevation_range, u[0]),
        lerp(azimuth_range, u[1]),
        lerp(distance_range, u[2]),
        lerp(fovy_range, u[3]),
    )


def orbit_cameras(
    n_azimuth: int,
    elevations: tuple[float, ...],
    distance: float,
    fovy: float,
    azimuth_offset: float = 0.0,
) -> Cameras:
    """A deterministic ring of cameras: every elevation x n_azimuth evenly spaced azimuths."""
    az = torch.arange(n_azimuth, dtype=torch.float32) * (360.0 / n_azimuth) + azimuth_offset
    el = torch.tensor(elevations, dtype=torch.float32)
    el, az = torch.meshgrid(el, az, indexing="ij")
    el, az = el.reshape(-1), az.reshape(-1)
    ones = torch.ones_like(el)
    return look_at_origin(el, az, ones * distance, ones * fovy)


def camera_rays(cameras: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions through pixel centres.

    Returns:
        origins, directions: [B, H, W, 3] in world coordinates.
    """
    device = cameras.c2w.device
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fovy))  # [B]
    j, i = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    f = focal[:, None, None]
    dirs_cam = torch.stack(
        [(i - 0.5 * width) / f, -(j - 0.5 * height) / f, -torch.ones_like(i).expand_as(f * i)],
        dim=-1,
    )  # [B, H, W, 3]
    rot = cameras.c2w[:, None, None, :3, :3]
    directions = torch.nn.functional.normalize((rot @ dirs_cam[..., None])[..., 0], dim=-1)
    origins = cameras.position[:, None, None, :].expand_as(directions)
    return origins, directions


def ray_box_intersect(
    origins: torch.Tensor, directions: torch.Tensor, half_extent: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the cube [-half_extent, half_extent]^3 (pure torch, any device).

    Args:
        origins, directions: [..., 3].
    Returns:
        t_near, t_far: [...] entry/exit distances (t_near clamped at 0); hit: [...] bool.
    """
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-half_extent - origins) * inv
    t1 = (half_extent - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far, t_far > t_near


@dataclass
class CameraConfig:
    """Training camera distribution (degrees; threestudio-style uniform ranges).

    >>> CameraConfig(distance_range=(2.0, 3.0)).center()
    (2.5, 40.0)
    """

    elevation_range: tuple[float, float] = (-10.0, 60.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance_range: tuple[float, float] = (2.5, 2.5)
    fovy_range: tuple[float, float] = (40.0, 40.0)
    batch_size: int = 1

    def __post_init__(self) -> None:
        for name in ("elevation_range", "azimuth_range", "distance_range", "fovy_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high")
        if self.distance_range[0] <= 0 or not 0 < self.fovy_range[0] <= self.fovy_range[1] < 180:
            raise ValueError("distances must be > 0 and fovy in (0, 180)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    def center(self) -> tuple[float, float]:
        """(distance, fovy) at the middle of their ranges: the held-out ring's, the world
        prior's reference cameras' and the 2D world's fixed camera's."""
        distance = 0.5 * (self.distance_range[0] + self.distance_range[1])
        fovy = 0.5 * (self.fovy_range[0] + self.fovy_range[1])
        return distance, fovy

    def sample(self, n: int, generator: torch.Generator) -> Cameras:
        """n cameras of this distribution from ``generator`` (see ``sample_cameras``)."""
        return sample_cameras(
            n,
            generator,
            self.elevation_range,
            self.azimuth_range,
            self.distance_range,
            self.fovy_range,
        )
