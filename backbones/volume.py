"""Volume rendering shared by the grid backbones: stratified samples + nerfacc compositing.

Dense [n_rays, n_samples] layout, which nerfacc supports on CPU and CUDA alike:
    w_i = T_i (1 - exp(-sigma_i delta_i)),  T_i = exp(-sum_{j<i} sigma_j delta_j)
    rgb = sum_i w_i c_i + (1 - sum_i w_i) background,  depth = sum_i w_i t_i
"""

from __future__ import annotations

import nerfacc
import torch

from core.cameras import Cameras, camera_rays, ray_box_intersect


def stratified_samples(
    cameras: Cameras, height: int, width: int, n_samples: int, half_extent: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evenly spaced samples inside the scene box along every pixel ray.

    Returns:
        points: [R, S, 3] sample midpoints, R = B*H*W rays, S = n_samples;
        t_starts, t_ends: [R, S] interval bounds (zero length for rays that miss the box);
        directions: [R, 3].
    """
    origins, directions = camera_rays(cameras, height, width)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    t_near, t_far, hit = ray_box_intersect(origins, directions, half_extent)
    t_far = torch.where(hit, t_far, t_near)
    u = torch.linspace(0.0, 1.0, n_samples + 1, device=origins.device)
    edges = t_near[:, None] + (t_far - t_near)[:, None] * u  # [R, S+1]
    t_starts, t_ends = edges[:, :-1], edges[:, 1:]
    t_mid = 0.5 * (t_starts + t_ends)
    points = origins[:, None, :] + directions[:, None, :] * t_mid[..., None]
    return points, t_starts, t_ends, directions


def composite(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    sigmas: torch.Tensor,
    colors: torch.Tensor,
    background: torch.Tensor,
    extra: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Alpha-composite dense samples: sigmas [R, S], colors [R, S, 3], background [3];
    ``extra`` per-sample values [R, S, C] are accumulated as sum_i w_i v_i too.

    Returns rgb [R, 3], depth [R, 1], opacity [R, 1] and the extra keys [R, C].
    """
    weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigmas)
    opacity = nerfacc.accumulate_along_rays(weights, None)
    rgb = nerfacc.accumulate_along_rays(weights, colors) + (1.0 - opacity) * background
    depth = nerfacc.accumulate_along_rays(weights, (0.5 * (t_starts + t_ends))[..., None])
    out = {"rgb": rgb, "depth": depth, "opacity": opacity}
    for name, values in (extra or {}).items():
        out[name] = nerfacc.accumulate_along_rays(weights, values)
    return out


def to_images(rays: dict[str, torch.Tensor], batch: int, height: int, width: int) -> dict:
    """[B*H*W, C] ray outputs -> [B, C, H, W] images."""
    return {
        k: v.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
        for k, v in rays.items()
    }
