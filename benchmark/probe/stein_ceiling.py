"""What a Stein control variate can remove at best: per-(camera, t) draws and class oracles.

At a fixed camera c and timestep t (theta frozen) SDS's image-space gradient G = w (eps_hat -
eps) is a function of eps alone. The law of total variance splits its trace variance over
(c, t, eps) into

    V_total = E_{c,t}[ tr Var(G | c, t) ] + tr Var_{c,t}( E[G | c, t] ) = V_eps + V_ct,

and the perfect eps control variate C* = G - E[G | c, t] (zero mean given c, t: a Stein
control variate, the matrix-valued class is complete for Gaussian eps) removes exactly V_eps:
V_eps / V_total is the most any control variate acting on eps can remove. Each class below is
fitted by least squares on half of a (c, t)'s M draws and evaluated on the other half (and the
other way round: two-fold cross-fitting, so an oracle with many coefficients is not flattered
by fitting its own noise); it leaves Var(G - C_fit | c, t) of the eps part.

    scalar_depth          the paper's phi = 1 - Pearson(depth, D(x_t)), S = eps phi - sigma
                          grad phi, one coefficient (additive on SDS)
    scalar_depth_pixel    the same S with one coefficient per pixel (mu_shape=pixel)
    diagonal_affine       the diagonal field f_i = a_i x_{t,i} + b_i with a, b free per pixel
                          (a function of x, t, c: the learned vector field's class at fixed
                          (c, t)): S_i = a_i (eps_i x_{t,i} - sigma) + b_i eps_i, i.e. per-pixel
                          regression on (eps_i, eps_i^2 - 1)
    matrix_linear         constant A (S = A eps): the best linear-in-eps control variate, with
                          A restricted to the span of the references the camera's mixture
                          weights can select (K columns: z = Q^T eps, per-pixel coefficients)
    matrix_posterior_b    the responsibilities' field S_post(beta) (estimators/posterior_field)
                          with one coefficient, for each beta of ``BETAS``
    matrix_posterior_all  the betas of ``ONLINE_BETAS`` together (one coefficient each): the
                          in-sample version of SSD's ``baseline=posterior``

Theta space: every residual is pulled back through the render's vjp, g = J_c^T G, with the
same statistics. Exactly that costs one vjp per draw and class; ``pulled_trace_variance``
estimates it without bias from a few Rademacher combinations of the centred rows (Hutchinson
over the draws: E_z ||J^T R^T z||^2 / (M - 1) = tr Var(J^T r), z_m = +-1), the same z for every
class of a (c, t) so that their differences share the probe noise. Shapes: M draws, D = C H W
pixels, F features.

>>> y = torch.arange(8.0).view(8, 1)
>>> x = y.view(8, 1, 1) * 2.0
>>> cross_fit_residual(y, x, "shared").abs().max() < 1e-5
tensor(True)
"""

from __future__ import annotations

import torch

BETAS = (1.0, 0.3, 0.1, 0.03)
#: the betas of SSD's ``baseline=posterior`` default (beta = 1 is too spiky: see the table)
ONLINE_BETAS = (0.3, 0.1, 0.03)
CLASSES = (
    "scalar_depth",
    "scalar_depth_pixel",
    "diagonal_affine",
    "matrix_linear",
    *(f"matrix_posterior_{b:g}" for b in BETAS),
    "matrix_posterior_all",
)


def _solve(xtx: torch.Tensor, xty: torch.Tensor) -> torch.Tensor:
    """Ridge-stabilised normal equations (1e-9 relative on the diagonal), batched."""
    eye = torch.eye(xtx.shape[-1], dtype=xtx.dtype, device=xtx.device)
    scale = xtx.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[..., None, None]
    return torch.linalg.solve(xtx + 1e-9 * scale * eye, xty)


def fit_predict(y_fit, x_fit, x_eval, mode: str) -> torch.Tensor:
    """Least-squares prediction of y on x with an intercept per pixel, fitted on one fold.

    Args:
        y_fit: [M1, D]; x_fit, x_eval: [M, D, F] (``shared``: one coefficient per feature
            for all pixels; ``pixel``: one per pixel and feature) or [M, F] (``common``: the
            same F regressors for every pixel, coefficients [F, D]).
    Returns:
        the prediction on the evaluation fold, [M2, D].
    """
    y_mean = y_fit.mean(0)
    yc = (y_fit - y_mean).double()
    x_mean = x_fit.mean(0)
    xc, xe = (x_fit - x_mean).double(), (x_eval - x_mean).double()
    if mode == "common":
        coef = _solve(xc.T @ xc, xc.T @ yc)  # [F, D]
        return (xe @ coef).to(y_fit.dtype) + y_mean
    if mode == "shared":
        xtx = torch.einsum("mdf,mdg->fg", xc, xc)
        coef = _solve(xtx, torch.einsum("mdf,md->f", xc, yc)[:, None])[:, 0]  # [F]
        return (xe @ coef).to(y_fit.dtype) + y_mean
    if mode == "pixel":
        xtx = torch.einsum("mdf,mdg->dfg", xc, xc)
        coef = _solve(xtx, torch.einsum("mdf,md->df", xc, yc)[..., None])[..., 0]  # [D, F]
        return torch.einsum("mdf,df->md", xe, coef).to(y_fit.dtype) + y_mean
    raise ValueError(f"unknown mode {mode!r}")


