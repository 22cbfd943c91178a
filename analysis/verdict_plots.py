"""The verdict's two figures, aggregated over prompts and seeds (every cell a replicate):

    plot_nsr_vs_step(df)          noise-to-signal ratio (theta, variant ``all``) vs step:
                                  1 / the mean over cells of the unbiased snr, band 1 / its
                                  95% t CI (an snr CI reaching 0 leaves the band open above)
    plot_quality_vs_compute(df)   held-out PSNR vs cumulative network evaluations and vs
                                  training seconds: mean over cells with a 95% t band, x the
                                  mean cumulative cost of the cells at that checkpoint

Both return a matplotlib Figure built without pyplot, with a legend.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.cells import add_labels, sort_labels
from analysis.compute import quality_curve
from analysis.plot_style import line_styles, message_figure, palette, plain_log_axis
from analysis.plot_style import style as _style
from analysis.stats import mean_ci


def _aggregate(rows: pd.DataFrame, x: str, inverse: bool = False):
    """Per step: mean x, mean value and t CI over cells (of the reciprocal value, inverted
    back, when ``inverse``)."""
    out = []
    for _step, part in rows.groupby("step"):
        values = part["value"].to_numpy(float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        est = mean_ci(values)
        stats = [est.mean, est.lo, est.hi]
        if inverse:
            stats = [1.0 / v if v > 0 else np.inf for v in (est.mean, est.hi, est.lo)]
        out.append((float(part[x].mean()), *stats))
    return np.asarray(out, dtype=float).reshape(-1, 4).T


def _line(ax, rows, label, x, colors, marks, inverse=False):
    xs, mean, lo, hi = _aggregate(rows, x, inverse)
    if inverse:  # an open band (NSR not resolved) is drawn to the top of the axes
        finite = np.concatenate([mean[np.isfinite(mean)], lo[np.isfinite(lo)]])
        top = 10.0 * float(finite.max()) if finite.size else 1.0
        hi = np.where(np.isfinite(hi), hi, top)
        mean = np.where(np.isfinite(mean), mean, np.nan)
    n = rows.groupby(["run_id", "prompt", "seed"]).ngroups
    ax.plot(xs, mean, color=colors[label], label=f"{label} ({n} cells)", **marks[label])
    ax.fill_between(xs, lo, hi, color=colors[label], alpha=0.2, lw=0)


def plot_nsr_vs_step(df: pd.DataFrame) -> Figure:
    """NSR vs step per method (module docstring); step-0 rows flagged mu-uninformed dropped."""
    df = add_labels(df)
    rows = df[df["metric"] == "var/all/snr"][
        ["run_id", "method", "prompt", "seed", "label", "step", "value"]
    ]
    flags = df[(df["metric"] == "var/mu_uninformed") & (df["value"] > 0)]
    if len(flags):
        key = ["run_id", "method", "prompt", "seed", "step"]
        flagged = flags[key].assign(flag=True)
        rows = rows.merge(flagged, on=key, how="left")
        rows = rows[rows["flag"].isna()]
    if rows.empty:
        return message_figure("No signal-to-noise ratios (var/all/snr): the probe was off.")
    colors = palette(rows["label"].unique())
    marks = line_styles(colors)
    with _style():
        fig = Figure(figsize=(5.6, 3.6), layout="constrained")
        ax = fig.subplots()
        for label in sort_labels(rows["label"].unique()):
            part = rows[rows["label"] == label].assign(x=lambda r: r["step"].astype(float))
            _line(ax, part, label, "x", colors, marks, inverse=True)
        plain_log_axis(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("NSR = tr Var / ||mu||^2 (theta, unbiased)")
        ax.set_title(
            "Noise-to-signal ratio (lower is less noisy)\n1 / mean snr over prompts x seeds, "
            "band: 95% t CI",
            fontsize=9,
        )
        ax.legend(fontsize=8, frameon=False)
    return fig


def plot_quality_vs_compute(df: pd.DataFrame, metric: str = "psnr") -> Figure:
    """``metric`` vs cumulative NFE and vs training seconds per method (module docstring)."""
    df = add_labels(df)
    curve = quality_curve(df, metric)
    if curve.empty:
        return message_figure(f"No '{metric}' values in these runs.")
    colors = palette(curve["label"].unique())
    marks = line_styles(colors)
    with _style():
        fig = Figure(figsize=(10.0, 3.6), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, x, name in zip(
            axes,
            ("nfe", "seconds"),
            ("network evaluations (cumulative)", "training seconds (cumulative)"),
            strict=True,
        ):
            for label in sort_labels(curve["label"].unique()):
                part = curve[curve["label"] == label].rename(columns={"label": "lab"})
                _line(ax, part.rename(columns={"lab": "label"}), label, x, colors, marks)
            ax.set_xlabel(name)
            ax.set_ylabel("held-out PSNR (dB)" if metric == "psnr" else metric)
        band = "\nmean over prompts x seeds, band: 95% t CI"
        axes[0].set_title("Quality vs network evaluations" + band, fontsize=9)
        axes[1].set_title("Quality vs training wall-clock" + band, fontsize=9)
        axes[0].legend(fontsize=8, frameon=False)
    return fig
