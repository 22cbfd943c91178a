"""The Stein-ceiling oracles (benchmark/probe/stein_ceiling.py): each class's cross-fitted
least squares removes a control variate of its own class exactly, the reference basis is
orthonormal, and the law-of-total-variance split matches its definition; the script's bad
arguments are one error line."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmark.probe.stein_ceiling import (
    CLASSES,
    ONLINE_BETAS,
    class_residuals,
    cross_fit_residual,
    gram_of_means,
    prompt_statistic,
    pulled_trace_variance,
    reference_basis,
)

M, D = 64, 12


def _draws(seed=0):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(M, D, generator=g, dtype=torch.float64)
    return g, eps


@pytest.mark.parametrize("mode", ["shared", "pixel", "common"])
def test_cross_fit_removes_an_exact_linear_control_variate(mode):
    g, eps = _draws()
    if mode == "common":
        x = eps[:, :3]
        y = 5.0 + x @ torch.randn(3, D, generator=g, dtype=torch.float64)
    else:
        x = torch.stack([eps, eps**2 - 1], -1)
        coef = torch.randn(2, generator=g, dtype=torch.float64)
        if mode == "pixel":
            coef = torch.randn(D, 2, generator=g, dtype=torch.float64)
        y = 1.0 + (x * coef).sum(-1)
    resid = cross_fit_residual(y, x, mode)
    assert float(resid.abs().max()) < 1e-6


def test_every_class_is_exact_on_its_own_constructed_case():
    """G built from one class's control variate (plus a constant) is removed exactly by that
    class's oracle; the perfect control variate's residual (G minus its mean) is what is left
    for a class that cannot represent it."""
    g, eps = _draws(1)
    s_depth = eps * torch.randn(M, 1, generator=g, dtype=torch.float64)
    s_post = {b: torch.randn(M, D, generator=g, dtype=torch.float64) for b in (1.0, *ONLINE_BETAS)}
    basis, _ = torch.linalg.qr(torch.randn(D, 4, generator=g, dtype=torch.float64))
    const = torch.randn(D, generator=g, dtype=torch.float64)
    cases = {
        "scalar_depth": 2.0 * s_depth,
        "scalar_depth_pixel": s_depth * torch.linspace(-1, 1, D, dtype=torch.float64),
        "diagonal_affine": 0.5 * eps + 0.2 * (eps**2 - 1),
        "matrix_linear": (eps @ basis) @ torch.randn(4, D, generator=g, dtype=torch.float64),
        "matrix_posterior_1": -3.0 * s_post[1.0],
        "matrix_posterior_all": sum((i + 1) * s_post[b] for i, b in enumerate(ONLINE_BETAS)),
    }
    for name, cv in cases.items():
        resid = class_residuals(const + cv, eps, eps, 0.5, s_depth, s_post, basis)
        assert set(resid) == set(CLASSES)
        assert float(resid[name].abs().max()) < 1e-6, name
        assert float(resid["scalar_depth"].var(0).sum()) >= 0


def test_reference_basis_is_orthonormal_and_keeps_probable_references():
    g = torch.Generator().manual_seed(2)
    refs = torch.randn(6, 10, generator=g)
    log_w = torch.tensor([0.0, -1.0, -50.0, -2.0, -60.0, -3.0])
    q = reference_basis([log_w], [refs], k=10, nats=20.0)
    # 4 probable references, centred: rank 3
    assert q.shape == (10, 3)
    torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-5, rtol=0)
    kept = refs[[0, 1, 3, 5]] - refs[[0, 1, 3, 5]].mean(0)
    torch.testing.assert_close(q @ (q.T @ kept.T), kept.T, atol=1e-4, rtol=0)


def test_total_variance_split_matches_its_definition():
    """V_ct from the Gram matrix of the conditional means equals the trace variance of the
    means minus V_eps / M; shares are (V_eps - left) / V_total."""
    g = torch.Generator().manual_seed(3)
    means = torch.randn(5, 7, generator=g, dtype=torch.float64)
    pairs = [{"within": 2.0 + i, "mean": means[i], "c": 1.0} for i in range(5)]
    gram = gram_of_means(pairs, "")
    stat = prompt_statistic(pairs, gram, np.arange(5), "", ["c"], m=10)
    v_eps = 4.0
    v_ct = float(means.var(0).sum()) - v_eps / 10
    assert stat["v_total"] == pytest.approx(v_eps + v_ct)
    assert stat["eps_share"] == pytest.approx(v_eps / (v_eps + v_ct))
    assert stat["c"] == pytest.approx((v_eps - 1.0) / (v_eps + v_ct))


def test_pulled_trace_variance_exact_and_rademacher_unbiased():
    """Exact (z None) equals tr Var(J^T r) by definition; the Rademacher estimate averaged over
    all 2^M sign vectors equals it exactly (E[z z^T] = I holds exactly over the enumeration), and
    over a few probes it is neither exact nor far off."""
    import itertools

    g = torch.Generator().manual_seed(4)
    m = 8
    j = torch.randn(6, 30, generator=g, dtype=torch.float64)
    rows = torch.randn(m, 6, generator=g, dtype=torch.float64) + 3.0

    def pull(r):
        return r @ j

    exact = float((rows @ j).var(0).sum())
    assert pulled_trace_variance(pull, rows, None, chunk=3) == pytest.approx(exact, rel=1e-12)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=m)), dtype=torch.float64)
    assert pulled_trace_variance(pull, rows, signs, chunk=50) == pytest.approx(exact, rel=1e-10)
    few = pulled_trace_variance(pull, rows, signs[[3, 77, 140, 201]])
    assert few != pytest.approx(exact, rel=1e-6) and 0.2 * exact < few < 5 * exact


@pytest.mark.parametrize(
    "args",
    [
        ["--draws", "7"],
        ["--settings", "nope"],
        ["--pairs", "1"],
        ["--out", "/no/such/dir/x.md"],
        ["--theta-probes", "-1"],
        ["--online-fit", "-1"],
        ["--detail-prompts", " , "],
    ],
)
def test_script_bad_arguments_are_one_error_line(args):
    proc = subprocess.run(
        [sys.executable, "scripts/stein_ceiling.py", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--setting", "nope"], ["--draws", "2"], ["--pairs", "0"]])
def test_coefficients_script_bad_arguments_are_one_error_line(args):
    proc = subprocess.run(
        [sys.executable, "scripts/stein_coefficients.py", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
