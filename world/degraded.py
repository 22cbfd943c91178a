"""The world's negative prompt: a degraded distribution of the same object.

Negative-prompt methods (CSD, NFSD, SDS-Bridge) need eps_neg(x_t, t), the noise prediction
under a prompt describing what the result should *not* look like (Stable Diffusion: text such
as "blurry, oversaturated, low quality"). The world's analogue is exact: the mixture of the
prompt's reference renders passed through four degradations,

    blur        Gaussian blur, std ``blur_sigma`` pixels (reflect padding)
    desaturate  c -> g + (1 - desaturation) (c - g),   g = luminance (0.299, 0.587, 0.114)
    saturate    c -> clip(g + saturation (c - g), -1, 1)
    noise       c -> clip(c + noise_std n, -1, 1),     n ~ N(0, I) from a fixed seed

each copy keeping its reference camera, so eps_neg is the optimal denoiser of
q_neg(x | y) = sum_i sum_k pi_i(c) / 4 N(D_k(x_i), tau^2 I) (world/prior.py's mixture math) and
the answer is known: eps_y - eps_neg points from "degraded object" towards "object".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEGRADATIONS: tuple[str, ...] = ("blur", "desaturate", "saturate", "noise")
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class DegradationConfig:
    """Strengths of the four degradations (images in [-1, 1])."""

    blur_sigma: float = 1.5
    desaturation: float = 0.9
    saturation: float = 2.5
    noise_std: float = 0.3
    seed: int = 0


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] images, kernel radius ceil(3 sigma), reflect pad.

    >>> x = torch.zeros(1, 1, 9, 9); x[..., 4, 4] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 4), bool(y[..., 4, 4] < 1.0)
    (1.0, True)
    """
    if sigma <= 0:
        return images
    radius = max(1, int(torch.tensor(3.0 * sigma).ceil()))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    kx = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), ky, groups=c)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] Rec. 601 luma (works on [-1, 1] images: it is linear)."""
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def degrade(images: torch.Tensor, config: DegradationConfig | None = None) -> torch.Tensor:
    """The degraded copies of [N, 3, H, W] images in [-1, 1]: [4N, 3, H, W], blocks ordered as
    ``DEGRADATIONS`` (each block in the input order).

    >>> x = torch.rand(2, 3, 8, 8) * 2 - 1
    >>> degrade(x).shape
    torch.Size([8, 3, 8, 8])
    """
    config = config or DegradationConfig()
    grey = luminance(images)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    blocks = (
        gaussian_blur(images, config.blur_sigma),
        grey + (1.0 - config.desaturation) * (images - grey),
        (grey + config.saturation * (images - grey)).clamp(-1.0, 1.0),
        (images + config.noise_std * noise.to(images.device)).clamp(-1.0, 1.0),
    )
    return torch.cat(blocks)
