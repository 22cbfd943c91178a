"""Hash-grid NeRF (threestudio's ``implicit-volume`` with a ``HashGrid`` encoding).

Field, for a point p in the box [-h, h]^3 and e = enc((p + h) / 2h) (backbones/hash_encoding):

    sigma(p) = act(mlp_sigma(e) + b(p)),  act = softplus | exp
    b(p)     = blob_scale (1 - |p| / blob_std)                 (``blob_magic3d``, default)
             = blob_scale exp(-|p|^2 / (2 blob_std^2))         (``blob_dreamfusion``)
    c(p)     = sigmoid(mlp_color(e))                            albedo in [0, 1]
    n(p)     = -grad sigma / |grad sigma|                       analytic (autograd, double
                                                                backward) or central
                                                                differences with step fd_eps

MLPs are bias-free ReLU networks (threestudio's VanillaMLP, tinycudann's FullyFusedMLP).
Background: a fixed colour, or ``learned``: sigmoid(mlp_bg(freq(d))) of the ray direction d
(threestudio's ``neural-environment-map``).

Rendering, chosen by the rays' device (never by catching an exception):
- CPU: ``n_samples`` evenly spaced samples inside the box per ray, dense nerfacc compositing
  (backbones/volume.py).
- CUDA: nerfacc's ``OccGridEstimator`` marching with step 2 sqrt(3) h / ``cuda_samples_per_ray``
  and packed rendering; the grid is refreshed by ``step_pre_render`` every
  ``occ_update_every`` steps (``update_every_n_steps``).

``state_dict()`` carries everything: the hash table, MLPs, learned background and the
occupancy grid (a registered submodule), so a plain state-dict round trip restores a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import nerfacc
import torch
import torch.nn.functional as F

from backbones.base import Backbone
from backbones.hash_encoding import HashEncoding
from backbones.volume import composite, stratified_samples, to_images
from core.cameras import Cameras, camera_rays

#: lambertian shading of the ``shaded`` output (as the world's renderer)
AMBIENT, DIFFUSE = 0.35, 0.65


@dataclass
class HashGridConfig:
    """Hash-grid NeRF knobs.

    Defaults are sized for 2 CPU cores at the default 32x32 render: 8 levels x 2 features,
    table 2^15, base resolution 16, per-level scale 1.447 (finest level 213^3), 32-unit
    MLPs, 48 samples per ray, and learning rates several times threestudio's so that a few
    hundred steps suffice. threestudio's values (16 levels, 2^19, 64-unit MLPs, lr 0.01 /
    0.001, learned background) are the preset configs/hashgrid_threestudio.yaml.
    """

    implementation: Literal["auto", "torch", "tcnn"] = "auto"
    compile: bool = False
    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378
    hidden_dim: int = 32
    n_hidden_layers: int = 1
    density_activation: Literal["softplus", "exp"] = "softplus"
    density_bias: Literal["blob_magic3d", "blob_dreamfusion", "none"] = "blob_magic3d"
    blob_scale: float = 10.0
    blob_std: float = 0.5
    normals: Literal["analytic", "finite_difference"] = "finite_difference"
    fd_eps: float = 0.01
    shading: Literal["none", "lambertian"] = "none"
    light_direction: tuple[float, float, float] = (0.4, 0.3, 0.85)
    background: Literal["fixed", "learned"] = "fixed"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background_frequencies: int = 4
    background_hidden_dim: int = 16
    half_extent: float = 1.0
    n_samples: int = 48
    cuda_samples_per_ray: int = 512
    occ_resolution: int = 64
    occ_update_every: int = 16
    occ_threshold: float = 0.01
    lr_encoding: float = 0.05
    lr_network: float = 0.01
    lr_background: float = 0.01

    def __post_init__(self) -> None:
        positive = (
            "n_levels",
            "n_features_per_level",
            "base_resolution",
            "hidden_dim",
            "n_samples",
            "cuda_samples_per_ray",
            "occ_resolution",
            "occ_update_every",
            "background_hidden_dim",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"hashgrid.{name} must be >= 1")
        if not 3 <= self.log2_hashmap_size <= 30:
            raise ValueError("hashgrid.log2_hashmap_size must lie in [3, 30]")
        if self.per_level_scale < 1.0:
            raise ValueError("hashgrid.per_level_scale must be >= 1")
        if self.n_hidden_layers < 0 or self.background_frequencies < 0:
            raise ValueError("hashgrid.n_hidden_layers and background_frequencies must be >= 0")
        for name in ("half_extent", "blob_std", "fd_eps", "lr_encoding", "lr_network"):
            if getattr(self, name) <= 0:
                raise ValueError(f"hashgrid.{name} must be > 0")
        if self.lr_background <= 0 or self.blob_scale < 0 or self.occ_threshold < 0:
            raise ValueError("hashgrid.lr_background > 0, blob_scale >= 0, occ_threshold >= 0")
        if not all(0.0 <= c <= 1.0 for c in self.background_color):
            raise ValueError("hashgrid.background_color must lie in [0, 1]")


class MLP(torch.nn.Module):
    """Bias-free ReLU MLP dims[0] -> ... -> dims[-1], no output activation.

    Weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's Linear default) from ``generator``.
    """

    def __init__(
        self, dims: list[int], generator: torch.Generator | None, device: torch.device | str
    ) -> None:
        super().__init__()
        self.layers = torch.nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
            self.layers.append(torch.nn.Parameter(w.to(device)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, w in enumerate(self.layers):
            x = x @ w.T
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def frequency_encoding(d: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """[..., 3] -> [..., 3 + 6 n]: (d, sin(2^k pi d), cos(2^k pi d)) for k < n."""
    parts = [d]
    for k in range(n_frequencies):
        parts += [torch.sin((2**k) * math.pi * d), torch.cos((2**k) * math.pi * d)]
    return torch.cat(parts, dim=-1)


def render_path(device: torch.device) -> Literal["dense", "packed"]:
    """The rendering branch for rays on ``device``: nerfacc's occupancy-grid marching and
    packed compositing are CUDA-only, so CUDA tensors go ``packed``, all others ``dense``."""
    return "packed" if device.type == "cuda" else "dense"


class HashGridNeRF(Backbone):
    """theta = hash table + density / colour MLPs (+ background MLP). See module docstring."""

    def __init__(
        self,
        config: HashGridConfig,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoding = HashEncoding(
            c.n_levels,
            c.n_features_per_level,
            c.log2_hashmap_size,
            c.base_resolution,
            c.per_level_scale,
            c.implementation,
            c.compile,
            generator,
            device,
        )
        hidden = [c.hidden_dim] * c.n_hidden_layers
        width = self.encoding.n_output_dims
        self.density_mlp = MLP([width, *hidden, 1], generator, device)
        self.color_mlp = MLP([width, *hidden, 3], generator, device)
        self.register_buffer("background_color", torch.tensor(c.background_color, device=device))
        self.background_mlp = None
        if c.background == "learned":
            dims = [3 + 6 * c.background_frequencies, c.background_hidden_dim]
            self.background_mlp = MLP([*dims, c.background_hidden_dim, 3], generator, device)
        h = c.half_extent
        self.occupancy = nerfacc.OccGridEstimator(
            roi_aabb=[-h, -h, -h, h, h, h], resolution=c.occ_resolution, levels=1
        ).to(device)
        # every cell starts occupied (no skipping until the first update_every_n_steps), so a
        # model trained on CPU, where the grid is never updated, still renders on CUDA
        self.occupancy.binaries.fill_(True)
        light = torch.tensor(c.light_direction, device=device)
        self.register_buffer("light", F.normalize(light, dim=0), persistent=False)

    #: the torch hash grid's fast gather is a custom autograd.Function without a vmap rule
    #: (and tinycudann cannot be vmapped): the variance probe's ``auto`` engine uses autograd
    supports_vmap = False

    def param_groups(self) -> list[dict]:
        c = self.config
        groups = [
            {"name": "encoding", "params": [self.encoding.params], "lr": c.lr_encoding},
            {
                "name": "network",
                "params": [*self.density_mlp.parameters(), *self.color_mlp.parameters()],
                "lr": c.lr_network,
            },
        ]
        if self.background_mlp is not None:
            groups.append(
                {
                    "name": "background",
                    "params": list(self.background_mlp.parameters()),
                    "lr": c.lr_background,
                }
            )
        return groups

    # ------------------------------------------------------------------------- the field

    def _features(self, points: torch.Tensor) -> torch.Tensor:
        h = self.config.half_extent
        return self.encoding((points.reshape(-1, 3) + h) / (2 * h))

    def density_bias(self, points: torch.Tensor) -> torch.Tensor:
        """b(p) for points [..., 3] -> [...]."""
        c = self.config
        if c.density_bias == "blob_magic3d":
            return c.blob_scale * (1.0 - points.norm(dim=-1) / c.blob_std)
        if c.density_bias == "blob_dreamfusion":
            return c.blob_scale * torch.exp(-0.5 * points.square().sum(-1) / c.blob_std**2)
        return torch.zeros_like(points[..., 0])

    def _activate(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) if self.config.density_activation == "softplus" else torch.exp(raw)

    def density_at(self, points: torch.Tensor) -> torch.Tensor:
        """sigma(p): points [..., 3] -> [...]."""
        raw = self.density_mlp(self._features(points))[:, 0].reshape(points.shape[:-1])
        return self._activate(raw + self.density_bias(points))

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [..., 3] -> sigma [...], albedo [..., 3] (one encoding pass)."""
        e = self._features(points)
        raw = self.density_mlp(e)[:, 0].reshape(points.shape[:-1])
        sigma = self._activate(raw + self.density_bias(points))
        color = torch.sigmoid(self.color_mlp(e)).reshape(*points.shape[:-1], 3)
        return sigma, color

    def normals_at(self, points: torch.Tensor) -> torch.Tensor:
        """Unit normals -grad sigma / |grad sigma|, points [..., 3] -> [..., 3]."""
        if self.config.normals == "analytic":
            create_graph = torch.is_grad_enabled()
            with torch.enable_grad():
                p = points.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(
                    self.density_at(p).sum(), p, create_graph=create_graph
                )
        else:
            step = self.config.fd_eps
            offsets = torch.eye(3, device=points.device, dtype=points.dtype) * step
            offsets = torch.cat([offsets, -offsets]).view(6, *[1] * (points.dim() - 1), 3)
            sigma = self.density_at(points[None] + offsets)  # [6, ...]
            grad = torch.stack([sigma[i] - sigma[i + 3] for i in range(3)], dim=-1) / (2 * step)
        return -F.normalize(grad, dim=-1, eps=1e-8)

    def background(self, directions: torch.Tensor) -> torch.Tensor:
        """Background colour per ray: directions [R, 3] -> [R, 3] (or [3] when fixed)."""
        if self.background_mlp is None:
            return self.background_color
        enc = frequency_encoding(directions, self.config.background_frequencies)
        return torch.sigmoid(self.background_mlp(enc))

    def _shaded(self, color: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        """Lambertian albedo (AMBIENT + DIFFUSE max(0, <n, l>)), per sample [..., 3]."""
        return color * (AMBIENT + DIFFUSE * (normal @ self.light).clamp_min(0.0))[..., None]

    # ------------------------------------------------------------------------- rendering

    def step_pre_render(self, optimizer, state, step):
        """Refresh the occupancy grid (CUDA rendering only) every ``occ_update_every`` steps
        (nerfacc's ``update_every_n_steps``; the grid is the estimator's own object)."""
        if render_path(self.encoding.params.device) != "packed":
            return state
        c = self.config
        step_size = 2 * math.sqrt(3) * c.half_extent / c.cuda_samples_per_ray
        self.occupancy.train()
        self.occupancy.update_every_n_steps(
            step=step,
            occ_eval_fn=lambda p: self.density_at(p) * step_size,
            occ_thre=c.occ_threshold,
            n=c.occ_update_every,
        )
        return state

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        normals: bool = False,
        info: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """rgb [B,3,H,W], depth, opacity [B,1,H,W]; with normals=True also normal [B,3,H,W]
        (and ``shaded`` [B,3,H,W] with shading=lambertian)."""
        if render_path(cameras.c2w.device) == "packed":
            rays = self._render_packed(cameras, height, width, normals)
        else:
            rays = self._render_dense(cameras, height, width, normals)
        if normals:
            rays["normal"] = F.normalize(rays["normal"], dim=-1, eps=1e-8)
        return to_images(rays, len(cameras), height, width)

    def _per_sample(self, points: torch.Tensor, normals: bool):
        sigma, color = self.query(points)
        extra = {}
        if normals:
            extra["normal"] = self.normals_at(points)
            if self.config.shading == "lambertian":
                extra["shaded"] = self._shaded(color, extra["normal"])
        return sigma, color, extra

    def _render_dense(self, cameras: Cameras, height: int, width: int, normals: bool) -> dict:
        c = self.config
        points, t_starts, t_ends, directions = stratified_samples(
            cameras, height, width, c.n_samples, c.half_extent
        )
        sigma, color, extra = self._per_sample(points, normals)
        background = self.background(directions)
        rays = composite(t_starts, t_ends, sigma, color, background, extra)
        if "shaded" in rays:
            rays["shaded"] = rays["shaded"] + (1.0 - rays["opacity"]) * background
        return rays

    def _render_packed(self, cameras: Cameras, height: int, width: int, normals: bool) -> dict:
        c = self.config
        origins, directions = camera_rays(cameras, height, width)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        n_rays = origins.shape[0]
        step_size = 2 * math.sqrt(3) * c.half_extent / c.cuda_samples_per_ray

        def sigma_fn(t_starts, t_ends, ray_indices):
            mid = 0.5 * (t_starts + t_ends)[:, None]
            return self.density_at(origins[ray_indices] + directions[ray_indices] * mid)

        ray_indices, t_starts, t_ends = self.occupancy.sampling(
            origins, directions, sigma_fn=sigma_fn, render_step_size=step_size, stratified=False
        )
        mid = 0.5 * (t_starts + t_ends)
        points = origins[ray_indices] + directions[ray_indices] * mid[:, None]
        sigma, color, extra = self._per_sample(points, normals)
        weights, _, _ = nerfacc.render_weight_from_density(
            t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=n_rays
        )

        def accumulate(values):
            return nerfacc.accumulate_along_rays(weights, values, ray_indices, n_rays)

        opacity = accumulate(None)
        background = self.background(directions)
        rays = {
            "rgb": accumulate(color) + (1.0 - opacity) * background,
            "depth": accumulate(mid[:, None]),
            "opacity": opacity,
        }
        for name, values in extra.items():
            rays[name] = accumulate(values)
        if "shaded" in rays:
            rays["shaded"] = rays["shaded"] + (1.0 - opacity) * background
        return rays
