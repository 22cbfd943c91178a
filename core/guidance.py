"""Classifier-free guidance: the single implementation of both conventions.

Both are recorded by name in every result, because code bases mix them:

- ``"diffusers"``:   eps_hat = eps_u + s (eps_c - eps_u)   (s = 1 is the conditional model)
- ``"dreamfusion"``: eps_hat = eps_c + s (eps_c - eps_u)   (s = 0 is the conditional model;
  threestudio's SDS uses this form with s = 100)
"""

from __future__ import annotations

from typing import Literal

import torch

CFGMode = Literal["diffusers", "dreamfusion"]
CFG_MODES: tuple[str, ...] = ("diffusers", "dreamfusion")


def classifier_free_guidance(
    eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float, mode: CFGMode
) -> torch.Tensor:
    """Combine conditional and unconditional noise predictions (same shapes) by ``mode``."""
    if mode == "diffusers":
        return eps_uncond + scale * (eps_cond - eps_uncond)
    if mode == "dreamfusion":
        return eps_cond + scale * (eps_cond - eps_uncond)
    raise ValueError(f"unknown cfg_mode {mode!r}; expected one of {CFG_MODES}")


def needs_unconditional(scale: float, mode: CFGMode) -> bool:
    """False when the guided prediction equals the conditional one, so eps_u can be skipped."""
    return not ((mode == "diffusers" and scale == 1.0) or (mode == "dreamfusion" and scale == 0.0))
