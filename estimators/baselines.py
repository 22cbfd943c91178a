"""Baseline functions phi(x_t) for the Stein control variate: one scalar per image.

    constant       phi_base = 0, so phi = offset (default 1: SSD(phi=1, mu=1) == SDS)
    depth_pearson  phi = 1 - PearsonCorr(depth_render.detach(), D(x_t))   (the paper's)
    normal         phi = 1 - mean_opacity-weighted cos(normal_render.detach(), N(x_t))
    learned        a network trained online (estimators/learned_baseline.py; built by SSD,
                   not here)
    posterior      not a scalar phi: the matrix-valued field of the prior's posterior
                   responsibilities (estimators/posterior_field.py; built by SSD, not here)
    posterior_mc   not a scalar phi: the posterior mean's own control variate on the
                   references that can carry weight, its mean by Monte Carlo in their
                   subspace (estimators/posterior_field.py; built by SSD, not here)

combined as phi = offset + scale * phi_base: offset is the constant part of every baseline,
e.g. offset = 1, scale = lambda gives 1 + lambda * phi_depth, which keeps the SDS term
(phi = 1) inside the control variate.
D and N come from a GeometryEstimator (world Bayes estimator, DPT, ...), evaluated on the
*noisy* x_t so that grad_{x_t} phi exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from core.interfaces import GeometryEstimator, PriorContext

BaselineName = Literal[
    "constant", "depth_pearson", "normal", "learned", "posterior", "posterior_mc"
]
BASELINES: tuple[str, ...] = (
    "constant",
    "depth_pearson",
    "normal",
    "learned",
    "posterior",
    "posterior_mc",
)


def needs_geometry(name: str) -> bool:
    """True for the baselines that read a depth/normal estimator."""
    return name in ("depth_pearson", "normal")


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image Pearson correlation over all pixels: [B, ...] x [B, ...] -> [B]."""
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def baseline_function(
    name: BaselineName,
    t: torch.Tensor,
    ctx: PriorContext,
    render: dict[str, torch.Tensor],
    geometry: GeometryEstimator | None,
    offset: float = 0.0,
    scale: float = 1.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """phi: [B, C, H, W] -> [B] for this step (render maps are detached targets)."""
    if name == "constant":
        return lambda x_t: torch.full((x_t.shape[0],), offset, dtype=x_t.dtype, device=x_t.device)
    if geometry is None:
        raise ValueError(f"baseline {name!r} needs a geometry estimator")
    if name == "depth_pearson":
        target = render["depth"].detach()

        def phi_base(x_t):
            return 1.0 - pearson_correlation(target, geometry.depth(x_t, t, ctx))

    elif name == "normal":
        if "normal" not in render:
            raise ValueError("baseline 'normal' needs a backbone that renders normals")
        target = render["normal"].detach()
        weight = render["opacity"].detach().flatten(1)

        def phi_base(x_t):
            cos = (target * geometry.normal(x_t, t, ctx)).sum(dim=1).flatten(1)
            return 1.0 - (cos * weight).sum(1) / weight.sum(1).clamp_min(1e-6)

    else:
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    return lambda x_t: offset + scale * phi_base(x_t)
