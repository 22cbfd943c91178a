"""The one place the diffusion noise schedule comes from: a diffusers DDPM scheduler."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _alphas_cumprod(num_train_timesteps: int, beta_start: float, beta_end: float, kind: str):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=kind,
    )
    return scheduler.alphas_cumprod.to(torch.float32).clone()


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
