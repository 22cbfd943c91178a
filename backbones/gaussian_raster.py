"""Pure-torch differentiable rasteriser of 3D Gaussians (3DGS / gsplat conventions, any device).

A Gaussian i has mean mu_i, covariance Sigma_i = R_i S_i S_i^T R_i^T (R from a unit quaternion
(w, x, y, z), S = diag(scales)), opacity o_i in (0, 1) and a feature vector f_i (colour, ...).

Projection (EWA splatting, Zwicker et al. 2002), camera frame OpenCV (x right, y down, looking
along +z; the world's cameras are OpenGL c2w and are converted by ``viewmats_from_c2w``):

    t = W mu + w,  mu2d = (fx t_x / t_z + cx, fy t_y / t_z + cy)
    J = [[fx / t_z, 0, -fx t_x / t_z^2], [0, fy / t_z, -fy t_y / t_z^2]]
    Sigma2d = J W Sigma W^T J^T + eps2d I,   conic = Sigma2d^-1

(t_x / t_z and t_y / t_z clamped to 1.3 x the half field of view inside J, as gsplat does).

Compositing, front to back over the Gaussians sorted by t_z, at pixel centre p:

    alpha_i = min(0.99, o_i exp(-0.5 d^T conic_i d)),  d = p - mu2d_i;  alpha_i < 1/255 -> 0
    T_i = prod_{j<i} (1 - alpha_j);   Gaussian i contributes iff T_i (1 - alpha_i) > 1e-4
    F(p) = sum_i alpha_i T_i f_i,     A(p) = sum_i alpha_i T_i

Only (pixel, Gaussian) pairs inside the Gaussian's 3.33-sigma box are evaluated (outside it
alpha < 1/255 whenever o <= 1: sqrt(2 ln 255) = 3.329), so the work follows the splats'
area, not pixels x Gaussians. Pairs are sorted by (pixel, depth) and the per-pixel product
is a segmented scan in log space (float64). Pixels are processed in chunks of at most
``max_pairs`` pairs; with more than one chunk each chunk is recomputed in the backward
(torch.utils.checkpoint), so memory stays O(max_pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from core.cameras import Cameras

#: SH basis constants of degree 0 and 1 (3DGS / gsplat)
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
#: 3DGS / gsplat compositing constants
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
#: box half-width in standard deviations (gsplat's 3.33 > sqrt(2 ln 255))
BOX_SIGMAS = 3.33

# OpenGL camera (-z forward, +y up) -> OpenCV camera (+z forward, +y down)
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] of quaternions [..., 4] (w, x, y, z), normalised first.

    >>> quat_to_rotmat(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]])
    """
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T: quats [..., 4], scales [..., 3] -> [..., 3, 3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def viewmats_from_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera matrices [B, 4, 4] of OpenGL camera-to-world matrices [B, 4, 4]."""
    return _GL_TO_CV.to(c2w) @ torch.linalg.inv(c2w)


def intrinsics(cameras: Cameras, height: int, width: int) -> torch.Tensor:
    """Pinhole K [B, 3, 3] of the world's cameras (core/cameras.py camera_rays): square pixels,
    f = H / (2 tan(fovy / 2)), principal point at the image centre (pixel centres at +0.5)."""
    f = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fovy.to(torch.float32)))
    k = torch.zeros(len(cameras), 3, 3, device=cameras.c2w.device)
    k[:, 0, 0], k[:, 1, 1] = f, f
    k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = 0.5 * width, 0.5 * height, 1.0
    return k


@dataclass
class Projected:
    """Gaussians in image space, B cameras x N Gaussians.

    means2d [B, N, 2] pixels; conics [B, N, 3] (a, b, c) of Sigma2d^-1 = [[a, b], [b, c]];
    depths [B, N] camera z; extent [B, N, 2] 3.33-sigma half-widths in pixels (0 = culled);
    means_cam [B, N, 3] camera-frame means.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    extent: torch.Tensor
    means_cam: torch.Tensor

    @property
    def radii(self) -> torch.Tensor:
        """Integer pixel radii [B, N, 2] (gsplat's ``radii``: ceil of ``extent``)."""
        return torch.ceil(self.extent).int()


def project(
    means: torch.Tensor,
    covars: torch.Tensor,
    viewmats: torch.Tensor,
    ks: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near: float = 0.01,
) -> Projected:
    """EWA projection (module docstring) of means [N, 3] and covariances [N, 3, 3] into B
    cameras (viewmats [B, 4, 4] OpenCV world-to-camera, ks [B, 3, 3]). Gaussians behind the
    near plane or whose box misses the image get extent 0."""
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    t = torch.einsum("bij,nj->bni", rot, means) + trans[:, None, :]  # [B, N, 3]
    cov_c = torch.einsum("bij,njk,blk->bnil", rot, covars, rot)  # [B, N, 3, 3]
    fx, fy = ks[:, 0, 0, None], ks[:, 1, 1, None]
    cx, cy = ks[:, 0, 2, None], ks[:, 1, 2, None]
    tz = t[..., 2]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = tz * torch.clamp(t[..., 0] / tz, -lim_x_neg, lim_x_pos)
    ty = tz * torch.clamp(t[..., 1] / tz, -lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(tz)
    jac = torch.stack(
        [fx / tz, zero, -fx * tx / tz**2, zero, fy / tz, -fy * ty / tz**2], dim=-1
    ).reshape(*tz.shape, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, device=means.device, dtype=means.dtype)
    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * t[..., 0] / tz + cx, fy * t[..., 1] / tz + cy], dim=-1)
    extent = BOX_SIGMAS * torch.stack([a, c], dim=-1).detach().sqrt()
    valid = (tz > near) & (a * c - b * b > 0)
    m2 = means2d.detach()
    inside = (
        (m2[..., 0] + extent[..., 0] > 0)
        & (m2[..., 0] - extent[..., 0] < width)
        & (m2[..., 1] + extent[..., 1] > 0)
        & (m2[..., 1] - extent[..., 1] < height)
    )
    extent = torch.where((valid & inside)[..., None], extent, torch.zeros_like(extent))
    return Projected(means2d, conics, tz, extent, t)


