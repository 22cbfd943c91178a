"""Shared pieces of the score-distillation family (estimators/csd.py ... bridge.py).

Every family member forms G from a few prior branches at one or two noisy points; this module
holds what they share so no formula is copied: the noisy input, the guided prediction (the
one CFG function, core/guidance.py), w(t) shaped for broadcasting, linear annealing of a
coefficient, the capability check for the negative branch, and the CFG branch count of the
cost model (NFE: prior network evaluations per image).
"""

from __future__ import annotations

import dataclasses

import torch

from core.errors import UserError
from core.guidance import needs_unconditional, perp_neg_guidance, perp_neg_view_weights
from core.interfaces import DiffusionPrior
from core.weighting import Weighting, timestep_weight
from estimators.base import GuidanceConfig

#: NFSD's fixed negative prompt (Katzir et al., 2023)
NFSD_NEGATIVE = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
    "low-resolution, gloomy"
)
#: SDS-Bridge's stage-2 source prompt (McAllister et al., 2024): the prompt, its
#: ``src_modifier`` and, as its prompt processor adds, the camera's view suffix ({view})
BRIDGE_NEGATIVE = (
    "{prompt}, oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, "
    "noisy, malformed{view}"
)


def broadcast_weight(
    t: torch.Tensor, prior: DiffusionPrior, kind: Weighting, like: torch.Tensor
) -> torch.Tensor:
    """w(t) [B] reshaped to [B, 1, ..., 1] in ``like``'s dtype."""
    w = timestep_weight(t, prior.alphas_cumprod, kind)
    return w.view((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


#: the view-prompt template of a perp-neg negative (threestudio's view-dependent prompts)
VIEW_NEGATIVE = "{prompt}, %s view"
#: elevation (degrees) above which a camera is "overhead" (threestudio's default)
OVERHEAD_THRESHOLD = 60.0


def subset_context(ctx, rows: list[int]):
    """ctx restricted to the images ``rows`` (cameras and render outputs indexed)."""
    cameras = ctx.cameras[rows] if ctx.cameras is not None else None
    render = {k: v[rows] for k, v in ctx.render.items()}
    return dataclasses.replace(ctx, cameras=cameras, render=render)


def perp_neg_negatives(
    prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, ctx
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Perp-neg's two negatives eps_neg_i(x_t, t) [B, ...] and their weights [B, 2] by camera
    (core.guidance.perp_neg_view_weights): the prior's negative branch under the view prompt
    "{prompt}, <view> view" (the world ignores the text: its degraded distribution). Two
    evaluations per image (threestudio evaluates both, overhead cameras included)."""
    require_negative(prior, "perp-neg")
    cams = ctx.cameras
    names, weights = perp_neg_view_weights(cams.azimuth, cams.elevation > OVERHEAD_THRESHOLD)
    negs = []
    for slot in range(2):
        out = torch.empty_like(x_t)
        for view in sorted({pair[slot] for pair in names}):
            rows = torch.tensor([i for i, p in enumerate(names) if p[slot] == view])
            sub = subset_context(ctx, rows.tolist())
            out[rows] = prior.predict_negative(x_t[rows], t[rows], sub, VIEW_NEGATIVE % view)
        negs.append(out)
    return negs, weights.to(x_t.device)


def guided(
    prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, ctx, config: GuidanceConfig
) -> torch.Tensor:
    """cfg(x_t, t) under the config's named convention and scale (no graph). With
    ``perp_neg``: eps_u + s (e_pos + sum_i scale w_i perp(e_i, e_pos)) (core.guidance; the
    diffusers form whatever ``cfg_mode`` says, as threestudio)."""
    with torch.no_grad():
        if not config.perp_neg:
            return prior.predict_noise(x_t, t, ctx, config.guidance_scale, config.cfg_mode)
        eps_c = prior.predict_branch(x_t, t, ctx, conditional=True)
        eps_u = prior.predict_branch(x_t, t, ctx, conditional=False)
        negs, weights = perp_neg_negatives(prior, x_t, t, ctx)
        w = config.perp_neg_scale * weights
        return perp_neg_guidance(eps_c, eps_u, negs, w, config.guidance_scale)


def cfg_nfe(config: GuidanceConfig) -> int:
    """Branches one guided prediction costs: 1 (conditional only), 2, or 4 with perp-neg."""
    if config.perp_neg:
        return 4
    return 1 + int(needs_unconditional(config.guidance_scale, config.cfg_mode))


def linear_anneal(start: float, end: float, step: int, steps: int) -> float:
    """start + (end - start) min(1, step / steps); ``start`` when steps = 0.

    >>> linear_anneal(-1.0, 0.0, 50, 100)
    -0.5
    """
    if steps <= 0:
        return start
    return start + (end - start) * min(1.0, step / steps)


def require_negative(prior: DiffusionPrior, method: str) -> None:
    """UserError unless the prior offers the negative branch."""
    if not prior.supports_negative:
        raise UserError(
            f"method '{method}' needs a negative branch, which prior "
            f"{type(prior).__name__} does not offer"
        )


def grad_norm(g: torch.Tensor) -> float:
    """Mean per-image L2 norm of G [B, ...]."""
    return float(g.flatten(1).norm(dim=1).mean())
