"""Verdict words that hold: a minimum effect per quantity and Holm's correction across the
whole table (every method x quantity tested against SDS).

For each tested row with a t CI ``est`` of (method - SDS) (or of ln ratio, or of the one-
sample figure) at 95% over prompts (``analysis.stats.clustered_mean_ci``) and the catalogue's
minimum effect delta (``results.catalogue.minimum_effect``), two p-values:

    p_beyond   the difference lies beyond delta on the side of its estimate
               (``analysis.stats.beyond_pvalue``)
    p_within   it lies inside [-delta, delta] (two one-sided t tests: the larger p)

All of the table's p-values are adjusted together by Holm's step-down method
(``analysis.stats.holm``: family-wise error <= 5% over every word in the table), then:

    better / worse           adjusted p_beyond < 0.05 (by the better-direction)
    within minimum effect    adjusted p_within < 0.05
    no clear difference      neither

Rows that get no test: ``reference`` (SDS), ``indicative`` (seconds measured with cells
sharing cores: a seconds verdict needs ``workers == 1``), ``n/a`` (no CI, no minimum effect,
or no better-direction). The bias check uses its own words (``BIAS_WORDS``).

>>> table = pd.DataFrame({"mean": [2.0, 0.01], "lo": [1.5, -0.05], "hi": [2.5, 0.07],
...     "n": [6, 6], "delta": [0.5, 0.5], "direction": ["higher", "higher"],
...     "kind": ["diff", "diff"], "verdict": ["", ""]})
>>> assign_words(table)["verdict"].tolist()
['better', 'within minimum effect']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats import Estimate, beyond_pvalue, holm

ALPHA = 0.05
#: the bias check's words for (beyond, within, neither) (it is one-sided: bias_rel >= 0)
BIAS_WORDS = ("differs from SDS's mean", "matches SDS's mean", "unresolved")


def within_pvalue(est: Estimate, delta: float, level: float = 0.95) -> float:
    """p of the equivalence |mean| < delta: the larger of the two one-sided t tests
    (mean > -delta, mean < delta); NaN without a CI.

    >>> round(within_pvalue(Estimate(0.0, -0.1, 0.1, 10), 1.0), 6)
    0.0
    """
    if est.n < 2 or not (np.isfinite(est.lo) and np.isfinite(est.hi)):
        return float("nan")
    from scipy import stats

    df = est.n - 1
    se = (est.hi - est.lo) / (2.0 * float(stats.t.ppf(0.5 + level / 2.0, df)))
    if se <= 0:
        return 0.0 if abs(est.mean) < delta else 1.0
    above = float(stats.t.sf((est.mean + delta) / se, df))
    below = float(stats.t.cdf((est.mean - delta) / se, df))
    return max(above, below)


def assign_words(table: pd.DataFrame) -> pd.DataFrame:
    """Fill ``verdict`` of the rows whose verdict is '' (to be tested) from their columns
    mean, lo, hi, n (the CI on the tested scale), delta, direction and kind ('diff' or
    'bias'); adds p_beyond, p_within and their Holm-adjusted forms."""
    table = table.copy()
    todo = table["verdict"] == ""
    p_beyond = np.full(len(table), np.nan)
    p_within = np.full(len(table), np.nan)
    side = np.zeros(len(table), dtype=int)
    for i, row in enumerate(table.itertuples(index=False)):
        if not todo.iloc[i]:
            continue
        est = Estimate(row.mean, row.lo, row.hi, int(row.n))
        p_beyond[i], side[i] = beyond_pvalue(est, row.delta)
        p_within[i] = within_pvalue(est, row.delta)
    adjusted = holm(np.concatenate([p_beyond, p_within]))
    adj_beyond, adj_within = adjusted[: len(table)], adjusted[len(table) :]
    words = []
    for i, row in enumerate(table.itertuples(index=False)):
        if not todo.iloc[i]:
            words.append(row.verdict)
            continue
        if np.isnan(p_beyond[i]):
            words.append("n/a")
            continue
        bias = row.kind == "bias"
        if adj_beyond[i] < ALPHA and not (bias and side[i] < 0):
            good = (side[i] > 0) == (row.direction == "higher")
            words.append(BIAS_WORDS[0] if bias else ("better" if good else "worse"))
        elif adj_within[i] < ALPHA:
            words.append(BIAS_WORDS[1] if bias else "within minimum effect")
        else:
            words.append(BIAS_WORDS[2] if bias else "no clear difference")
    table["verdict"] = words
    table["p_beyond"], table["p_within"] = p_beyond, p_within
    table["p_beyond_holm"], table["p_within_holm"] = adj_beyond, adj_within
    return table
