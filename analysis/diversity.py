"""Diversity across seeds from a run's results (no model): how many distinct instances of a
distribution prompt the seeds of a method reached.

``instance`` (world/instance_metrics.py, logged at every evaluation for multi-instance
prompts) is the index of the instance a cell's renders are closest to. Per (method, prompt)
at each cell's last evaluation:

    distinct   number of different instances among the seeds
    seeds      number of seeds with an ``instance`` row
    top_share  fraction of seeds on the most common instance (1: every seed the same)

>>> df = pd.DataFrame({"method": ["sds"] * 3, "prompt": ["p"] * 3, "seed": [0, 1, 2],
...                    "step": [300] * 3, "metric": ["instance"] * 3, "value": [2.0, 2.0, 3.0]})
>>> instance_diversity(df).iloc[0].to_dict()
{'method': 'sds', 'prompt': 'p', 'seeds': 3, 'distinct': 2, 'top_share': 0.6666666666666666}
"""

from __future__ import annotations

import pandas as pd


def instance_diversity(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, prompt) with ``seeds``, ``distinct``, ``top_share`` (docstring)."""
    rows = df[df["metric"] == "instance"]
    columns = ["method", "prompt", "seeds", "distinct", "top_share"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    last = rows.sort_values("step").groupby(["method", "prompt", "seed"]).tail(1)
    out = []
    for (method, prompt), group in last.groupby(["method", "prompt"], sort=True):
        counts = group["value"].round().astype(int).value_counts()
        n = int(counts.sum())
        out.append((method, prompt, n, int(len(counts)), float(counts.iloc[0]) / n))
    return pd.DataFrame(out, columns=columns)
