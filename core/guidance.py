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


# --- Perp-neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm") -----------
#
# As threestudio writes it (threestudio/models/guidance/stable_diffusion_guidance.py,
# ``predict_noise`` with ``use_perp_neg``; threestudio/utils/ops.py ``perpendicular_component``)
# and ScaleDreamer / CSD / SDI reuse it: with e_pos = eps_c - eps_u and one
# e_i = eps_neg_i - eps_u per negative prompt,
#
#     eps_hat = eps_u + s (e_pos + sum_i w_i perp(e_i, e_pos)),
#     perp(a, b) = a - (<a, b> / max(<b, b>, 1e-6)) b          (per image, over C, H, W)
#
# always in the diffusers form. The negatives are the view prompts not seen from this camera
# and w_i <= 0 their weights by azimuth (``perp_neg_view_weights``).

#: threestudio's PromptProcessor defaults (a, b, c) of w = a exp(-b r) + c
PERP_NEG_F_SB: tuple[float, float, float] = (1.0, 0.5, -0.606)
PERP_NEG_F_FSB: tuple[float, float, float] = (1.0, 0.5, 0.967)
PERP_NEG_F_FS: tuple[float, float, float] = (4.0, 0.5, -2.426)
PERP_NEG_F_SF: tuple[float, float, float] = (4.0, 0.5, -2.426)


def perpendicular_component(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a - (<a, b> / max(<b, b>, 1e-6)) b per image, a, b [B, ...] -> [B, ...].

    >>> a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    >>> perpendicular_component(a, b).tolist()
    [[0.0, 2.0]]
    """
    dims = tuple(range(1, a.dim()))
    shape = (-1,) + (1,) * (a.dim() - 1)
    bb = (b * b).sum(dim=dims).clamp_min(1e-6)
    return a - ((a * b).sum(dim=dims) / bb).view(shape) * b


def perp_neg_guidance(
    eps_cond: torch.Tensor,
    eps_uncond: torch.Tensor,
    eps_negs: list[torch.Tensor],
    weights: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """eps_u + s (e_pos + sum_i w_i perp(eps_neg_i - eps_u, e_pos)) (see above); weights
    [B, N] for the N negatives [B, ...] each. With every w_i = 0, or negatives parallel to
    e_pos, it is diffusers-form CFG exactly.

    >>> c, u = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)
    >>> perp_neg_guidance(c, u, [torch.tensor([[0.5, 1.0]])], torch.tensor([[-2.0]]), 3.0)
    tensor([[ 3., -6.]])
    """
    e_pos = eps_cond - eps_uncond
    shape = (-1,) + (1,) * (eps_cond.dim() - 1)
    accum = torch.zeros_like(e_pos)
    for i, eps_neg in enumerate(eps_negs):
        w = weights[:, i].to(e_pos.dtype).view(shape)
        accum = accum + w * perpendicular_component(eps_neg - eps_uncond, e_pos)
    return eps_uncond + scale * (e_pos + accum)


def shifted_exponential_decay(abc: tuple[float, float, float], r: torch.Tensor) -> torch.Tensor:
    """a exp(-b r) + c."""
    a, b, c = abc
    return a * torch.exp(-b * r) + c


def perp_neg_view_weights(
    azimuth_deg: torch.Tensor, overhead: torch.Tensor
) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """threestudio's perp-neg negatives and weights per camera (``get_text_embeddings_perp_neg``):
    azimuth a in (-180, 180], r = 1 - |a| / 90 for |a| < 90 (front-side; negatives front,
    side with weights -f_fs(r), -f_sf(1 - r)), else r = 2 - |a| / 90 (side-back; negatives
    side, front with -f_sb(r), -f_fsb(r)); overhead cameras get weights 0.

    Returns the B pairs of negative view names and the weights [B, 2] float64.

    >>> names, w = perp_neg_view_weights(torch.tensor([0.0, 90.0]), torch.tensor([False, False]))
    >>> names, [round(v, 3) for v in w.flatten().tolist()]
    ([('front', 'side'), ('side', 'front')], [-0.0, -1.574, -0.001, -1.574])
    """
    a = (azimuth_deg.to(torch.float64) + 180.0) % 360.0 - 180.0
    names, weights = [], []
    for ai, top in zip(a.tolist(), overhead.tolist(), strict=True):
        ai_t = torch.tensor(abs(ai), dtype=torch.float64)
        if top:
            names.append(("side", "front"))
            weights.append([0.0, 0.0])
        elif abs(ai) < 90.0:
            r = 1.0 - ai_t / 90.0
            names.append(("front", "side"))
            weights.append(
                [
                    -float(shifted_exponential_decay(PERP_NEG_F_FS, r)),
                    -float(shifted_exponential_decay(PERP_NEG_F_SF, 1.0 - r)),
                ]
            )
        else:
            r = 2.0 - ai_t / 90.0
            names.append(("side", "front"))
            weights.append(
                [
                    -float(shifted_exponential_decay(PERP_NEG_F_SB, r)),
                    -float(shifted_exponential_decay(PERP_NEG_F_FSB, r)),
                ]
            )
    return names, torch.tensor(weights, dtype=torch.float64).reshape(-1, 2)
