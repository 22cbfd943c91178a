"""The one place the diffusion noise schedule comes from: DDPM's beta schedules, computed as
diffusers' ``DDPMScheduler`` computes them (the same float32 operations, so the same bits;
tests/test_guidance.py compares against the scheduler) without importing diffusers, whose
import takes seconds.

    linear          beta_t = linspace(beta_start, beta_end, T)
    scaled_linear   beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2   (SD)
    abar_t = prod_{s <= t} (1 - beta_s)

>>> [round(a, 4) for a in ddpm_alphas_cumprod(4, 0.1, 0.4, "linear").tolist()]
[0.9, 0.72, 0.504, 0.3024]
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _alphas_cumprod(num_train_timesteps: int, beta_start: float, beta_end: float, kind: str):
    n = num_train_timesteps
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif kind == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    else:
        raise ValueError(f"unknown beta schedule {kind!r} (linear, scaled_linear)")
    return torch.cumprod(1.0 - betas, dim=0)


def ddpm_alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    kind: str = "scaled_linear",
) -> torch.Tensor:
    """abar_t for t = 0..T-1, [T] float32 (Stable Diffusion's schedule by default)."""
    return _alphas_cumprod(num_train_timesteps, beta_start, beta_end, kind).clone()


def alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) for integer timesteps t [B] -> [B]."""
    abar = alphas_cumprod.to(t.device)[t]
    return abar.sqrt(), (1.0 - abar).sqrt()


def add_noise(
    x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Forward diffusion x_t = alpha_t x + sigma_t eps; x, eps [B, ...], t [B] int64."""
    alpha, sigma = alpha_sigma(alphas_cumprod, t)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return alpha.view(shape) * x + sigma.view(shape) * eps
