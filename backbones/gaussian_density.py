"""Initialisation and adaptive density control of the Gaussian backbone (3DGS, Kerbl et al.
2023, section 5; DreamGaussian's and LucidDreamer's schedules).

A change of the Gaussian set is a ``Topology``: the new per-Gaussian tensor is

    new = cat(old [N_old, ...], fresh [n_fresh, ...])[source]          source [N_new] int64

for every parameter, and the same map with ``fresh`` = 0 re-indexes Adam's moments (3DGS's
``cat_tensors_to_optimizer`` / ``_prune_optimizer``: new Gaussians start with zero moments,
kept ones keep theirs). Moments of the parameters named in ``zero_state`` are reset (the
opacity reset). Two changes compose into one (``then``).

Split (N = 2 children): x_child = R diag(s) z + x, z ~ N(0, I) from Generator(seed + step);
log s_child = log(s / 1.6); the parent is removed. Clone: an exact copy. Prune: opacity <
``min_opacity`` (and, with ``max_screen_size`` > 0, screen radius > max_screen_size or max
scale > 0.1 x extent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from backbones.gaussian_raster import quat_to_rotmat

MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass
class Topology:
    """new = cat(old, fresh)[source]; see module docstring."""

    source: torch.Tensor
    n_old: int
    n_fresh: int
    zero_state: frozenset[str] = field(default_factory=frozenset)

    def then(self, other: Topology) -> Topology:
        """The composition: apply ``self``, then ``other`` (whose old set is self's new)."""
        n1 = len(self.source)
        s = other.source
        composed = torch.where(
            s < n1, self.source[s.clamp_max(max(n1 - 1, 0))], self.n_old + self.n_fresh + s - n1
        )
        return Topology(
            composed, self.n_old, self.n_fresh + other.n_fresh, self.zero_state | other.zero_state
        )


def knn_scale(points: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """sqrt of the mean squared distance to the k nearest other points, [N] (3DGS's
    ``distCUDA2`` init), clamped at 1e-7 before the root; chunked rows, O(chunk x N) memory."""
    n = points.shape[0]
    if n < 2:
        return torch.full((n,), 0.01, dtype=points.dtype)
    k = min(k, n - 1)
    out = []
    for start in range(0, n, chunk):
        d2 = torch.cdist(points[start : start + chunk], points).square()
        rows = torch.arange(start, min(start + chunk, n))
        d2[rows - start, rows] = math.inf
        out.append(d2.topk(k, dim=1, largest=False).values.mean(dim=1))
    return torch.cat(out).clamp_min(1e-7).sqrt()


def initial_gaussians(config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """DreamGaussian's random init from ``generator``: ``sphere`` = n_points uniform in the
    ball of radius init_radius, ``blob`` = uniform on its surface (an opaque-looking ball like
    the voxels' blob); grey colour (SH DC ~ U(0, 1/255), as DreamGaussian), identity
    rotations, opacity init_opacity, isotropic scales from the 3 nearest neighbours."""
    n = config.n_points
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    radius = torch.rand(n, generator=generator) ** (1.0 / 3.0)
    if config.init == "blob":
        radius = torch.ones(n)
    means = direction * (config.init_radius * radius)[:, None]
    k = (config.sh_degree + 1) ** 2
    sh_dc = torch.rand(n, 1, 3, generator=generator) / 255.0
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    p = config.init_opacity
    return {
        "means": means,
        "log_scales": knn_scale(means).log()[:, None].repeat(1, 3),
        "quats": quats,
        "opacity_logits": torch.full((n,), math.log(p / (1 - p))),
        "sh_dc": sh_dc,
        "sh_rest": torch.zeros(n, max(k, 4) - 1, 3),
    }


def resize(module, n: int) -> None:
    """Give every per-Gaussian parameter and statistic ``n`` rows (contents undefined until a
    state dict is copied in); parameter objects keep their identity."""
    for name in module.PARAMS:
        p = getattr(module, name)
        p.data = p.data.new_zeros(n, *p.shape[1:])
        p.grad = None
    for name in module.STATS:
        module._buffers[name] = module._buffers[name].new_zeros(n)


def apply(module, topology: Topology, fresh: dict[str, torch.Tensor]) -> None:
    """Replace every parameter by cat(old, fresh[name])[source]; statistics restart at 0."""
    for name in module.PARAMS:
        p = getattr(module, name)
        rows = fresh[name].to(p.data) if topology.n_fresh else p.data[:0]
        p.data = torch.cat([p.data, rows])[topology.source].contiguous()
        p.grad = None
    for name in module.STATS:
        module._buffers[name] = module._buffers[name].new_zeros(len(topology.source))


def reindex_optimizer(optimizer: torch.optim.Optimizer, module, topology: Topology) -> None:
    """Re-index Adam's moments of the Gaussian parameters by ``topology`` (zeros for fresh
    rows; all zeros for the parameters in ``zero_state``)."""
    for name in module.PARAMS:
        state = optimizer.state.get(getattr(module, name))
        if not state:
            continue
        for key in MOMENTS:
            if key in state and state[key].shape[0] == topology.n_old:
                v = state[key]
                v = torch.cat([v, v.new_zeros(topology.n_fresh, *v.shape[1:])])[topology.source]
                state[key] = v.zero_() if name in topology.zero_state else v.contiguous()


def accumulate_view_space_gradients(
    module, grad: torch.Tensor | None, radii: torch.Tensor, width: int, height: int
) -> None:
    """Statistics of one training render after its backward: max screen radius, and
    |d L / d mu2d| in NDC units (x (W/2, H/2) x B, undoing the batch mean) of every Gaussian
    visible in each camera (grad = d L / d means2d [B, N, 2] or None, radii [B, N])."""
    visible = radii > 0
    with torch.no_grad():
        module.max_radii.copy_(torch.maximum(module.max_radii, radii.float().amax(dim=0)))
        if grad is None:
            return
        b = grad.shape[0]
        scale = torch.tensor([0.5 * width * b, 0.5 * height * b], device=grad.device)
        norm = (grad.reshape(b, -1, 2) * scale).norm(dim=-1)
        module.grad_accum.add_((norm * visible).sum(dim=0))
        module.grad_count.add_(visible.sum(dim=0).to(module.grad_count.dtype))


def densify_and_prune(module, step: int) -> tuple[Topology, dict[str, torch.Tensor]]:
    """3DGS's ``densify_and_prune`` on the accumulated statistics (module docstring)."""
    c = module.config
    n = module.n_gaussians
    grads = torch.where(module.grad_count > 0, module.grad_accum / module.grad_count, 0.0)
    scales = module.log_scales.detach().exp()
    big = scales.amax(dim=1) > c.percent_dense * c.scene_extent
    selected = grads >= c.densify_grad_threshold
    room = max(c.max_points - n, 0)
    if int(selected.sum()) + int((selected & big).sum()) > room:  # keep the largest gradients
        order = torch.argsort(torch.where(selected, grads, -1.0), descending=True)
        cost = torch.cumsum((1 + big[order].long()) * selected[order].long(), 0)
        selected = torch.zeros_like(selected)
        selected[order[cost <= room]] = True
        selected &= grads >= c.densify_grad_threshold
    clone = (selected & ~big).nonzero().squeeze(-1)
    split = (selected & big).nonzero().squeeze(-1)
    params = {name: getattr(module, name).detach() for name in module.PARAMS}
    fresh = {
        name: torch.cat([v[clone], v[split].repeat_interleave(2, 0)]) for name, v in params.items()
    }
    if len(split):
        g = torch.Generator().manual_seed(int(module.densify_seed) + step)
        std = scales[split].repeat_interleave(2, 0)
        z = torch.randn(std.shape, generator=g).to(std) * std
        rot = quat_to_rotmat(params["quats"][split]).repeat_interleave(2, 0)
        fresh["means"][len(clone) :] = (rot @ z[..., None])[..., 0] + params["means"][
            split
        ].repeat_interleave(2, 0)
        fresh["log_scales"][len(clone) :] = torch.log(std / (0.8 * 2))
    keep_old = (~torch.isin(torch.arange(n, device=grads.device), split)).nonzero().squeeze(-1)
    n_fresh = len(clone) + 2 * len(split)
    arange = torch.arange(n_fresh, device=grads.device)
    grow = Topology(torch.cat([keep_old, n + arange]), n, n_fresh)
    # prune on the grown set
    opacity = torch.sigmoid(torch.cat([params["opacity_logits"], fresh["opacity_logits"]]))
    opacity = opacity[grow.source]
    prune = opacity < c.min_opacity
    if c.max_screen_size > 0:
        radii = torch.cat([module.max_radii, module.max_radii.new_zeros(n_fresh)])[grow.source]
        all_scales = torch.cat([params["log_scales"], fresh["log_scales"]])[grow.source].exp()
        prune |= radii > c.max_screen_size
        prune |= all_scales.amax(dim=1) > 0.1 * c.scene_extent
    if bool(prune.all()):  # never prune the last Gaussian
        prune[torch.argmax(opacity)] = False
    shrink = Topology((~prune).nonzero().squeeze(-1), len(grow.source), 0)
    return grow.then(shrink), fresh


def reset_opacity(module) -> Topology:
    """Opacity reset: o <- min(o, 0.01), opacity moments zeroed (identity topology)."""
    p = module.opacity_logits
    cap = math.log(0.01 / 0.99)
    p.data = torch.minimum(p.data, torch.full_like(p.data, cap))
    n = module.n_gaussians
    return Topology(torch.arange(n, device=p.device), n, 0, frozenset({"opacity_logits"}))


def scheduled_update(module, step: int) -> Topology | None:
    """The density-control events due before training step ``step`` (after ``step``
    optimiser steps): densify and prune every densify_every steps in [densify_from,
    densify_until], opacity reset every opacity_reset_every steps up to densify_until."""
    c = module.config
    change = None
    in_window = 0 < step <= c.densify_until
    if in_window and c.densify_every > 0 and step >= c.densify_from and step % c.densify_every == 0:
        change, fresh = densify_and_prune(module, step)
        apply(module, change, fresh)
    if in_window and c.opacity_reset_every > 0 and step % c.opacity_reset_every == 0:
        reset = reset_opacity(module)
        change = reset if change is None else change.then(reset)
    return change
