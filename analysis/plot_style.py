"""Styling shared by every figure of the report and the notebooks: a seaborn context, a
colour and a line style per method that stay the same in every figure and keep coinciding
curves visible, log axes with plain labels, a figure that says what is missing, and PNG
export.

    style()                 seaborn whitegrid / notebook context (a context manager)
    palette(labels)         colour per label (SDS, VSD, SSD fixed)
    line_styles(labels)     marker, dash, width per label (equal curves stay visible)
    plain_log_axis(ax)      log axis with %g tick labels (the report turns mathtext off)
    message_figure(text)    a figure that only says ``text``
    figure_png(fig)         PNG bytes, palette-quantised
"""

from __future__ import annotations

from contextlib import contextmanager

from matplotlib.figure import Figure

from analysis.cells import sort_labels

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
#: dash patterns per label: a later line drawn over an earlier one leaves gaps through which
#: the earlier one shows (SSD's NSR curve on top of SDS's)
LINESTYLES = ("-", (0, (5, 2)), (0, (2, 2)), (0, (6, 2, 1.5, 2)), (0, (3, 3)))
_COLORS = {"sds": 0, "vsd": 1, "ssd": 2}


@contextmanager
def style():
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def line_styles(labels) -> dict[str, dict]:
    """``ax.plot`` keywords per label that keep coinciding curves visible (SSD's NSR curve
    equal to SDS's): marker shape, dash pattern, and a line width and marker size that shrink
    with the label's rank (i mod 3), so a later, thinner dashed line lies inside an earlier,
    thicker one and a later marker inside an earlier one. Rank 0 draws a large hollow ring, the
    others a smaller solid glyph with a white edge (a solid glyph inside a ring; two solid
    glyphs of different shapes and sizes); lines above every band (zorder 3), so a later
    method's band does not veil an earlier line.

    >>> styles = line_styles(["ssd", "vsd", "sds"])
    >>> styles["sds"]["ls"], styles["vsd"]["ls"], styles["sds"]["ms"] > styles["vsd"]["ms"]
    ('-', (0, (5, 2)), True)
    >>> styles["sds"]["mfc"], styles["vsd"]["mfc"], styles["ssd"]["mec"]
    ('none', None, 'white')
    """
    out = {}
    for i, label in enumerate(sort_labels(labels)):
        rank = i % 3
        style = {
            "marker": MARKERS[i % len(MARKERS)],
            "ls": LINESTYLES[i % len(LINESTYLES)],
            "ms": (8.0, 5.5, 5.0)[rank],
            "lw": (2.6, 1.5, 1.0)[rank],
            "zorder": 3,
        }
        if rank == 0:
            style.update(mfc="none", mew=1.5)
        else:  # mfc None: the line's colour
            style.update(mfc=None, mec="white", mew=0.6, gapcolor="white")
        out[label] = style
    return out


def plain_log_axis(ax, axis: str = "y") -> None:
    """A log ``axis`` with plain tick labels (1, 2, 5 per decade as ``%g``): the report draws
    with mathtext off (``text.parse_math`` False, so that user text such as prompts is never
    parsed), and matplotlib's default log labels are mathtext (``$10^{k}$``), which would show
    as raw strings."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def palette(labels) -> dict[str, tuple]:
    """Colour per label; SDS, VSD and SSD keep the same colour in every figure."""
    import seaborn as sns

    colors = sns.color_palette("colorblind", 10)
    out, spare = {}, 3
    for label in sort_labels(labels):
        method = label.split(" [")[0]
        if method in _COLORS and not any(v == colors[_COLORS[method]] for v in out.values()):
            out[label] = colors[_COLORS[method]]
        else:
            out[label] = colors[spare % len(colors)]
            spare += 1
    return out


def message_figure(text: str, width: float = 7.0, height: float = 1.2) -> Figure:
    """A small figure that only says ``text`` (used when the data for a plot is missing)."""
    fig = Figure(figsize=(width, height))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, color="0.3")
    return fig


def figure_png(fig: Figure, dpi: int = 110, colors: int | None = 256) -> bytes:
    """The figure as PNG bytes; with ``colors``, quantised to that many palette colours
    (plots have few colours: ~3-4x smaller files, no visible change)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    if colors is None:
        return buffer.getvalue()
    buffer.seek(0)
    with Image.open(buffer) as image:
        quantised = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    quantised.save(out, format="PNG", optimize=True)
    return out.getvalue()
