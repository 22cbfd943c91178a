"""Signed distance primitives of the world's procedural objects (world/objects.py).

Every primitive is a pure function ``f(p, **params) -> d`` on points ``p`` [..., 3] returning
signed distances [...] (negative inside). Positions are given by a ``center`` argument; the
axis-aligned primitives (torus, cone, cylinder) take ``axis`` in {"x", "y", "z"} and are
defined along z, the other axes being handled by a cyclic permutation of the coordinates.

World frame: z up, objects stand roughly centred at the origin inside the ball of radius
0.85, and objects with a distinct front face it towards +x.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Vec3 = tuple[float, float, float]
SDF = Callable[[torch.Tensor], torch.Tensor]

_AXIS_PERMUTATION = {"x": (1, 2, 0), "y": (2, 0, 1), "z": (0, 1, 2)}


def _local(p: torch.Tensor, center: Vec3, axis: str = "z") -> torch.Tensor:
    """p - center, coordinates cyclically permuted so that ``axis`` becomes the last one
    (``index_select``: the numbers of ``q[..., perm]``, without advanced indexing's cost)."""
    q = p - torch.tensor(center, dtype=p.dtype, device=p.device)
    if axis == "z":
        return q
    return q.index_select(-1, torch.tensor(_AXIS_PERMUTATION[axis], device=p.device))


def _vec(v: Vec3, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(v, dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------------- primitives


def sphere(p: torch.Tensor, center: Vec3, radius: float) -> torch.Tensor:
    """Sphere (exact): ``|p - c| - r``."""
    return _local(p, center).norm(dim=-1) - radius


def box(p: torch.Tensor, center: Vec3, half_size: Vec3, rounding: float = 0.0) -> torch.Tensor:
    """Axis-aligned (rounded) box (exact), q = |p - c| - h + r:
    ``|max(q, 0)| + min(max_i q_i, 0) - r``. ``half_size`` includes the rounding radius r."""
    q = _local(p, center).abs() - _vec(half_size, p) + rounding
    return q.clamp_min(0.0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0.0) - rounding


def torus(
    p: torch.Tensor, center: Vec3, major_radius: float, minor_radius: float, axis: str = "z"
) -> torch.Tensor:
    """Torus around ``axis`` (exact): ``|(|q_xy| - R, q_z)| - r``."""
    q = _local(p, center, axis)
    ring = torch.stack([q[..., :2].norm(dim=-1) - major_radius, q[..., 2]], dim=-1)
    return ring.norm(dim=-1) - minor_radius


def capped_cone(
    p: torch.Tensor,
    center: Vec3,
    half_height: float,
    radius_bottom: float,
    radius_top: float,
    axis: str = "z",
) -> torch.Tensor:
    """Capped cone along ``axis`` (exact, Quilez), radius ``radius_bottom`` at q_z = -h and
    ``radius_top`` at q_z = +h. With q = (|q_xy|, q_z), k1 = (r2, h), k2 = (r2 - r1, 2h):
    ca = (q_x - min(q_x, r1 if q_z < 0 else r2), |q_z| - h),
    cb = q - k1 + k2 clamp(<k1 - q, k2> / |k2|^2, 0, 1),
    d = sign * sqrt(min(|ca|^2, |cb|^2)), negative iff cb_x < 0 and ca_y < 0."""
    q3 = _local(p, center, axis)
    qx, qy = q3[..., :2].norm(dim=-1), q3[..., 2]
    h, r1, r2 = half_height, radius_bottom, radius_top
    k2x, k2y = r2 - r1, 2.0 * h
    ca_x = qx - torch.minimum(qx, torch.where(qy < 0.0, r1, r2))
    ca_y = qy.abs() - h
    s = (((r2 - qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0.0, 1.0)
    cb_x = qx - r2 + k2x * s
    cb_y = qy - h + k2y * s
    sign = torch.where((cb_x < 0.0) & (ca_y < 0.0), -1.0, 1.0)
    return sign * torch.minimum(ca_x * ca_x + ca_y * ca_y, cb_x * cb_x + cb_y * cb_y).sqrt()


def capped_cylinder(
    p: torch.Tensor, center: Vec3, radius: float, half_height: float, axis: str = "z"
) -> torch.Tensor:
    """Capped cylinder along ``axis`` (exact), d = (|q_xy| - r, |q_z| - h):
    ``min(max(d_0, d_1), 0) + |max(d, 0)|``."""
    q = _local(p, center, axis)
    d = torch.stack([q[..., :2].norm(dim=-1) - radius, q[..., 2].abs() - half_height], dim=-1)
    return d.amax(dim=-1).clamp_max(0.0) + d.clamp_min(0.0).norm(dim=-1)


def ellipsoid(p: torch.Tensor, center: Vec3, radii: Vec3) -> torch.Tensor:
    """Axis-aligned ellipsoid (approximate, Quilez): k0 = |q / r|, k1 = |q / r^2|,
    ``d = k0 (k0 - 1) / k1``. Exact on the surface, a close estimate elsewhere."""
    q = _local(p, center)
    r = _vec(radii, p)
    k0 = (q / r).norm(dim=-1)
    k1 = (q / (r * r)).norm(dim=-1).clamp_min(1e-12)
    return k0 * (k0 - 1.0) / k1


def capsule(p: torch.Tensor, a: Vec3, b: Vec3, radius: float) -> torch.Tensor:
    """Capsule around the segment ab (exact): with h = clamp(<p-a, b-a> / |b-a|^2, 0, 1),
    ``|p - a - h (b - a)| - r``."""
    pa = p - _vec(a, p)
    ba = _vec(b, p) - _vec(a, p)
    h = ((pa * ba).sum(dim=-1, keepdim=True) / (ba * ba).sum()).clamp(0.0, 1.0)
    return (pa - h * ba).norm(dim=-1) - radius


def triangular_prism(
    p: torch.Tensor, center: Vec3, half_width: float, height: float, half_length: float
) -> torch.Tensor:
    """Gable-roof prism: triangle of base 2w (along x) and apex height h in the xz plane,
    base at ``center``, extruded over |q_y| <= L. Max of the face-plane distances
    ``max((h |q_x| + w q_z - w h) / |(h, w)|, -q_z, |q_y| - L)``: exact inside, a lower bound
    outside (safe for sphere tracing)."""
    q = _local(p, center)
    w, h = half_width, height
    slope = (h * q[..., 0].abs() + w * q[..., 2] - w * h) / (h * h + w * w) ** 0.5
    return torch.maximum(torch.maximum(slope, -q[..., 2]), q[..., 1].abs() - half_length)


def half_space_cut(p: torch.Tensor, sdf: SDF, normal: Vec3, offset: float = 0.0) -> torch.Tensor:
    """Intersection of ``sdf`` with the half space <p, n> >= offset (n unit):
    ``max(sdf(p), offset - <p, n>)`` (a lower bound of the exact distance)."""
    return torch.maximum(sdf(p), offset - (p * _vec(normal, p)).sum(dim=-1))
