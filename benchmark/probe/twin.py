"""SDS at the same theta and draws as the probed method (its "twin"), and the bias check
against it.

NSR is a property of (estimator, theta) and rises 10-25x as a run converges, so a method's
NSR is compared with SDS's *at the same theta*: the twin (a plain SDS estimator with the run's
``sds`` section, stateless) is evaluated on the probe's K draws, so the NSR ratio is the
estimator's alone and the probe schedule cannot move it. A stateful method (VSD's eps_phi,
SSD's mu or learned baseline) keeps the state it has at this theta (matched quality: the same
theta is the same quality). The twin's draws are the probed method's (its t schedule).

With g_k the method's and s_k the twin's per-sample theta-gradients on the same draw k and
d_k = g_k - s_k (common random numbers: for a method that only adds a zero-mean control
variate to SDS, d_k is the control variate and mu_d = 0):

    sds_var_trace, sds_signal_sq, sds_snr, sds_nsr   SDS's statistics (moments.summarize)
    bias_sq   = ||mean d||^2 - tr Cov(d) / K          unbiased ||mu_m - mu_SDS||^2
    bias_rel  = bias_sq / sds_signal_sq               relative squared bias (0: SDS's mean;
                                                      a mean rotated by a: 2 - 2 cos a)
    bias_z    = bias_sq / sqrt(2 tr(S_d^2) / (K (K - 1)))

bias_z is Chen and Qin's (2010) high-dimensional one-sample statistic: under mu_d = 0,
E bias_sq = 0 and Var bias_sq = 2 tr(Sigma_d^2) / (K (K - 1)); tr(Sigma_d^2) is estimated by
the plug-in ||Gram_c||_F^2 / (K - 1)^2 of the centred K x K Gram matrix of d (biased up, so
the z is conservative). A method whose mean is SDS's (SSD, any zero-mean control variate)
reads bias_rel ~ 0 with |bias_z| ~ 1; a mean rotated by 60 degrees reads bias_rel ~ 1.
Only methods that claim SDS's expectation (``GradientEstimator.mean_of == "sds"``, logged
as ``var/claims_sds_mean``) are judged on it; the verdict averages bias_rel over cells.
"""

from __future__ import annotations

import math

import torch

from benchmark.probe.moments import StreamingMoments, signal_statistics, summarize


def gram_frobenius_sq(moments: StreamingMoments) -> float:
    """||H Gram H||_F^2 of the K shifted samples (H = I - 11^T / K centres them): with
    S = D_c^T D_c / (K - 1), tr(S^2) = this / (K - 1)^2. Needs ``gram_dim`` > 0."""
    _, gram = moments.gram()
    k = gram.shape[0]
    centre = torch.eye(k, dtype=gram.dtype, device=gram.device) - 1.0 / k
    gc = centre @ gram @ centre
    return float(gc.square().sum())


def twin_statistics(
    twin: StreamingMoments, diff: StreamingMoments, prefix: str, pooled_twin_sq=None, n=None
) -> dict[str, float]:
    """The twin's sds_* statistics and bias_sq / bias_rel / bias_z from the moments of the
    twin's per-sample gradients and of the differences d_k (module doc). ``pooled_twin_sq``
    and ``n``: ||mean||^2 of the twin over K + R draws (with the bias check's fresh draws)."""
    out = {prefix + "sds_" + k[len(prefix) :]: v for k, v in summarize(twin, prefix, 0, 0).items()}
    if pooled_twin_sq is not None:
        pooled = signal_statistics(pooled_twin_sq, twin.var_trace(), n, prefix + "sds_")
        out.update(pooled)
    k = diff.n
    bias = signal_statistics(float(diff.mean.square().sum()), diff.var_trace(), k)["signal_sq"]
    out[prefix + "bias_sq"] = bias
    signal = out[prefix + "sds_signal_sq"]
    out[prefix + "bias_rel"] = bias / signal if signal > 0 else float("nan")
    z = float("nan")
    if diff.sq_norms:
        tr_s2 = gram_frobenius_sq(diff) / (k - 1) ** 2
        se = math.sqrt(2.0 * tr_s2 / (k * (k - 1))) if tr_s2 > 0 else 0.0
        z = bias / se if se > 0 else (0.0 if bias == 0 else math.copysign(math.inf, bias))
    out[prefix + "bias_z"] = z
    return out
