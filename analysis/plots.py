"""Figures of long-format results (seaborn styling). Every function returns a
``matplotlib.figure.Figure`` built without pyplot (no global figure state, safe headless);
in a notebook the returned figure displays itself. Missing data give a figure that says
what is missing instead of an error.

    plot_variance(df, space)        log gradient variance vs step, per method, CI bands,
                                    one column per randomness variant, next to the PSNR
                                    it bought (docs/manual.md, "Gradient variance")
    plot_convergence(df, metric)    an eval metric vs step / network calls / wall-clock
    plot_render_grid(run, prompt)   held-out renders: methods x checkpoints, next to the truth
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.cells import CALLS, CELL, add_labels, sort_labels, with_calls
from analysis.plot_style import line_styles, message_figure, palette
from analysis.plot_style import style as _style
from analysis.stats import mean_ci
from results.catalogue import title as metric_title

VARIANTS = ("all", "fixed_camera", "fixed_camera_t")
VARIANT_TITLES = {
    "all": "camera, t, eps random",
    "fixed_camera": "camera fixed",
    "fixed_camera_t": "camera and t fixed",
}
X_AXES = {
    "step": "step",
    CALLS: "network calls (all networks)",
    "train_seconds": "training seconds",
}
PLOT_N_BOOT = 1000


def _band(values_by_step: pd.DataFrame, lo_col: str | None = None, hi_col: str | None = None):
    """Mean over seeds per step with a t CI over seeds; with one seed, the per-cell
    CI columns (lo_col / hi_col) if given. values_by_step: step, value[, lo_col, hi_col]."""
    steps, mean, lo, hi = [], [], [], []
    for step, rows in values_by_step.groupby("step"):
        values = rows["value"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        steps.append(step)
        if finite.size >= 2:
            est = mean_ci(finite, n_boot=PLOT_N_BOOT)
            mean.append(est.mean)
            lo.append(est.lo)
            hi.append(est.hi)
        else:
            mean.append(float(finite[0]))
            lo.append(float(rows[lo_col].iloc[0]) if lo_col in rows else np.nan)
            hi.append(float(rows[hi_col].iloc[0]) if hi_col in rows else np.nan)
    arr = [np.asarray(a, dtype=float) for a in (steps, mean, lo, hi)]
    for a in arr[2:]:
        a[~np.isfinite(a)] = np.nan
    return arr


def _seeds_per_label(df: pd.DataFrame) -> int:
    return int(df.groupby(["label", "prompt"])["seed"].nunique().min()) if len(df) else 0


def _wide_var(df: pd.DataFrame, prefix: str, variant: str) -> pd.DataFrame:
    """Rows CELL + label + step with value, lo, hi of var/<variant>/<prefix>log_var."""
    base = f"var/{variant}/{prefix}log_var"
    part = df[df["metric"].isin([base, base + "_lo", base + "_hi"])]
    if part.empty:
        return part
    wide = part.pivot_table(
        index=CELL + ["label", "step"], columns="metric", values="value", aggfunc="last"
    ).reset_index()
    return wide.rename(columns={base: "value", base + "_lo": "lo", base + "_hi": "hi"})


def plot_variance(
    df: pd.DataFrame,
    space: str = "theta",
    variants: tuple[str, ...] | None = None,
    prompts: list[str] | None = None,
    quality: str = "psnr",
) -> Figure:
    """Log gradient variance (ln trace Var) vs step, one line per method, mean over seeds with
    a 95% t band over seeds (with one seed: the probe's CI band over its K
    samples). Rows: prompts; columns: the randomness variants, then ``quality`` vs step.

    Args:
        space: "theta" (gradient of the 3D parameters) or "image" (G in the prior's space).
    """
    if space not in ("theta", "image"):
        raise ValueError(f"space must be 'theta' or 'image', got {space!r}")
    prefix = "img_" if space == "image" else ""
    df = add_labels(df)
    present = [
        v for v in (variants or VARIANTS) if (df["metric"] == f"var/{v}/{prefix}log_var").any()
    ]
    if not present:
        return message_figure(
            "No gradient-variance metrics (var/*/log_var) in these runs: "
            "run with --set measure.every=N (N > 0) to measure them."
        )
    prompts = prompts or list(dict.fromkeys(df["prompt"]))
    has_quality = (df["metric"] == quality).any()
    ncols = len(present) + int(has_quality)
    colors = palette(df["label"].unique())
    marks = line_styles(colors)
    one_seed = _seeds_per_label(df) < 2
    with _style():
        fig, axes = grid_figure(len(prompts), ncols, (3.6, 2.7), top=1.0, sharex=True)
        for i, prompt in enumerate(prompts):
            for j, variant in enumerate(present):
                ax = axes[i, j]
                wide = _wide_var(df[df["prompt"] == prompt], prefix, variant)
                if wide.empty or not np.isfinite(wide["value"].to_numpy(dtype=float)).any():
                    _no_values(ax, "no finite values")
                for label in sort_labels(wide["label"].unique()) if len(wide) else []:
                    rows = wide[wide["label"] == label]
                    steps, mean, lo, hi = _band(rows, "lo", "hi")
                    ax.plot(steps, mean, color=colors[label], label=label, **marks[label])
                    ax.fill_between(steps, lo, hi, color=colors[label], alpha=0.2, lw=0)
                ax.set_title(f"{prompt}\n{VARIANT_TITLES.get(variant, variant)}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"ln tr Var ({space})")
            if has_quality:
                ax = axes[i, -1]
                _convergence_axis(ax, df[df["prompt"] == prompt], quality, "step", colors)
                ax.set_title(f"{prompt}\n{metric_title(quality)}", fontsize=9)
        for ax in axes[-1]:
            ax.set_xlabel("step")
        band = (
            "band: 95% CI of the probe over its K samples (one seed)"
            if one_seed
            else "band: 95% t CI over seeds"
        )
        fig.suptitle(
            f"Gradient variance, {space} space (log of the trace of the covariance; lower is "
            f"less noisy) next to the quality it bought; {band}. Zero variance (ln = -inf) "
            "is not drawn.",
            fontsize=9,
            wrap=True,
        )
        _legend(fig, axes[0, 0])
    return fig


def grid_figure(
    nrows: int,
    ncols: int,
    cell: tuple[float, float] = (3.6, 2.5),
    top: float = 0.75,
    bottom: float = 0.95,
    sharex: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols axes with fixed margins in inches (``top`` for the title,
    ``bottom`` for the x labels and the legend), each cell ``cell`` inches wide and high.

    Large grids (12 prompts x 4 columns) are laid out in closed form: matplotlib's
    constrained layout measured every tick label of every axis and took half the report's
    time for the same picture.
    """
    left, right, hgap, vgap = 0.75, 0.15, 0.6, 0.6  # inches: y labels, margin, between axes
    width, height = ncols * cell[0] + left + right, nrows * cell[1] + top + bottom
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=hgap / (cell[0] - hgap),
        hspace=vgap / (cell[1] - vgap),
    )
    return fig, axes


