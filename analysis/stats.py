"""Confidence intervals over seeds: percentile bootstrap with a fixed-seed numpy Generator.

Every CI in the report is a 95% percentile bootstrap of the mean over seeds (resampling
seeds with replacement, ``n_boot`` resamples, ``numpy.random.default_rng(seed)``), so the
same data give the same interval. Quantiles use ``method="inverted_cdf"`` (no interpolation),
which keeps infinite values (log variance of an exactly zero variance) well defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over n samples with its bootstrap CI [lo, hi] (NaN when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int


def _mean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean that treats a column of equal infinities as that infinity (no inf - inf)."""
    with np.errstate(invalid="ignore"):
        return np.mean(values, axis=axis)


def bootstrap_mean(
    values,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Estimate:
    """Mean of ``values`` (NaN dropped) and the percentile-bootstrap CI of the mean.

    Args:
        values: 1-D array-like of per-seed values.
    Returns:
        Estimate(mean, lo, hi, n); lo = hi = NaN when fewer than 2 values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(_mean(x))
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_boot, n))
    means = _mean(x[index], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method="inverted_cdf")
    return Estimate(mean, float(lo), float(hi), n)


def paired_difference(
    a,
    b,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Estimate:
    """Mean of a_i - b_i over pairs (same seed) with a bootstrap CI over pairs.

    ``a`` and ``b`` must be aligned (element i of both comes from the same seed); pairs with
    a NaN on either side are dropped.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    with np.errstate(invalid="ignore"):
        diff = a - b
    return bootstrap_mean(diff, n_boot=n_boot, seed=seed, level=level)


def format_estimate(est: Estimate, digits: int = 2) -> str:
    """'12.34 [11.90, 12.80]', or '12.34' without a CI, or 'n/a'."""
    if est.n == 0 or np.isnan(est.mean):
        return "n/a"
    text = f"{est.mean:.{digits}f}"
    if not (np.isnan(est.lo) or np.isnan(est.hi)):
        text += f" [{est.lo:.{digits}f}, {est.hi:.{digits}f}]"
    return text
