"""Steps / calls / seconds to threshold in analysis/summary.py: on the quality fraction
(quality/psnr, evaluation/ceiling.py) when logged, never at or below the start."""

import math

import pandas as pd
import pytest

from analysis.summary import psnr_thresholds, summarize

COLUMNS = ["run_id", "method", "prompt", "seed", "step", "metric", "value"]


def frame(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


def quality_cell(seed, fractions, start=12.0, ceiling=22.0):
    """Rows of one SDS cell with quality/psnr = ``fractions`` at steps 0, 50, 100, ..."""
    rows = [("r", "sds", "p", seed, 0, "ceiling/psnr", ceiling)]
    for i, q in enumerate(fractions):
        step = 50 * i
        rows += [
            ("r", "sds", "p", seed, step, "psnr", start + q * (ceiling - start)),
            ("r", "sds", "p", seed, step, "quality/psnr", q),
        ]
        if step:
            rows += [
                ("r", "sds", "p", seed, step, "n_evals", 2.0 * step),
                ("r", "sds", "p", seed, step, "train_seconds", 0.1 * step),
            ]
    return rows


def test_steps_to_quality_fraction():
    df = frame(quality_cell(0, [0.0, 0.4, 0.6, 0.9]) + quality_cell(1, [0.0, 0.55, 0.7, 0.75]))
    summary = summarize(df)
    cells = summary.cells.set_index("seed")
    assert cells.loc[0, "steps to q50"] == 100 and cells.loc[0, "steps to q80"] == 150
    assert cells.loc[0, "calls to q50"] == 200 and cells.loc[0, "seconds to q80"] == 15.0
    assert cells.loc[1, "steps to q50"] == 50 and math.isnan(cells.loc[1, "steps to q80"])
    assert "steps to psnr thr" not in summary.quantities  # replaced by the fraction
    assert cells.loc[0, "final quality/psnr"] == 0.9
    assert summary.thresholds["p"] == pytest.approx(12.0 + 0.8 * 10.0)
    table = summary.wide(["steps to q80"])
    assert table.iloc[0, 0].startswith("150")  # one of two seeds reached it
    assert "calls to q80" in summary.quantities


def test_a_fraction_reached_at_the_start_does_not_count():
    """Step 0 is the start: a threshold is never reached there, whatever is logged."""
    df = frame(quality_cell(0, [0.9, 0.2, 0.85]))
    cells = summarize(df).cells
    assert cells.loc[0, "steps to q80"] == 100 and cells.loc[0, "steps to q50"] == 100


def test_psnr_threshold_is_never_the_start_when_nothing_improved():
    """Without quality metrics: a prompt whose best final PSNR is below the start (the desk
    lamp: threshold 12.43 = its start, steps 0) gets no threshold."""
    rows = []
    for prompt, end in (("lamp", 11.6), ("sphere", 30.0)):
        rows += [("r", "sds", prompt, 0, 0, "psnr", 12.4), ("r", "sds", prompt, 0, 50, "psnr", end)]
    df = frame(rows)
    thresholds = psnr_thresholds(df)
    assert math.isnan(thresholds["lamp"])
    assert thresholds["sphere"] == pytest.approx(12.4 + 0.75 * (30.0 - 12.4))
    cells = summarize(df).cells.set_index("prompt")
    assert math.isnan(cells.loc["lamp", "steps to psnr thr"])
    assert cells.loc["sphere", "steps to psnr thr"] == 50


def test_calls_count_every_network():
    """'calls' (to threshold, per step) add the phi and depth counters to the prior's: an SSD
    cell with one prior and one depth evaluation per step spends 2 calls per step."""
    rows = quality_cell(0, [0.0, 0.4, 0.6, 0.9])
    rows += [("r", "sds", "p", 0, 50 * i, "n_evals_depth", 50.0 * i) for i in range(1, 4)]
    cells = summarize(frame(rows)).cells.set_index("seed")
    assert cells.loc[0, "calls to q50"] == 300  # 2 x 100 prior + 100 depth
    assert cells.loc[0, "calls/step"] == 3.0
