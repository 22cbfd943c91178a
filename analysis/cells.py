"""The cell key, method labels, reference pairing and network-call counters that every
analysis module shares (a leaf module: it imports nothing of ``analysis``).

A cell is one (run_id, method, prompt, seed); its label is the method name, or
``method [run_id]`` when a method appears in several runs.
"""

from __future__ import annotations

import pandas as pd

METHOD_ORDER = ("sds", "vsd", "ssd")
REFERENCE = "sds"
CELL = ["run_id", "method", "prompt", "seed"]
#: the cumulative network-evaluation counters a cell logs, by kind (prior eps, the method's
#: own eps_phi / LoRA, the depth or normal estimator of SSD's baseline)
COST_COUNTERS = {"prior": "n_evals", "phi": "n_evals_phi", "depth": "n_evals_depth"}
CALLS = "n_calls"  # derived: the sum of COST_COUNTERS, what "network calls" means everywhere


def cumulative_calls(df: pd.DataFrame) -> pd.DataFrame:
    """CELL + step + value: the cumulative sum of every COST_COUNTERS counter per cell and
    logged step (a counter not logged yet at a step, e.g. before a method's first depth
    call, carries its last value forward, 0 before its first).

    >>> rows = [("r", "ssd", "p", 0, s, m, v) for s, m, v in
    ...         [(1, "n_evals", 1.0), (1, "n_evals_depth", 1.0), (2, "n_evals", 2.0)]]
    >>> df = pd.DataFrame(rows, columns=[*CELL, "step", "metric", "value"])
    >>> cumulative_calls(df)["value"].tolist()
    [2.0, 3.0]
    """
    rows = df[df["metric"].isin(COST_COUNTERS.values())]
    if rows.empty:
        return pd.DataFrame(columns=[*CELL, "step", "value"])
    wide = rows.pivot_table(
        index=[*CELL, "step"], columns="metric", values="value", aggfunc="last"
    ).sort_index()
    wide = wide.groupby(level=list(range(len(CELL)))).ffill().fillna(0.0)
    return wide.sum(axis=1).rename("value").reset_index()


def with_calls(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the derived ``n_calls`` rows (``cumulative_calls``) appended, once (with
    each cell's ``label`` when ``df`` has labels)."""
    if (df["metric"] == CALLS).any():
        return df
    calls = cumulative_calls(df).assign(metric=CALLS)
    if calls.empty:
        return df
    if "label" in df.columns:
        calls = calls.merge(df.groupby(CELL, as_index=False)["label"].first(), on=CELL)
    return pd.concat([df, calls[[c for c in df.columns if c in calls]]], ignore_index=True)


def method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with a ``label`` column: the method name, or ``method [run_id]`` when
    the same method appears in more than one run."""
    out = df.copy()
    runs_per_method = out.groupby("method")["run_id"].nunique()
    multi = set(runs_per_method[runs_per_method > 1].index)
    out["label"] = [
        f"{m} [{r}]" if m in multi else m for m, r in zip(out["method"], out["run_id"], strict=True)
    ]
    return out


def sort_labels(labels) -> list[str]:
    return sorted(set(labels), key=lambda label: (*method_key(label.split(" [")[0]), label))


def reference_labels(cells: pd.DataFrame, reference: str) -> tuple[dict[str, str], list[str]]:
    """label -> reference label to pair it with, and notes."""
    notes = []
    ref_by_run = {
        run: label
        for run, label in cells.loc[cells["method"] == reference, ["run_id", "label"]]
        .drop_duplicates()
        .itertuples(index=False)
    }
    ref_labels = sorted(set(ref_by_run.values()))
    out = {}
    for run, method, label in (
        cells[["run_id", "method", "label"]].drop_duplicates().itertuples(index=False)
    ):
        if method == reference:
            continue
        if run in ref_by_run:
            out[label] = ref_by_run[run]
        elif len(ref_labels) == 1:
            out[label] = ref_labels[0]
        else:
            notes.append(f"no unique {reference.upper()} to pair '{label}' with")
    return out, notes


def unfinished_cells(index: pd.Index, manifests: dict[str, dict] | None) -> list[bool]:
    """For each cell (run_id, method, prompt, seed) of ``index``: True when its run's
    manifest says the run did not finish and does not list the cell among its finished
    ones (a killed or interrupted run's cells still training). False without a manifest.

    >>> idx = pd.MultiIndex.from_tuples([("r", "sds", "p", 0), ("r", "sds", "p", 1)], names=CELL)
    >>> manifest = {"status": "running", "cells": [{"method": "sds", "prompt": "p", "seed": 0}]}
    >>> unfinished_cells(idx, {"r": manifest})
    [False, True]
    """
    out = [False] * len(index)
    for i, (run_id, method, prompt, seed) in enumerate(index):
        manifest = (manifests or {}).get(run_id) or {}
        cells = manifest.get("cells")
        if manifest.get("status") in (None, "finished") or not isinstance(cells, list):
            continue
        done = {
            (c.get("method"), c.get("prompt"), c.get("seed")) for c in cells if isinstance(c, dict)
        }
        out[i] = (method, prompt, int(seed)) not in done
    return out
