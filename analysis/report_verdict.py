"""The report's "Verdict" section and the turntables (analysis/report.py puts them first).

Verdict: one row per method at equal compute (``analysis.verdict.method_table``) with 95% t
CIs over replicates (prompts x seeds) and plain words (better / worse / no difference at 95%),
a sentence per method, the NSR-vs-step and quality-vs-compute figures.

Turntables: per cell, an animated GIF of the final checkpoint's held-out ring (``eval.n_views``
views at 360 / n degree steps, the snapshot PNG already in the run) beside the true object's
renders at the same cameras, embedded as a base64 ``data:`` URI (no renderer is run).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from analysis.cells import sort_labels
from analysis.html import esc, safe_figure, table_html
from analysis.runs import RunInfo
from analysis.stats import Estimate, format_estimate
from analysis.verdict import method_table, verdict_sentence

#: (quantity, column title, show the paired difference with SDS instead of the mean)
VERDICT_COLUMNS = (
    ("compute_multiplier", "x compute (NSR x NFE)", False),
    ("compute_multiplier_seconds", "x compute (NSR x s)", False),
    ("psnr_equal_compute", "dPSNR at SDS's NFE (dB)", True),
    ("psnr_equal_seconds", "dPSNR at SDS's seconds (dB)", True),
    ("nsr", "NSR (last probe)", False),
    ("psnr", "final PSNR (dB)", False),
    ("nfe_per_step", "NFE/step (model)", False),
    ("seconds_per_step", "s/step", False),
)
DIGITS = {"nsr": 1, "nfe_per_step": 1, "seconds_per_step": 3}


def _text(row: pd.Series, diff: bool, digits: int) -> str:
    if diff:
        est = Estimate(row["diff"], row["diff_lo"], row["diff_hi"], int(row["n_pairs"]))
    else:
        est = Estimate(row["mean"], row["lo"], row["hi"], int(row["n"]))
    return format_estimate(est, digits)


def verdict_rows(estimates: pd.DataFrame, cells: pd.DataFrame):
    """Header and rows of the verdict table; each cell 'value [lo, hi]' and its word."""
    header = ["method", "cells"] + [title for _, title, _ in VERDICT_COLUMNS]
    rows, sentences = [], []
    for label in sort_labels(cells["label"]):
        ests = estimates[estimates["label"] == label].set_index("quantity")
        mine = cells[cells["label"] == label]
        row = [label, f"{int((~mine['failed']).sum())}/{len(mine)}"]
        for name, _, diff in VERDICT_COLUMNS:
            e = ests.loc[name]
            text = _text(e, diff, DIGITS.get(name, 2))
            if name == "nfe_per_step":
                model = ests.loc["nfe_model_per_step", "mean"]
                text += f" ({model:.1f})" if np.isfinite(model) else " (model n/a)"
            elif e["verdict"] not in ("n/a",) and name not in ("nfe_per_step", "seconds_per_step"):
                text += f": {e['verdict']}"
            if name.startswith("psnr_equal") and e["n"] < len(mine):
                text += f" ({int(e['n'])}/{len(mine)} reach SDS's budget)"
            row.append(text)
        rows.append(row)
        sentences.append(verdict_sentence(label, ests))
    return header, rows, sentences


def verdict_html(df: pd.DataFrame, infos: list[RunInfo], errors: list[str]) -> str:
    """<section id="verdict">: the table, one sentence per method and the two figures."""
    from analysis import verdict_plots

    manifests = {i.run_id: i.manifest for i in infos}
    estimates, cells = method_table(df, manifests)
    header, rows, sentences = verdict_rows(estimates, cells)
    parts = ['<section id="verdict"><h2>Verdict</h2>']
    parts.append(
        "<p class='meta'>At equal compute, each method against SDS on the same prompts and "
        "seeds (common random numbers). Mean [95% t CI] over prompts x seeds. x compute = "
        "(NSR x cost)_SDS / (NSR x cost)_method per step (NSR: noise-to-signal ratio of the "
        "theta-gradient, tr Var / unbiased ||mean||^2, at the probe steps, step 0 left out; "
        "scale-free, unlike the raw variance): &gt; 1 reaches SDS's relative precision with "
        "less compute. NSR: 1 / the mean snr over prompts x seeds, its CI inverted (inf: not "
        "resolved). "
        "PSNR at SDS's budget: the method's held-out PSNR interpolated at SDS's final "
        "cumulative network evaluations (or seconds), minus SDS's final PSNR. Words (from the "
        "paired difference with SDS, or the multiplier's CI against 1): better / "
        "worse / no difference at 95%. NFE/step: measured (registry cost model). Seconds "
        "are wall-clock on the machine of the run (noisy on a shared machine).</p>"
    )
    parts.append(table_html(header, rows, text_columns=1))
    parts.append(
        "<ul class='verdict'>" + "".join(f"<li>{esc(s)}</li>" for s in sentences) + "</ul>"
    )
    parts.append("<div class='figrow'>")
    parts.append(
        safe_figure(
            lambda: verdict_plots.plot_nsr_vs_step(df),
            "NSR vs step: 1 / the mean unbiased snr over all prompts and seeds, band: its 95% t "
            "CI inverted; SSD's step-0 rows flagged mu-uninformed are left out.",
            "NSR vs step",
            errors,
        )
    )
    parts.append(
        safe_figure(
            lambda: verdict_plots.plot_quality_vs_compute(df),
            "Held-out PSNR vs cumulative network evaluations and training seconds: mean over all "
            "prompts and seeds at each checkpoint, band: 95% t CI; x: the cells' mean cost.",
            "quality vs compute",
            errors,
        )
    )
    parts.append("</div></section>")
    return "\n".join(parts)


def _tiles(path, n: int | None = None) -> list[np.ndarray]:
    from PIL import Image

    with Image.open(path) as image:
        row = np.asarray(image.convert("RGB"))
    size = row.shape[0]
    count = row.shape[1] // size if n is None else n
    return [row[:, i * size : (i + 1) * size] for i in range(count)]


def turntable_gif(final_png, truth_png, scale: int = 3, ms: int = 250) -> bytes:
    """Animated GIF: frame i = the final asset's held-out view i | the truth's view i."""
    from PIL import Image

    final = _tiles(final_png)
    truth = _tiles(truth_png, len(final)) if truth_png else [np.zeros_like(f) for f in final]
    frames = []
    for a, b in zip(final, truth, strict=False):
        pair = np.concatenate([a, np.full((a.shape[0], 2, 3), 255, np.uint8), b], 1)
        image = Image.fromarray(pair).resize(
            (pair.shape[1] * scale, pair.shape[0] * scale), Image.NEAREST
        )
        frames.append(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return out.getvalue()


def turntables_html(df: pd.DataFrame, infos: list[RunInfo], errors: list[str]) -> str:
    """Per cell: the final asset turning next to the truth (folded)."""
    figures = []
    for info in infos:
        cells = df.loc[df["run_id"] == info.run_id, ["method", "prompt", "seed"]].drop_duplicates()
        for cell in cells.itertuples(index=False):
            steps = info.snapshot_steps(cell.method, cell.prompt, int(cell.seed))
            if not steps:
                continue
            try:
                gif = turntable_gif(
                    info.snapshot(cell.method, cell.prompt, int(cell.seed), steps[-1]),
                    info.truth(cell.prompt),
                )
            except (OSError, ValueError) as exc:
                errors.append(f"turntable of {cell.method} / {cell.prompt} failed: {exc}")
                continue
            data = base64.b64encode(gif).decode("ascii")
            caption = f"{cell.method} | {cell.prompt} | seed {cell.seed} | step {steps[-1]}"
            figures.append(
                f'<figure class="turntable"><img alt="turntable {esc(caption)}" '
                f'src="data:image/gif;base64,{data}"><figcaption>{esc(caption)}'
                "<br>left: final asset, right: truth</figcaption></figure>"
            )
    if not figures:
        return ""
    return (
        "<details><summary>Turntables of the final assets next to the truth "
        f"({len(figures)} cells)</summary><div class='figrow'>"
        + "".join(figures)
        + "</div></details>"
    )
