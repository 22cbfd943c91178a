"""Classifier Score Distillation (CSD, Yu et al. 2023):

    G = k w(t) (c_y eps_y + c_0 eps_0 + c_neg eps_neg + c_eps eps + c_pn P) / N

at x_t = alpha_t x + sigma_t eps, eps_neg under ``negative_prompt`` (CSD's own:
"oversaturated color, ugly, tiling, low quality, noisy"), k = ``scale``. Defaults as the
paper's DeepFloyd-IF code (CVMI-Lab/Classifier-Score-Distillation@5c65ca7, guidance
``deep_floyd_simple_guidance.py``, ``configs/csd-if.yaml``): c_y = 1, c_0 = -1 -> 0 and
c_neg = 0 -> -1 linearly over ``coef_anneal_steps`` (5000 there), c_eps = 0: it starts as the
pure classifier score eps_y - eps_0 and ends as eps_y - eps_neg.

Normalisation N (``normalize``): the original divides the whole batch's gradient by its L2
norm, ||G||_2 + 1e-8 over all images (``normalize_over = "batch"``); ``"image"`` divides each
image by its own norm; CSD's Stable Diffusion config (``csd-sd-refine.yaml``, guidance
``stable_diffusion_triple_guidance.py``) does not normalise (configs/csd.yaml).

Perp-neg (``perp_neg``, csd-if.yaml: ``use_perp_neg``, ``perpneg_scale`` 3): with e_pos =
eps_y - eps_neg and e_i = eps_view_i - eps_neg for the two view negatives of threestudio's
perp-neg (weights w_i by azimuth, core.guidance.perp_neg_view_weights),
P = sum_i w_i perp(e_i, e_pos) is added with c_pn = ``perp_neg_scale``.

CFG convention: none of its own; the coefficients *are* the convention. The diffusers form
with scale s is c_y = s, c_0 = 1 - s, c_neg = 0, c_eps = -1 without normalisation: that is
SDS exactly (bit for bit: the sum is evaluated as (c_y + c_0 + c_neg) eps_0 + c_y (eps_y -
eps_0) + c_neg (eps_neg - eps_0) + c_eps eps, tests/test_family.py). The inherited
``guidance_scale`` / ``cfg_mode`` are unused.

NFE per step: 1 (eps_y) + 1 if c_0 or its final value is non-zero + 1 if c_neg or its final
value is non-zero (3 with the defaults), + 2 view negatives with perp-neg (which needs eps_neg).
Deviation: no gradient clipping (the original's ``grad_clip`` is unset in both configs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from core.guidance import perpendicular_component
from core.schedule import add_noise
from estimators.base import EstimatorOutput, GradientEstimator, GuidanceConfig
from estimators.branches import (
    broadcast_weight,
    grad_norm,
    linear_anneal,
    perp_neg_negatives,
    require_negative,
)

#: CSD's negative prompt (csd-if.yaml and csd-sd-refine.yaml)
CSD_NEGATIVE = "oversaturated color, ugly, tiling, low quality, noisy"


@dataclass
class CSDConfig(GuidanceConfig):
    """CSD coefficients (see module docstring); ``*_final`` are reached after
    ``coef_anneal_steps`` (None: constant)."""

    c_y: float = 1.0
    c_0: float = -1.0
    c_0_final: float | None = 0.0
    c_neg: float = 0.0
    c_neg_final: float | None = -1.0
    c_eps: float = 0.0
    coef_anneal_steps: int = 300  # the paper: 5000 (configs/csd.yaml)
    normalize: bool = True
    #: "batch": G / (||G||_2 + 1e-8) over the whole batch (the original); "image": per image
    normalize_over: Literal["batch", "image"] = "batch"
    scale: float = 1.0
    negative_prompt: str = CSD_NEGATIVE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.coef_anneal_steps < 0:
            raise ValueError("coef_anneal_steps must be >= 0")
        if self.normalize_over not in ("batch", "image"):
            raise ValueError(f"normalize_over must be batch or image, got {self.normalize_over!r}")

    def coefficients(self, step: int) -> tuple[float, float, float]:
        """(c_y, c_0, c_neg) at ``step``."""
        c_0_end = self.c_0 if self.c_0_final is None else self.c_0_final
        c_neg_end = self.c_neg if self.c_neg_final is None else self.c_neg_final
        return (
            self.c_y,
            linear_anneal(self.c_0, c_0_end, step, self.coef_anneal_steps),
            linear_anneal(self.c_neg, c_neg_end, step, self.coef_anneal_steps),
        )

    @property
    def uses_uncond(self) -> bool:
        return self.c_0 != 0.0 or (self.c_0_final or 0.0) != 0.0

    @property
    def uses_negative(self) -> bool:
        return self.perp_neg or self.c_neg != 0.0 or (self.c_neg_final or 0.0) != 0.0


def normalise(g: torch.Tensor, over: str) -> torch.Tensor:
    """g / (||g||_2 + 1e-8) over the batch, or g / max(||g_b||_2, 1e-12) per image.

    >>> normalise(torch.tensor([[3.0, 0.0], [0.0, 4.0]]), "batch").tolist()
    [[0.6000000238418579, 0.0], [0.0, 0.800000011920929]]
    >>> normalise(torch.tensor([[3.0, 0.0], [0.0, 4.0]]), "image").tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    if over == "batch":
        return g / (g.norm(2) + 1e-8)
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (g.dim() - 1))


class CSD(GradientEstimator):
    name = "csd"

    def __init__(self, config: CSDConfig) -> None:
        self.config = config

    @classmethod
    def nfe_per_step(cls, config: CSDConfig, t: int | None = None) -> dict[str, int]:
        n = 1 + int(config.uses_uncond) + int(config.uses_negative)
        return {"prior": n + 2 * int(config.perp_neg)}

    def grad(self, x, t, eps, prior, ctx):
        cfg = self.config
        if cfg.uses_negative:
            require_negative(prior, self.name)
        c_y, c_0, c_neg = cfg.coefficients(ctx.step)
        with torch.no_grad():
            x_t = add_noise(x.detach(), t, eps, prior.alphas_cumprod)
            eps_y = prior.predict_branch(x_t, t, ctx, conditional=True)
            if cfg.uses_uncond:
                eps_0 = prior.predict_branch(x_t, t, ctx, conditional=False)
                combo = (c_y + c_0 + c_neg) * eps_0 + c_y * (eps_y - eps_0)
            else:
                eps_0, combo = None, c_y * eps_y
            if cfg.uses_negative:
                eps_neg = prior.predict_negative(x_t, t, ctx, cfg.negative_prompt)
                combo = combo + c_neg * (eps_neg if eps_0 is None else eps_neg - eps_0)
            if cfg.c_eps != 0.0:
                combo = combo + cfg.c_eps * eps
            if cfg.perp_neg:
                negs, weights = perp_neg_negatives(prior, x_t, t, ctx)
                e_pos, shape = eps_y - eps_neg, (-1,) + (1,) * (x.dim() - 1)
                for i, e_view in enumerate(negs):
                    w_i = weights[:, i].to(x.dtype).view(shape)
                    combo = combo + cfg.perp_neg_scale * w_i * perpendicular_component(
                        e_view - eps_neg, e_pos
                    )
        g = broadcast_weight(t, prior, cfg.weighting, x) * combo
        if cfg.normalize:
            g = normalise(g, cfg.normalize_over)
        g = cfg.scale * g
        return EstimatorOutput(g, {"grad_norm": grad_norm(g), "c_0": c_0, "c_neg": c_neg})
