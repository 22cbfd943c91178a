"""The pure-torch Gaussian rasteriser: parity with gsplat's torch reference functions, an exact
per-pixel reference loop (gsplat's kernel semantics), chunking, camera conventions."""

from __future__ import annotations

import pytest
import torch

from backbones.gaussian_raster import (
    ALPHA_MAX,
    ALPHA_MIN,
    T_MIN,
    covariance_3d,
    intrinsics,
    project,
    quat_to_rotmat,
    rasterize,
    ray_length_factor,
    sh_colors,
    viewmats_from_c2w,
)
from core.cameras import camera_rays, orbit_cameras

torch.set_num_threads(2)


def _gaussians(n: int, seed: int = 0, scale: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * scale + 0.01
    opac = torch.rand(n, generator=g) * 0.98 + 0.01
    feats = torch.rand(2, n, 4, generator=g)
    return means, quats, scales, opac, feats


def _cameras():
    return orbit_cameras(2, (20.0,), 2.5, 40.0, azimuth_offset=10.0)


def test_rotation_is_orthonormal_and_covariance_matches_gsplat():
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    means, quats, scales, _, _ = _gaussians(64)
    rot = quat_to_rotmat(quats)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), torch.eye(3).expand(64, 3, 3))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(64))
    ref, _ = ti._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    torch.testing.assert_close(covariance_3d(quats, scales), ref)


def test_projection_matches_gsplat_fully_fused_projection():
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    means, quats, scales, _, _ = _gaussians(300, seed=1)
    cams = _cameras()
    covars = covariance_3d(quats, scales)
    viewmats, ks = viewmats_from_c2w(cams.c2w), intrinsics(cams, 24, 40)
    ours = project(means, covars, viewmats, ks, 40, 24)
    radii, means2d, depths, conics, _ = ti._fully_fused_projection(
        means, covars, viewmats, ks, 40, 24
    )
    torch.testing.assert_close(ours.means2d, means2d, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.conics, conics, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.depths, depths)
    assert torch.equal(ours.radii, radii)


@pytest.mark.parametrize("degree", [0, 1])
def test_sh_colours_match_gsplat(degree):
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    g = torch.Generator().manual_seed(2)
    sh = torch.randn(50, 4, 3, generator=g)
    dirs = torch.randn(2, 50, 3, generator=g)
    ref = ti._spherical_harmonics(degree, dirs, sh[None].expand(2, -1, -1, -1))
    torch.testing.assert_close(sh_colors(sh, dirs, degree), (ref + 0.5).clamp_min(0.0))


def test_projection_follows_the_world_cameras():
    """A point on the ray through pixel (x, y) projects to that pixel's centre, and its z times
    the ray-length factor is its distance along the ray (core/cameras.py camera_rays)."""
    cams = _cameras()
    h, w = 12, 16
    origins, directions = camera_rays(cams, h, w)
    pixel = (3, 11)  # (row, column)
    t = torch.tensor([2.1, 2.7])
    points = origins[:, pixel[0], pixel[1]] + directions[:, pixel[0], pixel[1]] * t[:, None]
    ks = intrinsics(cams, h, w)
    proj = project(
        points, torch.eye(3).expand(2, 3, 3) * 1e-4, viewmats_from_c2w(cams.c2w), ks, w, h
    )
    for b in range(2):
        torch.testing.assert_close(
            proj.means2d[b, b], torch.tensor([pixel[1] + 0.5, pixel[0] + 0.5]), atol=1e-4, rtol=0
        )
        distance = proj.depths[b, b] * ray_length_factor(ks, h, w)[b, 0, pixel[0], pixel[1]]
        torch.testing.assert_close(distance, t[b], atol=1e-5, rtol=0)


def reference_composite(proj, opacities, features, height, width):
    """gsplat's per-pixel loop, written out: Gaussians in depth order; alpha < 1/255 skipped;
    a Gaussian whose next transmittance would be <= 1e-4 ends the pixel (not composited)."""
    b, n = proj.depths.shape
    out = torch.zeros(b, height, width, features.shape[-1] + 1)
    for cam in range(b):
        order = torch.argsort(proj.depths[cam], stable=True)
        for y in range(height):
            for x in range(width):
                t, acc = 1.0, torch.zeros(features.shape[-1] + 1)
                for i in order.tolist():
                    if proj.depths[cam, i] <= 0.01:
                        continue
                    dx = x + 0.5 - proj.means2d[cam, i, 0]
                    dy = y + 0.5 - proj.means2d[cam, i, 1]
                    a, bb, c = proj.conics[cam, i]
                    power = -0.5 * (a * dx * dx + c * dy * dy) - bb * dx * dy
                    alpha = min(ALPHA_MAX, float(opacities[i] * torch.exp(power)))
                    if alpha < ALPHA_MIN:
                        continue
                    if t * (1 - alpha) <= T_MIN:
                        break
                    acc += alpha * t * torch.cat([features[cam, i], torch.ones(1)])
                    t *= 1 - alpha
                out[cam, y, x] = acc
    return out[..., :-1], out[..., -1:]


