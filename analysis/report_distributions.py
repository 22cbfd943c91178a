"""The report's table for prompts that are distributions (world/distributions.py): what each
method did with several instances, read from a run's results (no model).

Per (method, prompt) with ``averaging`` rows (logged at every evaluation of a multi-instance
prompt, world/instance_metrics.py), at each cell's last evaluation, mean over seeds:

    psnr        best-instance held-out PSNR (dB): max_k mean_v PSNR(render_v, instance_k,v)
    averaging   PSNR to the instances' average minus ``psnr`` (dB); > 0: the render is closer
                to the average of the instances than to any one of them (mode averaging)
    commitment  fraction of held-out views whose own best instance is the overall best (1: all
                views agree on one instance)
    detail      high-frequency energy of the render / of the truth (1: as detailed; < 1 smooth)
    chroma      chroma of the render / of the truth on the truth's foreground (> 1: saturated)
    distinct    instances reached by the seeds (analysis/diversity.py), "of" seeds

>>> rows = [("sds", "p", 0, 300, m, v) for m, v in
...         [("psnr", 20.0), ("averaging", 1.5), ("commitment", 0.5), ("instance", 3.0)]]
>>> df = pd.DataFrame(rows, columns=["method", "prompt", "seed", "step", "metric", "value"])
>>> row = distribution_table(df).iloc[0]
>>> [str(row[k]) for k in ("method", "seeds", "psnr", "averaging", "commitment", "distinct")]
['sds', '1', '20.0', '1.5', '0.5', '1']
"""

from __future__ import annotations

import pandas as pd

from analysis.diversity import instance_diversity
from analysis.html import esc, table_html

COLUMNS = ("psnr", "averaging", "commitment", "detail", "chroma")


def distribution_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, prompt) of a multi-instance prompt (module docstring)."""
    header = ["method", "prompt", "seeds", *COLUMNS, "distinct"]
    prompts = df.loc[df["metric"] == "averaging", "prompt"].unique()
    rows = df[df["prompt"].isin(prompts) & df["metric"].isin(COLUMNS)]
    if rows.empty:
        return pd.DataFrame(columns=header)
    cell = ["method", "prompt", "seed"]
    last_step = rows.groupby(cell)["step"].transform("max")
    last = rows[rows["step"] == last_step].pivot_table(
        index=cell, columns="metric", values="value", aggfunc="last"
    )
    means = last.groupby(level=["method", "prompt"]).mean().reindex(columns=list(COLUMNS))
    seeds = last.groupby(level=["method", "prompt"]).size().rename("seeds")
    out = means.join(seeds).reset_index()
    diversity = instance_diversity(df)[["method", "prompt", "distinct"]]
    out = out.merge(diversity, on=["method", "prompt"], how="left")
    out["distinct"] = out["distinct"].fillna(0).astype(int)
    return out[header].reset_index(drop=True)


def distributions_html(df: pd.DataFrame) -> str:
    """The section (empty string when the run has no multi-instance prompt)."""
    table = distribution_table(df)
    if table.empty:
        return ""

    def number(value: float, digits: int) -> str:
        return "" if pd.isna(value) else f"{value:.{digits}f}"

    rows = [
        (
            r.prompt,
            r.method,
            number(r.psnr, 2),
            number(r.averaging, 2),
            number(r.commitment, 2),
            number(r.detail, 2),
            number(r.chroma, 2),
            f"{r.distinct} of {r.seeds}",
        )  # fmt: skip
        for r in table.sort_values(["prompt", "method"]).itertuples()
    ]
    header = ["prompt", "method", "best-instance PSNR (dB)", "averaging (dB)", "commitment",
              "detail", "chroma", "instances reached (seeds)"]  # fmt: skip
    return (
        "<h2>Prompts that are distributions</h2>"
        "<p class='meta'>At each cell's last evaluation, mean over seeds. Averaging: PSNR to "
        "the instances' average minus to the best instance (dB; &gt; 0: closer to the average "
        "than to any instance, mode averaging). Commitment: share of held-out views whose best "
        "instance is the overall best. Detail and chroma: the render's high-frequency energy "
        "and chroma over the truth's (1: as the truth). "
        + esc("Instances reached: distinct best instances over the seeds.")
        + "</p>"
        + table_html(header, rows, text_columns=2)
    )
