"""The report's table for prompts that are distributions (analysis/report_distributions.py)."""

import math

import pandas as pd

from analysis.report_distributions import distribution_table, distributions_html


def _rows(method, prompt, seed, step, **metrics):
    return [(method, prompt, seed, step, m, v) for m, v in metrics.items()]


def _frame(rows):
    return pd.DataFrame(rows, columns=["method", "prompt", "seed", "step", "metric", "value"])


def test_last_evaluation_mean_over_seeds_and_instances_reached():
    spots = "a <red> ball with white spots"  # escaped in the HTML
    rows = [
        *_rows("sds", spots, 0, 100, psnr=10.0, averaging=5.0, instance=1.0),  # not the last
        *_rows("sds", spots, 0, 300, psnr=20.0, averaging=1.0, commitment=0.5, detail=0.4,
               chroma=1.0, instance=2.0),
        *_rows("sds", spots, 1, 300, psnr=22.0, averaging=3.0, commitment=1.0, detail=0.6,
               chroma=1.2, instance=2.0),
        *_rows("vsd", spots, 0, 300, psnr=18.0, averaging=-1.0, commitment=1.0, instance=4.0),
        *_rows("vsd", spots, 1, 300, psnr=19.0, averaging=-2.0, commitment=1.0, instance=7.0),
        *_rows("sds", "a red sphere", 0, 300, psnr=30.0, detail=0.9, chroma=1.0),  # one object
    ]  # fmt: skip
    table = distribution_table(_frame(rows))
    assert list(table["prompt"].unique()) == [spots]
    sds = table[table["method"] == "sds"].iloc[0]
    assert (sds.seeds, sds.psnr, sds.averaging, sds.commitment) == (2, 21.0, 2.0, 0.75)
    assert math.isclose(sds.detail, 0.5) and math.isclose(sds.chroma, 1.1)
    assert sds.distinct == 1  # both seeds on instance 2
    vsd = table[table["method"] == "vsd"].iloc[0]
    assert (vsd.averaging, vsd.distinct) == (-1.5, 2) and math.isnan(vsd.detail)
    html = distributions_html(_frame(rows))
    assert "a &lt;red&gt; ball" in html and "<red>" not in html
    assert "1 of 2" in html and "2 of 2" in html and "a red sphere" not in html


def test_no_section_without_a_distribution_prompt():
    rows = _rows("sds", "a red sphere", 0, 300, psnr=30.0, detail=0.9)
    assert distribution_table(_frame(rows)).empty
    assert distributions_html(_frame(rows)) == ""