def sh_colors(sh: torch.Tensor, directions: torch.Tensor, degree: int) -> torch.Tensor:
    """View-dependent colour of SH coefficients sh [N, K, 3] (K >= (degree+1)^2, degree 0 or
    1) along unit-normalised directions [B, N, 3] (camera centre -> Gaussian):

        c = max(0, 0.5 + C0 k_0 - C1 y k_1 + C1 z k_2 - C1 x k_3)       (3DGS, gsplat)

    >>> sh_colors(torch.zeros(1, 1, 3), torch.ones(1, 1, 3), 0)
    tensor([[[0.5000, 0.5000, 0.5000]]])
    """
    if degree not in (0, 1):
        raise ValueError(f"SH degree must be 0 or 1, got {degree}")
    color = (SH_C0 * sh[None, :, 0]).expand(directions.shape[0], -1, -1)
    if degree == 1:
        x, y, z = F.normalize(directions, dim=-1).unbind(-1)
        color = color + SH_C1 * (
            -y[..., None] * sh[None, :, 1] + z[..., None] * sh[None, :, 2]
            - x[..., None] * sh[None, :, 3]
        )  # fmt: skip
    return (color + 0.5).clamp_min(0.0)


def _pairs(extent: torch.Tensor, means2d: torch.Tensor, depths: torch.Tensor, h: int, w: int):
    """(pixel, Gaussian) pairs inside every box, sorted by (camera, pixel, depth).

    Returns pixel [M] (global index b H W + y W + x), gauss [M] (global index b N + i),
    both int64.
    """
    b, n = depths.shape
    m = means2d.detach()
    x_lo = torch.ceil(m[..., 0] - extent[..., 0] - 0.5).clamp(0, w - 1)
    x_hi = torch.floor(m[..., 0] + extent[..., 0] - 0.5).clamp(-1, w - 1)
    y_lo = torch.ceil(m[..., 1] - extent[..., 1] - 0.5).clamp(0, h - 1)
    y_hi = torch.floor(m[..., 1] + extent[..., 1] - 0.5).clamp(-1, h - 1)
    wx = (x_hi - x_lo + 1).clamp_min(0).long()
    wy = (y_hi - y_lo + 1).clamp_min(0).long()
    alive = (extent[..., 0] > 0) & (wx > 0) & (wy > 0)
    # depth order first, so that a stable sort by pixel keeps it within every pixel
    order = torch.argsort(torch.where(alive, depths.detach(), math.inf), dim=1, stable=True)
    base = torch.arange(b, device=depths.device)[:, None] * n
    gauss_sorted = (order + base).reshape(-1)
    counts = (wx * wy * alive).reshape(-1)[gauss_sorted]
    gauss = torch.repeat_interleave(gauss_sorted, counts)
    if gauss.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=depths.device)
        return empty, empty
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(gauss.numel(), device=gauss.device) - torch.repeat_interleave(
        starts, counts
    )
    wxf = wx.reshape(-1)[gauss]
    px = x_lo.reshape(-1).long()[gauss] + local % wxf
    py = y_lo.reshape(-1).long()[gauss] + local // wxf
    pixel = (gauss // n) * (h * w) + py * w + px
    pixel, perm = torch.sort(pixel, stable=True)
    return pixel, gauss[perm]


def _composite_chunk(pixel, gauss, pix_xy, means2d, conics, opacities, features, n_pixels):
    """Alpha-composite one chunk of sorted pairs (whole pixels): returns [n_pixels, C + 1]
    (features, accumulated alpha) for the chunk's pixel range, starting at pixel[0]."""
    d = pix_xy - means2d[gauss]  # [M, 2]
    con = conics[gauss]
    power = (
        -0.5 * (con[:, 0] * d[:, 0] ** 2 + con[:, 2] * d[:, 1] ** 2) - con[:, 1] * d[:, 0] * d[:, 1]
    )
    alpha = (opacities[gauss] * torch.exp(power)).clamp_max(ALPHA_MAX)
    alpha = torch.where(alpha.detach() >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    log_keep = torch.log1p(-alpha.double())
    inclusive = torch.cumsum(log_keep, 0)
    exclusive = inclusive - log_keep
    first = torch.cat([pixel.new_ones(1, dtype=torch.bool), pixel[1:] != pixel[:-1]])
    start = torch.cummax(torch.where(first, torch.arange(len(pixel), device=pixel.device), 0), 0)[0]
    log_t = exclusive - exclusive[start]
    trans = torch.exp(log_t).to(alpha.dtype)
    alive = (log_t + log_keep).detach() > math.log(T_MIN)
    weights = torch.where(alive, alpha * trans, torch.zeros_like(alpha))
    values = torch.cat([features[gauss], torch.ones_like(weights)[:, None]], dim=1)
    out = values.new_zeros(n_pixels, values.shape[1])
    return out.index_add(0, pixel - pixel[0], weights[:, None] * values)


def rasterize(
    projected: Projected,
    opacities: torch.Tensor,
    features: torch.Tensor,
    height: int,
    width: int,
    max_pairs: int = 1 << 21,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing (module docstring) of B x N projected Gaussians with
    opacities [N] or [B, N] and features [B, N, C].

    Returns features [B, H, W, C] and alpha [B, H, W, 1] (background not added).
    """
    b, n = projected.depths.shape
    c = features.shape[-1]
    opac = opacities.expand(b, n).reshape(-1)
    pixel, gauss = _pairs(projected.extent, projected.means2d, projected.depths, height, width)
    out = features.new_zeros(b * height * width, c + 1)
    if pixel.numel() > 0:
        means2d = projected.means2d.reshape(-1, 2)
        conics = projected.conics.reshape(-1, 3)
        feats = features.reshape(-1, c)
        local = pixel % (height * width)
        pix_xy = torch.stack([local % width, local // width], dim=-1).to(means2d.dtype) + 0.5
        # chunk boundaries at whole pixels, each chunk <= max_pairs pairs (one pixel may exceed)
        bounds = [0]
        while bounds[-1] < len(pixel):
            cut = min(bounds[-1] + max_pairs, len(pixel))
            if cut < len(pixel):
                cut = int(torch.searchsorted(pixel, pixel[cut], right=False))
                if cut <= bounds[-1]:
                    cut = int(torch.searchsorted(pixel, pixel[bounds[-1]], right=True))
            bounds.append(cut)
        pieces = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            p0, p1 = int(pixel[lo]), int(pixel[hi - 1]) + 1
            args = (pixel[lo:hi], gauss[lo:hi], pix_xy[lo:hi], means2d, conics, opac, feats)
            if len(bounds) > 2 and torch.is_grad_enabled():
                chunk = checkpoint(_composite_chunk, *args, p1 - p0, use_reentrant=False)
            else:
                chunk = _composite_chunk(*args, p1 - p0)
            pieces.append((p0, p1, chunk))
        out = torch.cat(_fill(pieces, out.shape[0], c + 1, features), dim=0)
    out = out.reshape(b, height, width, c + 1)
    return out[..., :c], out[..., c:]


def _fill(pieces, n_pixels: int, width: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Concatenable blocks covering [0, n_pixels): the chunks and zero gaps between them."""
    blocks, at = [], 0
    for p0, p1, chunk in pieces:
        if p0 > at:
            blocks.append(like.new_zeros(p0 - at, width))
        blocks.append(chunk)
        at = p1
    if at < n_pixels:
        blocks.append(like.new_zeros(n_pixels - at, width))
    return blocks


def ray_length_factor(ks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """|ray| / z per pixel centre, [B, 1, H, W]: sqrt(1 + ((u - cx)/fx)^2 + ((v - cy)/fy)^2),
    so that ray distance = z x factor (the world's depth is the distance along the ray)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=ks.device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=ks.device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    x = (u - ks[:, 0, 2, None, None]) / ks[:, 0, 0, None, None]
    y = (v - ks[:, 1, 2, None, None]) / ks[:, 1, 1, None, None]
    return torch.sqrt(1.0 + x * x + y * y)[:, None]
