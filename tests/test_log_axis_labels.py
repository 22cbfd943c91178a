"""Log axes in the report's figures show plain numbers, not raw mathtext: the report draws with
``text.parse_math`` off (user text is never parsed), under which matplotlib's default log tick
labels ($\\mathdefault{10^{-1}}$) would appear as literal strings."""

import matplotlib
import numpy as np
import pandas as pd

from analysis.convergence_plots import plot_convergence_signals
from analysis.plot_style import plain_log_axis


def _labels(fig) -> list[str]:
    fig.canvas.draw()
    return [
        t.get_text()
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for t in axis.get_ticklabels(which="both")
    ]


def _signals() -> pd.DataFrame:
    rows = []
    for method in ("sds", "ssd"):
        for step in range(5, 45, 5):
            for metric, value in (
                ("conv/agreement", 0.01 * np.sin(step)),
                ("conv/render_change", 0.3 * np.exp(-step / 15)),
                ("quality/psnr", step / 40),
            ):
                rows.append(("r", method, "a snowman $x$", 0, step, metric, value))
        rows.append(("r", method, "a snowman $x$", 0, 25, "stop/fired", 1.0))
    return pd.DataFrame(
        rows, columns=["run_id", "method", "prompt", "seed", "step", "metric", "value"]
    )


def test_plain_log_axis_labels_are_numbers_under_the_reports_rc():
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        fig = Figure()
        ax = fig.subplots()
        ax.plot([1, 2, 3], [0.05, 0.2, 3.0])
        plain_log_axis(ax)
        labels = [text for text in _labels(fig) if text]
    assert labels and not any("$" in text or "mathdefault" in text for text in labels)
    assert "0.1" in labels and "1" in labels


def test_convergence_signals_figure_has_no_raw_mathtext():
    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        fig = plot_convergence_signals(_signals())
        labels = _labels(fig)
    assert any(labels)
    assert not any("mathdefault" in text for text in labels), labels