def _legend(fig: Figure, ax) -> None:
    """One legend for the figure below its axes (outside the axes with constrained layout,
    in the bottom margin of a ``grid_figure``)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        constrained = fig.get_layout_engine() is not None
        fig.legend(
            handles,
            labels,
            loc="outside lower center" if constrained else "lower center",
            ncols=min(len(labels), 6),
            frameon=False,
        )


def convergence_frame(df: pd.DataFrame, metric: str, x: str) -> pd.DataFrame:
    """CELL + label + step + value (of ``metric``) + x (the x-axis value at that step:
    the step itself, or the cell's cumulative n_calls (all networks, ``with_calls``) /
    train_seconds, 0 at step 0)."""
    rows = df[df["metric"] == metric][CELL + ["label", "step", "value"]]
    if x == "step":
        return rows.assign(x=rows["step"].astype(float))
    along = df[df["metric"] == x][CELL + ["step", "value"]].rename(columns={"value": "x"})
    merged = rows.merge(along, on=CELL + ["step"], how="left")
    merged.loc[merged["step"] == 0, "x"] = 0.0
    return merged


def _no_values(ax, text: str = "no values (undefined for this prompt)") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _convergence_axis(ax, df: pd.DataFrame, metric: str, x: str, colors: dict) -> None:
    frame = convergence_frame(df, metric, x)
    marks = line_styles(colors)
    if not np.isfinite(frame["value"].to_numpy(dtype=float)).any():
        _no_values(ax)
        return
    for label in sort_labels(frame["label"].unique()):
        rows = frame[frame["label"] == label]
        steps, mean, lo, hi = _band(rows[["step", "value"]])
        xs = rows.groupby("step")["x"].mean().reindex(steps).to_numpy()
        ax.plot(xs, mean, color=colors[label], label=label, **marks[label])
        ax.fill_between(xs, lo, hi, color=colors[label], alpha=0.2, lw=0)


def plot_convergence(
    df: pd.DataFrame,
    metric: str = "psnr",
    xs: tuple[str, ...] = ("step", CALLS, "train_seconds"),
    prompts: list[str] | None = None,
) -> Figure:
    """``metric`` vs step, vs prior network calls and vs training wall-clock (columns), one
    row per prompt; mean over seeds with a 95% t band over seeds."""
    df = with_calls(add_labels(df))
    if not (df["metric"] == metric).any():
        return message_figure(f"No '{metric}' values in these runs.")
    xs = tuple(x for x in xs if x == "step" or (df["metric"] == x).any())
    prompts = prompts or list(dict.fromkeys(df["prompt"]))
    colors = palette(df["label"].unique())
    with _style():
        fig, axes = grid_figure(len(prompts), len(xs))
        for i, prompt in enumerate(prompts):
            for j, x in enumerate(xs):
                ax = axes[i, j]
                _convergence_axis(ax, df[df["prompt"] == prompt], metric, x, colors)
                ax.set_title(prompt, fontsize=9)
                if j == 0:
                    ax.set_ylabel(metric_title(metric))
                if i == len(prompts) - 1:
                    ax.set_xlabel(X_AXES.get(x, x))
        fig.suptitle(
            f"{metric_title(metric)} vs steps, network calls and training time "
            "(mean over seeds, band: 95% t CI over seeds)",
            fontsize=9,
        )
        _legend(fig, axes[0, 0])
    return fig


def plot_convergence_overview(
    df: pd.DataFrame,
    metrics: list[str],
    xs: tuple[str, ...] = ("step", CALLS, "train_seconds"),
) -> Figure:
    """Every metric in ``metrics`` (rows) vs step, network calls and training seconds
    (columns): one line per method, the mean over all its cells (prompts x seeds) with a 95%
    t band over them. The per-prompt curves are ``plot_convergence``'s."""
    df = with_calls(add_labels(df))
    metrics = [m for m in metrics if (df["metric"] == m).any()]
    if not metrics:
        return message_figure("No evaluation metrics in these runs.")
    xs = tuple(x for x in xs if x == "step" or (df["metric"] == x).any())
    colors = palette(df["label"].unique())
    n_cells = df.groupby(CELL).ngroups
    with _style():
        fig, axes = grid_figure(len(metrics), len(xs), (3.6, 2.4))
        for i, metric in enumerate(metrics):
            for j, x in enumerate(xs):
                _convergence_axis(axes[i, j], df, metric, x, colors)
                axes[i, j].set_ylabel(metric_title(metric) if j == 0 else "", fontsize=8)
                if i == len(metrics) - 1:
                    axes[i, j].set_xlabel(X_AXES.get(x, x))
        fig.suptitle(
            f"Every quality metric vs steps, network calls and training time: mean over each "
            f"method's cells ({n_cells} cells in all: prompts x seeds), band: 95% t CI over them",
            fontsize=9,
        )
        _legend(fig, axes[0, 0])
    return fig


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _pick(values: list[int], n: int) -> list[int]:
    if len(values) <= n:
        return values
    index = np.unique(np.round(np.linspace(0, len(values) - 1, n)).astype(int))
    return [values[i] for i in index]


