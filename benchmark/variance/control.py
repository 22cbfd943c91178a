"""The control-variate view of a probe (DESIGN.md section 4, revised protocol).

Every estimator's G is a raw score term minus a control variate: G_k = A_k - C_k with
A_k = w eps_hat (``EstimatorOutput.score_term``, the same for SDS, VSD and SSD) and
C_k = A_k - G_k (SDS: w eps; VSD: w eps_phi; SSD: w mu (.) S). On the same K draws, with
trace (co)variances over the K samples (unbiased, streamed):

    raw_log_var     = ln tr Var(A)                    no control variate at all
    cv_gain         = raw_log_var - log_var           nats the method's control variate removes
    cv_oracle_coef  = lambda* = tr Cov(A, C) / tr Var(C)
    cv_oracle_gain  = raw_log_var - ln(tr Var(A) - tr Cov(A, C)^2 / tr Var(C))
                      the gain of the in-sample-optimal scale of the same control variate:
                      what the control variate could give at best (>= cv_gain up to noise)

with tr Cov(A, C) = (tr Var(A) + tr Var(C) - tr Var(G)) / 2. Theta space uses the per-sample
theta-gradients a_k, g_k, c_k = a_k - g_k; the ``img_`` forms the image-space A, G, C.

The update view: Adam's step on one gradient, linearised at the optimiser's current second
moments, is u = lr / (sqrt(v_hat) + eps) (.) g with v_hat = exp_avg_sq / (1 - beta2^step);

    update_log_var  = ln tr Var(u)                    what the optimiser actually feels

(NaN before the first optimiser step, when Adam has no second moments yet).

>>> import torch
>>> a = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
>>> g = a - 0.5 * a
>>> raw, cv = torch.var(a, 0).sum(), torch.var(a - g, 0).sum()
>>> cross = trace_covariance(float(raw), float(cv), float(torch.var(g, 0).sum()))
>>> round(oracle_variance(float(raw), float(cv), cross), 12)
0.0
"""

from __future__ import annotations

import math

import torch

from benchmark.variance.moments import StreamingMoments


def trace_covariance(var_a: float, var_c: float, var_g: float) -> float:
    """tr Cov(A, C) from the trace variances of A, C and G = A - C."""
    return 0.5 * (var_a + var_c - var_g)


def oracle_variance(var_a: float, var_c: float, cov_ac: float) -> float:
    """min over lambda of tr Var(A - lambda C) = tr Var(A) - tr Cov(A, C)^2 / tr Var(C)."""
    if var_c <= 0:
        return var_a
    return max(var_a - cov_ac * cov_ac / var_c, 0.0)


def _log(value: float) -> float:
    return math.log(value) if value > 0 else float("-inf")


def control_variate_metrics(
    estimator: StreamingMoments,
    raw: StreamingMoments,
    control: StreamingMoments,
    prefix: str,
) -> dict[str, float]:
    """raw_log_var, cv_gain, cv_oracle_coef, cv_oracle_gain (see module doc)."""
    var_g, var_a, var_c = estimator.var_trace(), raw.var_trace(), control.var_trace()
    cov = trace_covariance(var_a, var_c, var_g)
    raw_log = _log(var_a)
    log_g = _log(var_g)
    oracle = oracle_variance(var_a, var_c, cov)
    return {
        f"{prefix}raw_log_var": raw_log,
        f"{prefix}cv_gain": raw_log - log_g if math.isfinite(raw_log) else float("nan"),
        f"{prefix}cv_oracle_coef": cov / var_c if var_c > 0 else float("nan"),
        f"{prefix}cv_oracle_gain": raw_log - _log(oracle)
        if math.isfinite(raw_log)
        else float("nan"),
    }


def adam_preconditioner(
    optimizer: torch.optim.Optimizer | None, params: list[torch.nn.Parameter]
) -> torch.Tensor | None:
    """Flat [P] lr / (sqrt(v_hat) + eps) for ``params`` (theta order), or None when the
    optimiser has no second moments yet (or is not Adam-like)."""
    if optimizer is None:
        return None
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    parts = []
    for p in params:
        state = optimizer.state.get(p, {})
        group = group_of.get(id(p))
        if "exp_avg_sq" not in state or group is None:
            return None
        step = float(state["step"])
        beta2 = group["betas"][1]
        v_hat = state["exp_avg_sq"].detach().double() / (1.0 - beta2**step)
        parts.append((group["lr"] / (v_hat.sqrt() + group["eps"])).reshape(-1))
    return torch.cat(parts)
