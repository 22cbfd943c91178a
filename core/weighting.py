"""Timestep weighting w(t): the single implementation of every named option.

- ``sds``        w = 1 - abar_t = sigma_t^2   (DreamFusion / threestudio default)
- ``uniform``    w = 1
- ``fantasia3d`` w = sqrt(abar_t) (1 - abar_t)
- ``ism``        w = sqrt((1 - abar_t) / abar_t) = sigma_t / alpha_t   (LucidDreamer's ISM)
"""

from __future__ import annotations

from typing import Literal

import torch

Weighting = Literal["sds", "uniform", "fantasia3d", "ism"]
WEIGHTINGS: tuple[str, ...] = ("sds", "uniform", "fantasia3d", "ism")


def timestep_weight(t: torch.Tensor, alphas_cumprod: torch.Tensor, kind: Weighting) -> torch.Tensor:
    """w(t) for integer timesteps t [B] -> [B] float."""
    abar = alphas_cumprod.to(t.device)[t]
    if kind == "sds":
        return 1.0 - abar
    if kind == "uniform":
        return torch.ones_like(abar)
    if kind == "fantasia3d":
        return abar.sqrt() * (1.0 - abar)
    if kind == "ism":
        return ((1.0 - abar) / abar).sqrt()
    raise ValueError(f"unknown weighting {kind!r}; expected one of {WEIGHTINGS}")
