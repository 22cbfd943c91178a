"""The run summary's probe-share line (benchmark.run.reporter)."""

from __future__ import annotations

import doctest

import pandas as pd

import benchmark.run.reporter
from benchmark.run.reporter import probe_share


def test_doctests():
    failures, tried = doctest.testmod(benchmark.run.reporter)
    assert tried > 0 and failures == 0


def _frame(rows):
    frame = pd.DataFrame(rows, columns=["method", "seed", "step", "metric", "value"])
    frame["run_id"], frame["prompt"] = "r", "p"
    return frame


def test_probe_share_sums_every_probe_and_the_last_train_seconds_of_each_cell():
    rows = [
        ("sds", 0, 1, "train_seconds", 1.0),
        ("sds", 0, 2, "train_seconds", 3.0),  # cumulative: the last one counts
        ("sds", 1, 2, "train_seconds", 5.0),  # another seed: another cell
        ("sds", 0, 0, "var/seconds", 2.0),
        ("sds", 1, 2, "var/seconds", 4.0),
        ("sds", 1, 2, "var/all/seconds", 3.0),  # a part of var/seconds: not added again
        ("sds", 0, 2, "time/eval", 1.0),
    ]
    share = probe_share(_frame(rows))
    assert share == {"train": 8.0, "eval": 1.0, "probes": 6.0, "share": 6.0 / 15.0}


def test_no_probe_no_share():
    assert probe_share(_frame([("sds", 0, 1, "train_seconds", 1.0)])) is None
