"""Figures of the ground-truth-free convergence signals (``conv/*``, analysis/convergence.py).

plot_convergence_signals(df)    one column per method, one row per signal (agreement,
                                render change, signal ratio) and, where the runs have
                                it, the exact quality fraction below them: one line per
                                prompt (mean over seeds) vs step; a cross marks the step
                                where the run's stop rule fired
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.cells import CELL, add_labels, sort_labels
from analysis.convergence import QUALITY, stop_table
from analysis.plot_style import message_figure, plain_log_axis
from analysis.plot_style import style as _style
from results.catalogue import title as metric_title

#: the signals drawn, in order (those a run logged)
DRAWN = ("conv/agreement", "conv/render_change", "conv/signal_ratio")
#: signals drawn on a log axis (positive, spanning decades)
LOG_AXIS = {"conv/render_change"}


def _rows(df: pd.DataFrame) -> list[str]:
    present = set(df["metric"].unique())
    rows = [m for m in DRAWN if m in present]
    quality = [m for m in (QUALITY, "psnr") if m in present][:1]  # the exact one if logged
    return rows + (quality if rows else [])


def plot_convergence_signals(df: pd.DataFrame, max_prompts: int = 12) -> Figure:
    """See the module doc; ``max_prompts`` caps the lines per panel (the first prompts)."""
    rows = _rows(df)
    if not rows:
        return message_figure(
            "No convergence signals (conv/*) in these runs: they are logged at every "
            "evaluation unless stop.signals is false."
        )
    df = df if "label" in df.columns else add_labels(df)
    labels = sort_labels(df["label"])
    prompts = list(dict.fromkeys(df["prompt"]))[:max_prompts]
    data = df[df["metric"].isin(rows) & df["prompt"].isin(prompts) & (df["step"] > 0)]
    mean = data.groupby(["label", "prompt", "metric", "step"])["value"].mean()
    stops = stop_table(df).merge(df.groupby(CELL)["label"].first().reset_index(), on=CELL)
    fired = stops.dropna(subset=["stop/step"]).groupby(["label", "prompt"])["stop/step"].mean()
    import seaborn as sns

    colors = dict(zip(prompts, sns.color_palette("husl", len(prompts)), strict=True))
    with _style():
        fig = Figure(figsize=(3.4 * len(labels) + 1.6, 2.3 * len(rows)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(rows), len(labels), sharex=True, squeeze=False))
        for j, label in enumerate(labels):
            for i, metric in enumerate(rows):
                ax = axes[i, j]
                for prompt in prompts:
                    try:
                        series = mean.loc[(label, prompt, metric)]
                    except KeyError:
                        continue
                    ax.plot(series.index, series.to_numpy(), color=colors[prompt], lw=1.2,
                            label=prompt)  # fmt: skip
                    step = fired.get((label, prompt))
                    if step is not None and step in series.index:
                        ax.plot([step], [series.loc[step]], "x", color=colors[prompt], ms=8)
                if metric in LOG_AXIS and (data.loc[data["metric"] == metric, "value"] > 0).any():
                    plain_log_axis(ax)
                if i == 0:
                    ax.set_title(label)
                if j == 0:
                    ax.set_ylabel(metric_title(metric), fontsize=8)
                if i == len(rows) - 1:
                    ax.set_xlabel("step")
        handles, names = axes[0, 0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, names, loc="outside right center", fontsize=7, title="prompt")
        fig.suptitle("signals (no ground truth) and exact quality; x: rule fired", fontsize=9)
    return fig
