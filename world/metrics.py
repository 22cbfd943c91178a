"""Exact quality metrics against the true object's renders."""

from __future__ import annotations

import torch


def psnr(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image: [B, C, H, W] x [B, C, H, W] -> [B] (dB).

    PSNR = 10 log10(max^2 / MSE), MSE clamped at 1e-10 (identical images give 100 dB).
    """
    mse = ((prediction - target) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return 10.0 * torch.log10(max_value**2 / mse)