def test_rasterise_equals_the_per_pixel_reference_loop():
    means, quats, scales, opac, feats = _gaussians(40, seed=3, scale=0.25)
    opac = opac.clamp_min(0.5)  # opaque enough that the 1e-4 cut-off ends some pixels
    cams = _cameras()
    proj = project(
        means,
        covariance_3d(quats, scales),
        viewmats_from_c2w(cams.c2w),
        intrinsics(cams, 10, 12),
        12,
        10,
    )
    got_f, got_a = rasterize(proj, opac, feats, 10, 12)
    ref_f, ref_a = reference_composite(proj, opac, feats, 10, 12)
    torch.testing.assert_close(got_f, ref_f, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_a, ref_a, atol=1e-5, rtol=1e-4)
    assert float(ref_a.max()) > 0.99, "the cut-off was not exercised"


def test_chunked_rasterise_gives_the_same_image_and_gradients():
    means, quats, scales, opac, feats = _gaussians(200, seed=4)
    cams = _cameras()
    grads = []
    for max_pairs in (1 << 22, 97):
        m = means.clone().requires_grad_(True)
        f = feats.clone().requires_grad_(True)
        proj = project(
            m,
            covariance_3d(quats, scales),
            viewmats_from_c2w(cams.c2w),
            intrinsics(cams, 16, 16),
            16,
            16,
        )
        out, alpha = rasterize(proj, opac, f, 16, 16, max_pairs=max_pairs)
        (out.square().sum() + alpha.sum()).backward()
        grads.append((out.detach(), m.grad, f.grad))
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradient_of_the_compositing_matches_finite_differences():
    means, quats, scales, opac, feats = _gaussians(12, seed=5, scale=0.3)
    cams = _cameras()[:1]
    viewmats, ks = viewmats_from_c2w(cams.c2w), intrinsics(cams, 8, 8)

    def image(m):
        proj = project(
            m, covariance_3d(quats.double(), scales.double()), viewmats.double(), ks.double(), 8, 8
        )
        out, _ = rasterize(proj, opac.double(), feats[:1].double(), 8, 8)
        return out

    m = means.double().requires_grad_(True)
    # the alpha threshold and the cut-off are piecewise: check away from their kinks
    assert torch.autograd.gradcheck(lambda x: image(x).sum(), (m,), eps=1e-6, atol=1e-4)


def test_the_gsplat_path_is_wired_like_the_torch_path(monkeypatch):
    """``implementation: gsplat`` (what CUDA tensors take) on CPU, with ``gsplat.rasterization``
    replaced by a stand-in made of gsplat's own pure-torch projection
    (``_quat_scale_to_covar_preci``, ``_fully_fused_projection``) and this module's
    compositing (gsplat's compositing kernels need CUDA): the features the backbone packs for
    gsplat (colours, camera z, normals), its depth, the radii and means2d it reads back, and
    the gradients through them equal the torch path to 1e-5. Only gsplat's CUDA kernels stay
    unrun on a CPU machine."""
    gsplat = pytest.importorskip("gsplat")
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    from backbones.gaussian_raster import Projected
    from backbones.gaussians import GaussianConfig, GaussianSplats

    def stand_in(means, quats, scales, opacities, colors, viewmats, ks, width, height,
                 eps2d=0.3, packed=False, render_mode="RGB"):  # fmt: skip
        assert not packed and render_mode == "RGB"
        covars, _ = ti._quat_scale_to_covar_preci(quats, scales, compute_preci=False, triu=False)
        radii, means2d, depths, conics, _ = ti._fully_fused_projection(
            means, covars, viewmats, ks, width, height, eps2d=eps2d
        )
        proj = Projected(means2d, conics, depths, radii.float(), None)
        img, alpha = rasterize(proj, opacities, colors, height, width)
        return img, alpha, {"radii": radii, "means2d": means2d}

    monkeypatch.setattr(gsplat, "rasterization", stand_in)
    kw = dict(n_points=300, init_opacity=0.3, normals="shortest_axis")
    cams = orbit_cameras(2, (20.0,), 2.5, 40.0)
    out = {}
    for impl in ("torch", "gsplat"):
        model = GaussianSplats(
            GaussianConfig(**kw, implementation=impl), generator=torch.Generator().manual_seed(0)
        )
        images = model.render(cams, 24, 24, normals=True)
        loss = sum(
            (v * torch.linspace(0, 1, v.numel()).view(v.shape)).sum() for v in images.values()
        )
        loss.backward()
        out[impl] = (images, {n: p.grad for n, p in model.named_parameters()})
    (img_t, grad_t), (img_g, grad_g) = out["torch"], out["gsplat"]
    assert img_t.keys() == img_g.keys() and float(img_t["opacity"].detach().max()) > 0.3
    for key in img_t:
        torch.testing.assert_close(img_g[key], img_t[key], rtol=1e-5, atol=1e-5)
    for name, grad in grad_t.items():
        if grad is not None:
            torch.testing.assert_close(grad_g[name], grad, rtol=1e-4, atol=1e-5)
