"""Exact quality metrics against the true object's renders."""

from __future__ import annotations

import torch


def psnr(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image: [B, C, H, W] x [B, C, H, W] -> [B] (dB).

    PSNR = 10 log10(max^2 / MSE), MSE clamped at 1e-10 (identical images give 100 dB).
    """
    mse = ((prediction - target) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return 10.0 * torch.log10(max_value**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Normalised 1D gaussian [size] centred on the middle tap."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    max_value: float = 1.0,
    window_size: int = 11,
    window_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004): [B, C, H, W] x [B, C, H, W] -> [B].

    Local statistics use an 11 x 11 gaussian window (sigma 1.5), evaluated at every position
    where the window fits ("valid", no padding, as in the reference implementation); with
    C1 = (k1 L)^2, C2 = (k2 L)^2 and L = ``max_value``:

        SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2)
                     / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    averaged over channels and window positions. 1 for identical images; for two constant
    images a, b it is (2ab + C1) / (a^2 + b^2 + C1). Images smaller than the window use a
    window of their smaller side (the window is truncated, then renormalised).
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(
            f"ssim expects two [B, C, H, W] tensors, got {prediction.shape}, {target.shape}"
        )
    b, c, h, w = prediction.shape
    size = min(window_size, h, w)
    g = _gaussian_window(size, window_sigma, prediction.dtype, prediction.device)
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    x, y = prediction.to(dtype), target.to(dtype)
    g = g.to(dtype)

    def blur(v: torch.Tensor) -> torch.Tensor:
        """Separable valid gaussian filter, [B, C, H, W] -> [B, C, H-size+1, W-size+1]."""
        v = v.reshape(b * c, 1, v.shape[2], v.shape[3])
        v = torch.nn.functional.conv2d(v, g.view(1, 1, size, 1))
        v = torch.nn.functional.conv2d(v, g.view(1, 1, 1, size))
        return v.reshape(b, c, v.shape[2], v.shape[3])

    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(dim=1)


def l1_scale(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The scale s >= 0 minimising sum_i w_i |s p_i - d_i| per row: [B, N] x3 -> [B].

    sum_i w_i |p_i| |s - d_i / p_i| is minimised by the weighted median of the ratios
    d_i / p_i with weights w_i |p_i| (lower weighted median: the smallest ratio whose
    cumulative weight reaches half the total). Rows with no usable weight get s = 0.
    """
    usable = (weight > 0) & (pred.abs() > 1e-12)
    wts = torch.where(usable, weight * pred.abs(), torch.zeros_like(pred))
    ratio = torch.where(usable, target / torch.where(usable, pred, torch.ones_like(pred)), 0.0)
    ratio = torch.where(usable, ratio, torch.full_like(ratio, torch.inf))
    order = ratio.argsort(dim=1)
    r_sorted = ratio.gather(1, order)
    w_sorted = wts.gather(1, order)
    total = w_sorted.sum(dim=1, keepdim=True)
    reached = w_sorted.cumsum(dim=1) >= 0.5 * total
    index = reached.to(torch.int64).argmax(dim=1, keepdim=True)
    s = r_sorted.gather(1, index)[:, 0]
    return torch.where(total[:, 0] > 0, s, torch.zeros_like(s))


def depth_l1(
    pred_depth: torch.Tensor, true_depth: torch.Tensor, true_mask: torch.Tensor
) -> torch.Tensor:
    """Scale-aligned L1 depth error on the true object's mask, per image: [B, 1, H, W] x3 -> [B].

    M = {pixels with true_mask > 0.5}. The scale s is fitted per image in L1,
    s = argmin_s sum_{i in M} |s dp_i - dt_i| (a weighted median, see ``l1_scale``), and

        depth_l1 = mean_{i in M} |s dp_i - dt_i|

    in scene units (distance along the ray). 0 for a perfect (or perfectly scaled) depth
    map; a render with no depth on M (e.g. blank: dp = 0) gets s = 0, i.e. the mean true depth
    on M. NaN where M is empty.
    """
    mask = (true_mask > 0.5).flatten(1).to(pred_depth.dtype)
    dp, dt = pred_depth.flatten(1), true_depth.flatten(1).to(pred_depth.dtype)
    s = l1_scale(dp, dt, mask)
    err = ((s[:, None] * dp - dt).abs() * mask).sum(dim=1)
    count = mask.sum(dim=1)
    return torch.where(count > 0, err / count.clamp_min(1.0), torch.full_like(err, torch.nan))


def mask_iou(pred_opacity: torch.Tensor, true_mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of (opacity > 0.5) and (true mask > 0.5): [B, 1, H, W] x2 -> [B].

    1 when both masks are empty (they agree); 0 for a blank render of a visible object.
    """
    a = (pred_opacity > 0.5).flatten(1)
    b = (true_mask > 0.5).flatten(1)
    inter = (a & b).sum(dim=1).to(torch.float32)
    union = (a | b).sum(dim=1).to(torch.float32)
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def angular_distance(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """|a - b| on the circle in degrees, in [0, 180] (broadcasting)."""
    d = torch.remainder(torch.as_tensor(a) - b, 360.0)
    return torch.minimum(d, 360.0 - d)


def nearest_azimuth(
    renders: torch.Tensor, candidates: torch.Tensor, candidate_azimuths: torch.Tensor
) -> torch.Tensor:
    """Azimuth of the candidate closest in RGB MSE to each render:
    [V, C, H, W] x [M, C, H, W] x [M] -> [V] degrees (ties: the first candidate)."""
    mse = ((renders[:, None] - candidates[None]) ** 2).flatten(2).mean(dim=2)  # [V, M]
    return candidate_azimuths.to(renders.device)[mse.argmin(dim=1)]


def janus_score(
    renders: torch.Tensor,
    view_azimuths: torch.Tensor,
    candidates: torch.Tensor,
    candidate_azimuths: torch.Tensor,
    front_azimuth: float = 0.0,
    back_within: float = 60.0,
    front_within: float = 60.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-face (Janus) scores of renders of an object whose front faces ``front_azimuth``.

    Inputs: ``renders`` [V, C, H, W] of the model at cameras with azimuths ``view_azimuths``
    [V] (degrees) and ``candidates`` [M, C, H, W], the true object's renders at azimuths
    ``candidate_azimuths`` [M], all at one elevation (the views'). Back views are the views
    within ``back_within`` degrees of the back direction (front + 180); the others are
    ignored. For each back view v, a*(v) = the candidate azimuth whose true render is nearest
    in RGB MSE (``nearest_azimuth``): the direction the render looks like it was seen from.
    RGB includes shading, which is what distillation copies: a face that SDS paints on the
    back carries the front references' baked shading (a physically re-lit second face is
    darker and may match the dark true back instead).
    Returns two scalars in [0, 1]:

        janus       = mean over back views of angle(a*(v), azimuth(v)) / 180: 0 when every
                      back view looks like itself, 1 when every back view looks like the
                      opposite side, i.e. the front (a two-faced object). Any render that
                      looks like another azimuth (e.g. the same side face everywhere) is
                      penalised in proportion to the angle.
        janus_front = fraction of back views whose a*(v) lies within ``front_within``
                      degrees of the front: the strict "the back shows the front" count.

    When the views' azimuths are among the candidates, the true object's own renders score
    exactly (0, 0). A featureless render (e.g. the initial blob) matches an arbitrary
    azimuth, so compare models of similar quality. NaN for both when no view is a back view.
    """
    view_azimuths = view_azimuths.to(renders.device, torch.float32)
    back = angular_distance(view_azimuths, front_azimuth + 180.0) < back_within
    if not bool(back.any()):
        nan = torch.tensor(float("nan"))
        return nan, nan
    best = nearest_azimuth(renders[back], candidates, candidate_azimuths.to(torch.float32))
    error = angular_distance(best, view_azimuths[back]) / 180.0
    frontal = (angular_distance(best, front_azimuth) < front_within).to(torch.float32)
    return error.mean(), frontal.mean()
