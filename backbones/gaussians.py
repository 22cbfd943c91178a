"""3D Gaussian splatting backbone (3DGS; DreamGaussian / LucidDreamer for text-to-3D).

theta, per Gaussian i (N of them, N changes with densification):
    means [N, 3];  log_scales [N, 3] (S = exp);  quats [N, 4] (w, x, y, z, normalised);
    opacity_logits [N] (o = sigmoid);  sh_dc [N, 1, 3], sh_rest [N, K - 1, 3] (SH degree
    0 or 1, K = (degree + 1)^2; colour c = max(0, 0.5 + SH(d)), backbones/gaussian_raster.py)

Render (backbones/gaussian_raster.py): EWA projection, depth-sorted front-to-back compositing,
    rgb = clamp(sum_i w_i c_i + (1 - A) background, 0, 1),  opacity = A = sum_i w_i,
    depth = (sum_i w_i z_i) |ray| / z        (unnormalised expected ray distance, as the voxels)
    normal = depth-map normals (``normals=depth``: n = normalize(dP/dv x dP/du) of the
             back-projected depth, facing the camera) or the composited shortest axis of each
             Gaussian (``normals=shortest_axis``), world space, unit length where A > 0.
On CUDA tensors with gsplat importable (``implementation=auto``), gsplat's ``rasterization``
composites the same per-Gaussian features (its alpha clamp is 0.999 instead of 0.99).

Densification (adaptive density control of 3DGS, backbones/gaussian_density.py): the
view-space gradient |d L / d mu2d| (in NDC units, x W/2, H/2) of every training render is
accumulated in a backward hook; every ``densify_every`` steps in [densify_from,
densify_until] Gaussians with mean gradient >= ``densify_grad_threshold`` are cloned (max
scale <= percent_dense x extent) or split into 2 (scales / 1.6, positions drawn from the
Gaussian), then Gaussians with opacity < ``min_opacity`` are pruned; every
``opacity_reset_every`` steps opacities are capped at 0.01. Like gsplat's ``DefaultStrategy``
the schedule runs through explicit calls with the state passed in and returned
(backbones/base.py): ``step_pre_render`` densifies and re-indexes Adam's moments (zeros for
new Gaussians, as 3DGS) and sets the step's position lr; the training render fills ``info``
(means2d, radii); ``step_pre_backward`` keeps means2d's gradient; ``step_post_backward``
accumulates the statistics. Parameters keep their identity (``.data`` is replaced), so a
changing count needs no new optimiser; ``load_state_dict`` resizes to the saved count first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from backbones import gaussian_density as density
from backbones.base import Backbone
from backbones.gaussian_raster import (
    covariance_3d,
    intrinsics,
    project,
    quat_to_rotmat,
    rasterize,
    ray_length_factor,
    sh_colors,
    viewmats_from_c2w,
)
from core.cameras import Cameras, camera_rays


@dataclass
class GaussianConfig:
    """Gaussian splatting knobs. Defaults are sized for 2 CPU cores at 32x32 and a few hundred
    steps (see docs/gaussians.md); DreamGaussian's and LucidDreamer's values are the presets
    configs/gaussians_dreamgaussian.yaml and configs/gaussians_lucid.yaml."""

    implementation: Literal["auto", "torch", "gsplat"] = "auto"
    n_points: int = 1000
    init: Literal["sphere", "blob"] = "sphere"
    init_radius: float = 0.5
    init_opacity: float = 0.1
    sh_degree: int = 0
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    normals: Literal["depth", "shortest_axis"] = "depth"
    eps2d: float = 0.3
    max_pairs: int = 1 << 21
    lr_position: float = 1e-3
    lr_position_final: float = 2e-5
    lr_position_steps: int = 500
    lr_color: float = 0.01
    lr_opacity: float = 0.05
    lr_scaling: float = 0.005
    lr_rotation: float = 0.005
    densify_from: int = 100
    densify_until: int = 3000
    densify_every: int = 50
    densify_grad_threshold: float = 0.01
    percent_dense: float = 0.01
    scene_extent: float = 4.0
    min_opacity: float = 0.01
    max_screen_size: float = 0.0
    opacity_reset_every: int = 700
    max_points: int = 100_000

    def __post_init__(self) -> None:
        if self.n_points < 1 or self.max_points < self.n_points:
            raise ValueError("gaussians.n_points must be >= 1 and <= gaussians.max_points")
        if self.sh_degree not in (0, 1):
            raise ValueError("gaussians.sh_degree must be 0 or 1")
        if not 0.0 < self.init_opacity < 1.0 or self.init_radius <= 0:
            raise ValueError("gaussians.init_opacity must lie in (0, 1), init_radius > 0")
        for name in ("lr_position", "lr_position_final", "lr_color", "lr_opacity"):
            if getattr(self, name) <= 0:
                raise ValueError(f"gaussians.{name} must be > 0")
        if self.lr_scaling <= 0 or self.lr_rotation <= 0 or self.eps2d < 0:
            raise ValueError("gaussians.lr_scaling, lr_rotation > 0 and eps2d >= 0")
        if self.densify_every < 0 or self.opacity_reset_every < 0 or self.max_pairs < 1:
            raise ValueError("gaussians.densify_every, opacity_reset_every >= 0, max_pairs >= 1")
        if self.lr_position_steps < 1 or self.scene_extent <= 0:
            raise ValueError("gaussians.lr_position_steps >= 1 and scene_extent > 0")
        if not all(0.0 <= c <= 1.0 for c in self.background):
            raise ValueError("gaussians.background must lie in [0, 1]")


def position_lr(config: GaussianConfig, step: int) -> float:
    """Log-linear decay lr_position -> lr_position_final over lr_position_steps (3DGS's
    ``get_expon_lr_func`` without delay), constant afterwards.

    >>> round(position_lr(GaussianConfig(lr_position=1e-3, lr_position_final=1e-5), 250), 12)
    0.0001
    """
    u = min(max(step / config.lr_position_steps, 0.0), 1.0)
    log_lr = (1 - u) * math.log(config.lr_position) + u * math.log(config.lr_position_final)
    return math.exp(log_lr)


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def normals_from_depth(depth: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """World-space unit normals [B, 3, H, W] of a ray-distance depth map [B, 1, H, W]:
    P = o + depth d per pixel, n = normalize(dP/dx x dP/dy) (central differences, one-sided at
    the border), flipped to face the camera."""
    b, _, h, w = depth.shape
    origins, directions = camera_rays(cameras, h, w)  # [B, H, W, 3]
    points = origins + directions * depth.permute(0, 2, 3, 1)
    dx = torch.cat(
        [points[:, :, 1:2] - points[:, :, :1], 0.5 * (points[:, :, 2:] - points[:, :, :-2]),
         points[:, :, -1:] - points[:, :, -2:-1]], dim=2,
    )  # fmt: skip
    dy = torch.cat(
        [points[:, 1:2] - points[:, :1], 0.5 * (points[:, 2:] - points[:, :-2]),
         points[:, -1:] - points[:, -2:-1]], dim=1,
    )  # fmt: skip
    n = F.normalize(torch.linalg.cross(dx, dy, dim=-1), dim=-1, eps=1e-8)
    n = torch.where(((n * directions).sum(-1, keepdim=True) > 0), -n, n)
    return n.permute(0, 3, 1, 2).contiguous()


class GaussianSplats(Backbone):
    """theta = per-Gaussian means, log-scales, quaternions, opacity logits, SH (module doc)."""

    #: per-Gaussian tensors (dim 0 = N): parameters, then densification statistics
    PARAMS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")
    STATS = ("grad_accum", "grad_count", "max_radii")
    variable_rows = PARAMS + STATS
    #: data-dependent pair lists and sorts: torch.func cannot vmap the rasteriser
    supports_vmap = False

    def __init__(
        self,
        config: GaussianConfig,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        init = density.initial_gaussians(config, generator)
        for name in self.PARAMS:
            setattr(self, name, torch.nn.Parameter(init[name].to(device)))
        for name in self.STATS:
            self.register_buffer(name, torch.zeros(len(init["means"]), device=device))
        self.register_buffer("background", torch.tensor(config.background, device=device))
        # seed of the split samples: step k draws from Generator(seed + k), stateless
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.register_buffer("densify_seed", torch.tensor(seed, dtype=torch.int64))

    @property
    def n_gaussians(self) -> int:
        return self.means.shape[0]

    def param_groups(self) -> list[dict]:
        c = self.config
        return [
            {"name": "position", "params": [self.means], "lr": position_lr(c, 0)},
            {"name": "color", "params": [self.sh_dc], "lr": c.lr_color},
            {"name": "color_rest", "params": [self.sh_rest], "lr": c.lr_color / 20.0},
            {"name": "opacity", "params": [self.opacity_logits], "lr": c.lr_opacity},
            {"name": "scaling", "params": [self.log_scales], "lr": c.lr_scaling},
            {"name": "rotation", "params": [self.quats], "lr": c.lr_rotation},
        ]

    # ------------------------------------------------------------------ training hooks

    def initialize_state(self) -> dict:
        """``record``: this step's training render keeps its view-space gradients."""
        return {"record": False}

    def step_pre_render(self, optimizer, state, step):
        """Densify / prune / reset opacities on the schedule (module docstring), set the
        position lr of the step and re-index Adam's moments after a topology change."""
        change = density.scheduled_update(self, step)
        for group in optimizer.param_groups:
            if group.get("name") == "position":
                group["lr"] = position_lr(self.config, step)
        if change is not None:
            density.reindex_optimizer(optimizer, self, change)
        return {**state, "record": False}

    def step_pre_backward(self, optimizer, state, step, info):
        """Keep d L / d means2d of the training render (up to ``densify_until``)."""
        means2d = info.get("means2d")
        record = step <= self.config.densify_until and means2d is not None and means2d.requires_grad
        if record:
            means2d.retain_grad()
        return {**state, "record": record}

    def step_post_backward(self, optimizer, state, step, info):
        """Accumulate the view-space gradient statistics densification reads."""
        if state.get("record"):
            density.accumulate_view_space_gradients(
                self, info["means2d"].grad, info["radii"], info["width"], info["height"]
            )
        return {**state, "record": False}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Resize every per-Gaussian tensor to the saved count before the copy."""
        key = prefix + "means"
        if key in state_dict and state_dict[key].shape[0] != self.n_gaussians:
            density.resize(self, state_dict[key].shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ rendering

    def sh(self) -> torch.Tensor:
        """SH coefficients [N, K, 3] of the configured degree."""
        k = (self.config.sh_degree + 1) ** 2
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)[:, :k]

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        normals: bool = False,
        info: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """rgb [B,3,H,W] in [0, 1], depth and opacity [B,1,H,W], with normals=True normal
        [B,3,H,W] (module docstring); ``info`` receives means2d [B,N,2], radii [B,N], width
        and height for the training strategy."""
        c = self.config
        cameras = cameras.to(self.means.device)
        viewmats, ks = viewmats_from_c2w(cameras.c2w), intrinsics(cameras, height, width)
        scales = self.log_scales.exp()
        opacity = torch.sigmoid(self.opacity_logits)
        directions = self.means[None] - cameras.position[:, None, :]
        colors = sh_colors(self.sh(), directions, c.sh_degree)  # [B, N, 3]
        use_gsplat = c.implementation == "gsplat" or (
            c.implementation == "auto" and self.means.is_cuda and gsplat_available()
        )
        shortest = normals and c.normals == "shortest_axis"
        extra = [self._axis_normals(scales, directions)] if shortest else []
        if use_gsplat:
            feats, alpha, means2d, radii = self._gsplat(
                scales, opacity, colors, extra, viewmats, ks, height, width
            )
        else:
            covars = covariance_3d(self.quats, scales)
            proj = project(self.means, covars, viewmats, ks, width, height, c.eps2d)
            depth_feat = proj.depths[..., None]
            feats, alpha = rasterize(
                proj, opacity, torch.cat([colors, depth_feat, *extra], dim=-1),
                height, width, c.max_pairs,
            )  # fmt: skip
            means2d, radii = proj.means2d, proj.radii.amax(dim=-1)
        if info is not None:
            info.update(means2d=means2d, radii=radii, width=width, height=height)
        feats = feats.permute(0, 3, 1, 2)
        alpha = alpha.permute(0, 3, 1, 2)
        bg = self.background.view(1, 3, 1, 1)
        out = {
            "rgb": (feats[:, :3] + (1.0 - alpha) * bg).clamp(0.0, 1.0),
            "depth": feats[:, 3:4] * ray_length_factor(ks, height, width),
            "opacity": alpha,
        }
        if normals:
            n = feats[:, 4:7] if shortest else normals_from_depth(out["depth"], cameras)
            out["normal"] = F.normalize(n, dim=1, eps=1e-8) * (alpha.detach() > 0)
        return out

    def _axis_normals(self, scales: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Per-camera shortest-axis normals [B, N, 3], facing the camera."""
        rot = quat_to_rotmat(self.quats)  # [N, 3, 3], columns = axes
        idx = scales.argmin(dim=-1)
        axis = rot.gather(2, idx[:, None, None].expand(-1, 3, 1))[..., 0]  # [N, 3]
        sign = torch.where((directions * axis[None]).sum(-1, keepdim=True) > 0, -1.0, 1.0)
        return axis[None] * sign

    def _gsplat(self, scales, opacity, colors, extra, viewmats, ks, height, width):
        """gsplat.rasterization on CUDA: the same features, its own CUDA compositing."""
        from gsplat import rasterization

        b = viewmats.shape[0]
        depths = torch.einsum("bij,nj->bni", viewmats[:, :3, :3], self.means)[..., 2]
        depths = depths + viewmats[:, None, 2, 3]
        feats = torch.cat([colors, depths[..., None], *extra], dim=-1)
        out, alpha, info = rasterization(
            self.means, F.normalize(self.quats, dim=-1), scales, opacity, feats, viewmats, ks,
            width, height, eps2d=self.config.eps2d, packed=False, render_mode="RGB",
        )  # fmt: skip
        radii = info["radii"]
        radii = radii.amax(dim=-1) if radii.dim() == 3 else radii
        return out.reshape(b, height, width, -1), alpha, info["means2d"], radii