def plot_render_grid(
    run,
    prompt: str,
    methods: list[str] | None = None,
    seed: int | None = None,
    max_checkpoints: int = 5,
    max_views: int = 4,
) -> Figure:
    """Held-out renders of one prompt: rows = methods, columns = the true object then
    checkpoints (at most ``max_checkpoints``, evenly picked, always first and last); each
    cell shows the first ``max_views`` held-out views side by side.

    Args:
        run: a run dir or an ``analysis.runs.RunInfo``.
        seed: the seed to show (default: the smallest seed of the run).
    """
    from analysis.runs import RunInfo, load_run_info

    info = run if isinstance(run, RunInfo) else load_run_info(run)
    methods = methods or info.manifest.get("methods") or []
    seeds = info.manifest.get("seeds") or [0]
    seed = min(seeds) if seed is None else seed
    truth = info.truth(prompt)
    rows = [(m, info.snapshot_steps(m, prompt, seed)) for m in methods]
    rows = [(m, s) for m, s in rows if s]
    if not rows:
        return message_figure(f"No render snapshots of '{prompt}' (seed {seed}) in this run.")
    steps = _pick(sorted(set().union(*(s for _, s in rows))), max_checkpoints)
    columns = (["truth"] if truth else []) + steps

    def crop(image: np.ndarray) -> np.ndarray:
        height = image.shape[0]
        return image[:, : max_views * height] if image.shape[1] > max_views * height else image

    sample = crop(_read_png(info.snapshot(rows[0][0], prompt, seed, rows[0][1][0])))
    aspect = sample.shape[1] / sample.shape[0]
    cell_h = 0.9
    with _style():
        fig = Figure(
            figsize=(1.0 + len(columns) * cell_h * aspect, 0.6 + len(rows) * (cell_h + 0.25)),
            layout="constrained",
        )
        axes = fig.subplots(len(rows), len(columns), squeeze=False)
        for i, (method, _) in enumerate(rows):
            for j, column in enumerate(columns):
                ax = axes[i, j]
                path = truth if column == "truth" else info.snapshot(method, prompt, seed, column)
                if path is not None:
                    ax.imshow(crop(_read_png(path)), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_edgecolor("0.85")
                if i == 0:
                    ax.set_title("truth" if column == "truth" else f"step {column}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(method, fontsize=10)
        fig.suptitle(f"{prompt} (seed {seed}, held-out views)", fontsize=10)
    return fig
