"""Exact metrics of renders against a prompt's distribution of instances.

Notation: a model is rendered at V held-out views, ``renders`` [V, C, H, W] in [0, 1]; the
prompt's K instances are rendered at the same views, ``truths`` [K, V, C, H, W]. PSNR_kv is the
PSNR of view v against instance k (world.metrics.psnr), PSNR_k = mean_v PSNR_kv.

- best instance   k* = argmax_k PSNR_k (ties: the lowest k); ``psnr`` = PSNR_k*, and every
                  other per-instance metric (SSIM, depth, IoU, detail, colour) is taken against
                  k*. With K = 1 these are the one-object metrics, unchanged.
- mode averaging  ``psnr_mean_instance`` = mean_v PSNR(render_v, mean_k truth_kv), and
                  ``averaging`` = psnr_mean_instance - psnr (dB): > 0 when the render is closer
                  to the instances' average than to any instance (over-smoothing).
- commitment      fraction of views whose own best instance argmax_k PSNR_kv is k*: 1 when all
                  views agree on one instance, ~1/K when each view shows a different one.
- detail          high-frequency energy against the truth: E(x) = sum ||L * x||^2 with L the
                  3x3 Laplacian (valid positions, every channel), detail = E(render) / E(truth)
                  summed over views: 1 as detailed as the truth, < 1 smoother, > 1 noisier.
- colour          chroma c(x) = max_rgb - min_rgb per pixel; ``chroma`` = mean c(render) /
                  mean c(truth) over the truth's foreground (mask > 0.5): > 1 more saturated.
                  ``extreme`` = fraction of foreground pixels with a channel <= 0.02 or >= 0.98
                  in the render minus that fraction in the truth (clipped, blown-out colour).
- diversity       across seeds: ``seed_diversity`` gives the number of distinct best instances
                  reached and the mean pairwise RMSE between the seeds' renders.

>>> t = torch.zeros(2, 1, 3, 4, 4); t[1] += 1.0
>>> m = distribution_scores(torch.full((1, 3, 4, 4), 0.5), t)
>>> round(m["averaging"], 3), m["commitment"]
(93.979, 1.0)
"""

from __future__ import annotations

import torch

from world.metrics import psnr

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
#: channel values at or beyond these count as extreme (clipped) in ``extreme_fraction``
EXTREME_LOW, EXTREME_HIGH = 0.02, 0.98


def instance_psnr(renders: torch.Tensor, truths: torch.Tensor) -> torch.Tensor:
    """PSNR_kv of every view against every instance: [V, C, H, W] x [K, V, C, H, W] -> [K, V]."""
    k, v = truths.shape[:2]
    flat = truths.reshape(k * v, *truths.shape[2:])
    return psnr(renders.repeat(k, 1, 1, 1), flat).view(k, v)


def best_instance(per_view: torch.Tensor) -> int:
    """k* = argmax_k mean_v PSNR_kv of ``per_view`` [K, V] (the lowest k on ties)."""
    return int(per_view.mean(dim=1).argmax())


def commitment(per_view: torch.Tensor) -> float:
    """Fraction of views v with argmax_k PSNR_kv == k*, from ``per_view`` [K, V]."""
    k_star = best_instance(per_view)
    return float((per_view.argmax(dim=0) == k_star).to(torch.float32).mean())


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """sum over valid positions and channels of (L * x)^2 per image: [B, C, H, W] -> [B]."""
    b, c, h, w = images.shape
    kernel = LAPLACIAN.to(images).view(1, 1, 3, 3)
    out = torch.nn.functional.conv2d(images.reshape(b * c, 1, h, w), kernel)
    return (out**2).reshape(b, -1).sum(dim=1)


def detail_ratio(renders: torch.Tensor, truth: torch.Tensor) -> float:
    """sum_v E(render_v) / sum_v E(truth_v) (NaN when the truth has no high frequencies)."""
    e_truth = float(high_frequency_energy(truth).sum())
    if e_truth <= 0.0:
        return float("nan")
    return float(high_frequency_energy(renders).sum()) / e_truth


def chroma(images: torch.Tensor) -> torch.Tensor:
    """max_rgb - min_rgb per pixel: [B, 3, H, W] -> [B, H, W]."""
    return images.amax(dim=1) - images.amin(dim=1)


def chroma_ratio(renders: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """mean chroma of the renders / of the truth on the truth's foreground (mask [B, 1, H, W]
    > 0.5); NaN when the foreground is empty or colourless."""
    fg = mask[:, 0] > 0.5
    c_truth = chroma(truth)[fg]
    if c_truth.numel() == 0 or float(c_truth.mean()) <= 0.0:
        return float("nan")
    return float(chroma(renders)[fg].mean() / c_truth.mean())


def extreme_fraction(images: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of foreground pixels (mask > 0.5) with a channel <= 0.02 or >= 0.98."""
    fg = mask[:, 0] > 0.5
    if not bool(fg.any()):
        return float("nan")
    extreme = ((images <= EXTREME_LOW) | (images >= EXTREME_HIGH)).any(dim=1)
    return float(extreme[fg].to(torch.float32).mean())


def colour_scores(renders: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> dict:
    """``chroma`` (ratio to the truth's) and ``extreme`` (excess over the truth's fraction)."""
    return {
        "chroma": chroma_ratio(renders, truth, mask),
        "extreme": extreme_fraction(renders, mask) - extreme_fraction(truth, mask),
    }


def distribution_scores(renders: torch.Tensor, truths: torch.Tensor) -> dict:
    """The distribution metrics of the module docstring (``instance`` = k*).

    Args:
        renders: [V, C, H, W]; truths: [K, V, C, H, W] (K >= 1).
    Returns:
        psnr, instance, psnr_mean_instance, averaging, commitment (floats).
    """
    per_view = instance_psnr(renders, truths)
    k_star = best_instance(per_view)
    best = float(per_view[k_star].mean())
    mean_psnr = float(psnr(renders, truths.mean(dim=0)).mean())
    return {
        "psnr": best,
        "instance": float(k_star),
        "psnr_mean_instance": mean_psnr,
        "averaging": mean_psnr - best,
        "commitment": commitment(per_view),
    }


def seed_diversity(instances: list[int], renders: torch.Tensor) -> dict:
    """Diversity over S seeds: ``distinct`` best instances reached and the mean pairwise
    RMSE between the seeds' renders ([S, V, C, H, W]; NaN for S < 2).

    >>> seed_diversity([0, 0, 3], torch.zeros(3, 1, 3, 2, 2))["distinct"]
    2
    """
    s = renders.shape[0]
    if s != len(instances):
        raise ValueError(f"{len(instances)} instances for {s} seeds")
    flat = renders.reshape(s, -1).to(torch.float64)
    pairs = [
        float(((flat[i] - flat[j]) ** 2).mean().sqrt()) for i in range(s) for j in range(i + 1, s)
    ]
    return {
        "distinct": len(set(instances)),
        "pairwise_rmse": sum(pairs) / len(pairs) if pairs else float("nan"),
    }