def cross_fit_residual(y: torch.Tensor, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Two-fold cross-fitted residuals y - yhat [M, D]: each half predicted by the fit on the
    other half (``fit_predict``)."""
    half = y.shape[0] // 2
    first, second = slice(0, half), slice(half, None)
    out = torch.empty_like(y)
    out[first] = y[first] - fit_predict(y[second], x[second], x[first], mode)
    out[second] = y[second] - fit_predict(y[first], x[first], x[second], mode)
    return out


def reference_basis(log_weights: list[torch.Tensor], refs: list[torch.Tensor], k: int, nats=20.0):
    """An orthonormal basis Q [D, <=k] of the centred references whose mixture weight is within
    ``nats`` of their branch's largest (the directions the responsibilities can move along),
    the most probable first."""
    chosen = []
    for lw, r in zip(log_weights, refs, strict=True):
        order = torch.argsort(lw, descending=True)
        keep = order[lw[order] > lw.max() - nats]
        chosen.append(r[keep])
    cols = torch.cat(chosen).double()
    cols = cols - cols.mean(0)
    cols = cols[: max(1, k)]
    if cols.shape[0] < 1:
        return torch.zeros(refs[0].shape[1], 0, dtype=refs[0].dtype)
    q, rr = torch.linalg.qr(cols.T)
    keep = rr.diagonal().abs() > 1e-8 * rr.diagonal().abs().max().clamp_min(1e-30)
    return q[:, keep].to(refs[0].dtype)


def class_residuals(
    g: torch.Tensor,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    sigma: float,
    s_depth: torch.Tensor,
    s_post: dict[float, torch.Tensor],
    basis: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Cross-fitted residuals of every class (module doc), each [M, D].

    Args:
        g: SDS's G [M, D] at one (c, t); eps, x_t: [M, D]; sigma: sigma_t;
        s_depth: the depth baseline's S [M, D] times w (additive form); s_post: beta ->
        w S_post(beta) [M, D]; basis: Q [D, K].
    """
    del x_t, sigma  # the affine field's features reduce to (eps, eps^2 - 1)
    out = {
        "scalar_depth": cross_fit_residual(g, s_depth[..., None], "shared"),
        "scalar_depth_pixel": cross_fit_residual(g, s_depth[..., None], "pixel"),
        "diagonal_affine": cross_fit_residual(g, torch.stack([eps, eps**2 - 1], -1), "pixel"),
    }
    out["matrix_linear"] = (
        cross_fit_residual(g, eps @ basis, "common") if basis.shape[1] else g - g.mean(0)
    )
    for beta, s in s_post.items():
        out[f"matrix_posterior_{beta:g}"] = cross_fit_residual(g, s[..., None], "shared")
    stacked = torch.stack([s_post[b] for b in ONLINE_BETAS], -1)
    out["matrix_posterior_all"] = cross_fit_residual(g, stacked, "shared")
    return out


def trace_variance(rows: torch.Tensor) -> float:
    """sum_d Var_m(rows[m, d]) (unbiased), in float64."""
    return float(rows.double().var(0, unbiased=True).sum())


def pulled_trace_variance(pull, rows: torch.Tensor, z: torch.Tensor | None, chunk: int = 64):
    """tr Var_m(J^T rows_m) (unbiased over the M rows) for a linear pull-back ``pull``
    ([B, D] -> [B, P]): exact (one pull per row) when z is None, else the unbiased Rademacher
    estimate mean_k ||J^T R^T z_k||^2 / (M - 1), R the centred rows, z [K, M] of +-1.

    >>> j = torch.randn(5, 3, dtype=torch.float64)
    >>> rows = torch.randn(40, 5, dtype=torch.float64)
    >>> exact = pulled_trace_variance(lambda r: r @ j, rows, None)
    >>> abs(exact - float((rows @ j).var(0).sum())) < 1e-9
    True
    """
    m = rows.shape[0]
    centred = (rows - rows.mean(0)).double()
    if z is None:
        combos, norm = centred, m - 1
    else:
        combos, norm = z.double() @ centred, (m - 1) * z.shape[0]
    total = 0.0
    for start in range(0, combos.shape[0], chunk):
        g = pull(combos[start : start + chunk].to(rows.dtype)).double()
        total += float((g * g).sum())
    return total / norm


def gram_of_means(pairs, prefix):
    """<E[G | c_j, t_j], E[G | c_k, t_k]> for the prompt's pairs [n, n] (float64)."""
    means = torch.stack([p[prefix + "mean"] for p in pairs])
    return (means @ means.T).numpy()


def prompt_statistic(pairs, gram, idx, prefix, classes, m):
    """Per prompt, for the pairs ``idx`` (a resample): V_eps, V_ct (the trace variance of the
    conditional means, from their Gram matrix, minus their noise V_eps / M), V_total and,
    per class, the share of V_total it removes."""
    import numpy as np

    n = len(idx)
    v_eps = float(np.mean([pairs[j][prefix + "within"] for j in idx]))
    sub = gram[np.ix_(idx, idx)]
    var_means = (np.trace(sub) - sub.sum() / n) / (n - 1)
    total = v_eps + max(var_means - v_eps / m, 0.0)
    out = {"eps_share": v_eps / total, "v_total": total}
    for c in classes:
        left = float(np.mean([pairs[j][prefix + c] for j in idx]))
        out[c] = (v_eps - left) / total
    return out
