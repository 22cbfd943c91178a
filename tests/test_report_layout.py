"""The report's verdict table fits a 1280-px page, and coinciding curves stay visible."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis.plot_style import line_styles
from analysis.report import _CSS
from analysis.report_verdict import VERDICT_COLUMNS

#: px: the page (a 1280-px window less its scroll bar), the body's margins, the table's font
#: (0.85 x 16 px) and a generous average glyph width of a sans-serif face (0.62 em)
PAGE, MARGIN, FONT, GLYPH = 1280 - 17, 2 * 24, 0.85 * 16, 0.62
#: the widest words a verdict cell holds: '-123.45 [-130.12, -116.78]: better (3/12 reach
#: SDS's budget)', '12.0 (12.0)'
CELL_WORDS = ["-123.45", "[-130.12,", "-116.78]:", "different", "budget)", "(12.0)"]


def test_every_verdict_cell_and_header_may_wrap():
    rule = re.search(r"#verdict td, #verdict th \{([^}]*)\}", _CSS)
    assert rule and "white-space: normal" in rule.group(1)


def test_the_verdict_tables_narrowest_layout_fits_1280_px():
    """With every cell wrapping at spaces, a column is as wide as its longest word (or its
    min-width), plus 2 x 8 px padding and a 1 px border."""
    min_em = float(re.search(r"#verdict td, #verdict th \{[^}]*min-width: ([\d.]+)em", _CSS)[1])
    text_min_em = float(re.search(r"td\.text \{[^}]*min-width: ([\d.]+)em", _CSS)[1])

    def column(words, min_width_em):
        longest = max(len(w) for w in words) * GLYPH * FONT
        return max(longest, min_width_em * FONT) + 2 * 8 + 1

    widths = [column(["method", "bridge"], text_min_em), column(["cells", "12/12"], min_em)]
    for _, title, _ in VERDICT_COLUMNS:
        widths.append(column([*title.split(), *CELL_WORDS], min_em))
    assert sum(widths) <= PAGE - MARGIN, widths


def test_coinciding_curves_differ_in_dashes_and_marker_sizes():
    labels = ["sds", "vsd", "ssd", "csd", "ism"]
    styles = line_styles(labels)
    assert len({str(s["ls"]) for s in styles.values()}) == len(labels)
    assert styles["sds"]["ls"] == "-" and styles["ssd"]["ls"] != "-"
    assert styles["sds"]["ms"] > styles["vsd"]["ms"] > styles["ssd"]["ms"]


@pytest.mark.parametrize("methods", [("sds", "ssd"), ("sds", "vsd", "ssd")])
def test_ssd_nsr_curve_over_sds_keeps_both_visible(methods):
    """Two identical NSR series (SSD's equal to SDS's, with or without VSD between them in
    the labels' order) give distinguishable artists: line style, width, marker shape, size
    and fill differ; the later, thinner dashed line has white gaps (so the thicker one shows
    through it); every line lies above every band."""
    from matplotlib.colors import to_rgba

    from analysis.verdict_plots import plot_nsr_vs_step

    rows = []
    for method in methods:  # the same NSR for every method: the curves coincide
        for seed in (0, 1):
            for step, snr in ((10, 0.4), (20, 0.5)):
                value = snr + 0.01 * seed
                rows.append(("r", method, "a snowman", seed, step, "var/all/snr", value))
    columns = ["run_id", "method", "prompt", "seed", "step", "metric", "value"]
    fig = plot_nsr_vs_step(pd.DataFrame(rows, columns=columns))
    ax = fig.axes[0]
    lines = {line.get_label().split()[0]: line for line in ax.get_lines()}
    sds, ssd = lines["sds"], lines["ssd"]
    np.testing.assert_allclose(sds.get_xdata(), ssd.get_xdata())
    np.testing.assert_allclose(sds.get_ydata(), ssd.get_ydata())
    assert sds.get_linestyle() == "-" and ssd.get_linestyle() != "-"
    assert sds.get_markersize() > ssd.get_markersize()
    assert sds.get_linewidth() > ssd.get_linewidth()
    assert sds.get_marker() != ssd.get_marker()
    assert sds.get_markerfacecolor() == "none"  # a ring around SSD's solid glyph
    assert to_rgba(ssd.get_markerfacecolor()) == to_rgba(ssd.get_color())
    assert to_rgba(ssd.get_gapcolor()) == to_rgba("white")
    bands = [c.get_zorder() for c in ax.collections]
    assert len(bands) == len(methods) and min(x.get_zorder() for x in lines.values()) > max(bands)
