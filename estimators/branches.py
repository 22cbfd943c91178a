"""Shared pieces of the score-distillation family (estimators/csd.py ... bridge.py).

Every family member forms G from a few prior branches at one or two noisy points; this module
holds what they share so no formula is copied: the noisy input, the guided prediction (the
one CFG function, core/guidance.py), w(t) shaped for broadcasting, linear annealing of a
coefficient, the capability check for the negative branch, and the CFG branch count of the
cost model (NFE: prior network evaluations per image).
"""

from __future__ import annotations

import torch

from core.errors import UserError
from core.guidance import needs_unconditional
from core.interfaces import DiffusionPrior
from core.weighting import Weighting, timestep_weight
from estimators.base import GuidanceConfig

#: NFSD's fixed negative prompt (Katzir et al., 2023)
NFSD_NEGATIVE = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
    "low-resolution, gloomy"
)
#: SDS-Bridge's stage-2 source prompt suffix (McAllister et al., 2024)
BRIDGE_NEGATIVE = (
    "{prompt}, oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, "
    "noisy, malformed"
)


def broadcast_weight(
    t: torch.Tensor, prior: DiffusionPrior, kind: Weighting, like: torch.Tensor
) -> torch.Tensor:
    """w(t) [B] reshaped to [B, 1, ..., 1] in ``like``'s dtype."""
    w = timestep_weight(t, prior.alphas_cumprod, kind)
    return w.view((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def guided(
    prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, ctx, config: GuidanceConfig
) -> torch.Tensor:
    """cfg(x_t, t) under the config's named convention and scale (no graph)."""
    with torch.no_grad():
        return prior.predict_noise(x_t, t, ctx, config.guidance_scale, config.cfg_mode)


def cfg_nfe(config: GuidanceConfig) -> int:
    """Branches one guided prediction costs: 1 (conditional only) or 2."""
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
    if not getattr(prior, "supports_negative", False):
        raise UserError(
            f"method '{method}' needs a negative branch, which prior "
            f"{type(prior).__name__} does not offer"
        )


def grad_norm(g: torch.Tensor) -> float:
    """Mean per-image L2 norm of G [B, ...]."""
    return float(g.flatten(1).norm(dim=1).mean())
