"""The control-variate view of a probe (docs/manual.md, "Gradient variance").

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

The update view: the step Adam would take from its current state if g_k were this step's
gradient (``AdamStep``; scale-free per parameter, unlike g):

    update_log_var  = ln tr Var_k(u_k)               what the optimiser actually feels

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
from dataclasses import dataclass

import torch

from benchmark.probe.moments import StreamingMoments


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


@dataclass(frozen=True)
class AdamStep:
    """Adam's step for one per-sample gradient g from the optimiser's current state, flat over
    theta: with (m, v, k) the current moments and step count (zeros and 0 before any step),

        m' = b1 m + (1 - b1) g,   v' = b2 v + (1 - b2) g^2
        u  = lr (m' / (1 - b1^(k+1))) / (sqrt(v' / (1 - b2^(k+1))) + eps)

    exactly the update ``torch.optim.Adam.step`` would apply (tested); at k = 0 it is
    lr g / (|g| + eps)."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    lr: torch.Tensor
    beta1: torch.Tensor
    beta2: torch.Tensor
    eps: torch.Tensor
    step: torch.Tensor

    def __post_init__(self) -> None:
        # the per-parameter constants of the formula, once (the same float64 operations as
        # evaluating it whole per call, so the same numbers bit for bit)
        k = self.step + 1
        constants = {
            "_decayed_m": self.beta1 * self.exp_avg,
            "_decayed_v": self.beta2 * self.exp_avg_sq,
            "_one_minus_beta1": 1 - self.beta1,
            "_one_minus_beta2": 1 - self.beta2,
            "_bias1": 1 - self.beta1**k,
            "_bias2": 1 - self.beta2**k,
        }
        for name, value in constants.items():
            object.__setattr__(self, name, value)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """g [..., P] -> u [..., P] float64 (in-place on its own work tensors only)."""
        g = g.double()
        m = torch.mul(self._one_minus_beta1, g).add_(self._decayed_m)
        v = torch.mul(self._one_minus_beta2, g).mul_(g).add_(self._decayed_v)
        m.div_(self._bias1)  # m_hat
        denominator = v.div_(self._bias2).sqrt_().add_(self.eps)  # sqrt(v_hat) + eps
        return m.mul_(self.lr).div_(denominator)


def adam_step(
    optimizer: torch.optim.Optimizer | None, params: list[torch.nn.Parameter]
) -> AdamStep | None:
    """The ``AdamStep`` of ``params`` (theta order) under ``optimizer``, or None when there
    is no Adam optimiser."""
    if optimizer is None or not isinstance(optimizer, torch.optim.Adam):
        return None
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    fields: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("exp_avg", "exp_avg_sq", "lr", "beta1", "beta2", "eps", "step")
    }
    for p in params:
        group = group_of[id(p)]
        state = optimizer.state.get(p, {})
        n = p.numel()
        zeros = torch.zeros(n, dtype=torch.float64, device=p.device)
        fields["exp_avg"].append(state["exp_avg"].detach().double().reshape(-1) if state else zeros)
        fields["exp_avg_sq"].append(
            state["exp_avg_sq"].detach().double().reshape(-1) if state else zeros
        )
        for key, value in (
            ("lr", group["lr"]),
            ("beta1", group["betas"][0]),
            ("beta2", group["betas"][1]),
            ("eps", group["eps"]),
            ("step", float(state["step"]) if state else 0.0),
        ):
            fields[key].append(torch.full((n,), float(value), dtype=torch.float64, device=p.device))
    return AdamStep(**{k: torch.cat(v) for k, v in fields.items()})
