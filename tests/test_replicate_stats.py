"""CIs over replicates (analysis/stats.py): the t interval against scipy's, the paired
difference, and coverage by simulation against the percentile bootstrap it replaces.

Coverage: N_SIM samples of n replicates per setting; binomial sd at 0.95 is 0.0069 at
N_SIM = 1000, so |coverage - 0.95| <= 0.025 is about 3.6 sd.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.stats import bootstrap_mean, mean_ci, paired_difference

N_SIM = 1000


def test_t_interval_matches_scipy():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=13)
    est = mean_ci(x, level=0.9)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=0.9)
    assert (est.mean, est.n) == (pytest.approx(x.mean()), 13)
    assert (est.lo, est.hi) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))


def test_edge_cases():
    assert np.isnan(mean_ci([1.0]).lo) and mean_ci([]).n == 0
    assert mean_ci([2.0, np.nan, 4.0]).n == 2
    assert mean_ci([-np.inf, -np.inf]).mean == -np.inf  # zero variance stays -inf
    est = mean_ci([-np.inf, 1.0, 2.0])  # infinities: percentile-bootstrap fallback
    assert est == bootstrap_mean([-np.inf, 1.0, 2.0]) and est.lo == -np.inf


def test_paired_difference_is_the_interval_of_the_differences():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=20)
    a, b = shared + 0.3 + 0.1 * rng.normal(size=20), shared
    assert paired_difference(a, b) == mean_ci(a - b)
    assert paired_difference(a, b).lo > 0  # pairing removes the shared part
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def _coverage(x: np.ndarray, true: float) -> tuple[float, float]:
    """(t interval, percentile bootstrap) coverage over the rows of x [N_SIM, n]."""
    hit_t = hit_b = 0
    for row in x:
        t, b = mean_ci(row), bootstrap_mean(row, n_boot=400)
        hit_t += t.lo <= true <= t.hi
        hit_b += b.lo <= true <= b.hi
    return hit_t / len(x), hit_b / len(x)


@pytest.mark.parametrize("n", [12, 36])
def test_coverage_normal_and_paired(n):
    rng = np.random.default_rng(n)
    new, old = _coverage(rng.normal(size=(N_SIM, n)), 0.0)
    assert abs(new - 0.95) <= 0.025 and old < new, (new, old)
    # paired by common random numbers: a strong shared part, a small method effect 0.3
    shared = rng.normal(size=(N_SIM, n)) * 3.0
    a, b = shared + 0.3 + 0.5 * rng.normal(size=(N_SIM, n)), shared
    hits = sum(e.lo <= 0.3 <= e.hi for e in map(paired_difference, a, b))
    assert abs(hits / N_SIM - 0.95) <= 0.025


def test_coverage_heavy_tailed():
    rng = np.random.default_rng(7)
    new, old = _coverage(rng.standard_t(3, size=(N_SIM, 12)), 0.0)
    assert new >= 0.93 and old < new, (new, old)
