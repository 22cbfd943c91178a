"""The run's terminal tables fit 100 columns with every number on one line
(benchmark/run/reporter.py), whatever the number of methods and however wide the CIs."""

from __future__ import annotations

import io

import pandas as pd
from rich.console import Console

from benchmark.run.reporter import WIDTH, overview_tables, summary_table
from benchmark.run.trainer import CellResult
from estimators.registry import METHODS

#: the overview's columns (analysis.verdict.terminal_frame) with their widest cells
WIDEST = {
    "cells": "12/12 ok",
    "NSR": "123.4 [101.2, 145.6]",
    "upd log_var": "-12.34 [-13.45, -11.23]",
    "cv_gain": "1.32 [1.20, 1.44]",
    "cos_ref": "0.945 [0.931, 0.959]",
    "PSNR": "15.13 [14.20, 16.06]",
    "x compute (NFE)": "0.50 [0.31, 0.79]",
    "x compute (s)": "0.74 [0.52, 1.05]",
    "PSNR @SDS NFE": "14.71 [14.02, 15.40] (3/12 reach)",
    "NFE/step": "12.0 (model 12.0)",
    "s/step": "0.045",
}


def _render(tables) -> str:
    console = Console(width=WIDTH, record=True, file=io.StringIO())
    for table in tables:
        console.print(table)
    return console.export_text()


def test_overview_of_every_method_fits_100_columns_unwrapped():
    frame = pd.DataFrame({c: [v] * len(METHODS) for c, v in WIDEST.items()}, index=list(METHODS))
    text = _render(overview_tables(frame))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    for cell in [*WIDEST.values(), *WIDEST, *METHODS]:  # each cell and header on one line
        assert any(cell in line for line in lines), cell
    for method in METHODS:  # every method in every table, each quantity once
        assert sum(line.split()[0] == method for line in lines if line.split()) >= 2


def test_an_overview_that_fits_is_one_table():
    frame = pd.DataFrame({"cells": ["1/1 ok"], "NSR": ["2.6"]}, index=["sds"])
    assert len(overview_tables(frame)) == 1


def test_summary_fits_100_columns_with_a_long_prompt_and_a_failure():
    long_prompt = "a ceramic teapot with a long curved spout and a bamboo handle"
    results = [
        CellResult("bridge", long_prompt, 123, final={"psnr": 17.2, "quality/psnr": 0.61}),
        CellResult(
            "sds",
            "a red sphere",
            0,
            status="diverged",
            failed_step=1234,
            reason="non-finite estimator gradient " * 5,
        ),  # fmt: skip
    ]
    for r in results:
        r.initial.update(psnr=12.3, clip_score=25.1)
        r.final.update(clip_score=27.5)
    text = _render([summary_table(results)])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    assert any("a ceramic teapot" in line for line in lines)  # cut with an ellipsis
    for cell in ("12.30 -> 17.20", "0.61", "25.1 -> 27.5", "FAILED@1234", "bridge", "123"):
        assert any(cell in line for line in lines), cell
