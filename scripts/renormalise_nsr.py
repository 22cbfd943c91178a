"""Add the unbiased NSR to results written before 2026-12-01's fix (analysis only).

    python scripts/renormalise_nsr.py RUN_DIR [RUN_DIR ...] --out summary.csv

Runs logged before the fix have ``var/<v>/var_trace`` and the plug-in ``mean_sq_norm`` but
no ``snr``. With K = the run's ``measure.samples`` (no bias check: every probe used K
draws), signal_sq = mean_sq_norm - var_trace / K is exactly what the probe now logs, so
``snr``/``nsr`` are recomputed per row (benchmark.probe.moments.signal_statistics) and
the verdict (analysis.verdict) is written for the amended rows. A run whose bias check was
on is refused (its last probe would use K + R draws today).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml


def amend(df: pd.DataFrame, k: int) -> pd.DataFrame:
    from benchmark.probe.moments import signal_statistics

    key = ["run_id", "method", "prompt", "seed", "step"]
    out = [df[~df["metric"].str.endswith(("/nsr", "/snr", "/signal_sq"))]]
    for prefix in sorted({m.rsplit("/", 1)[0] for m in df["metric"] if m.endswith("/var_trace")}):
        part = df[df["metric"].isin([f"{prefix}/var_trace", f"{prefix}/mean_sq_norm"])]
        wide = part.pivot_table(index=key, columns="metric", values="value", aggfunc="last")
        rows = []
        for index, row in wide.dropna().iterrows():
            stats = signal_statistics(row[f"{prefix}/mean_sq_norm"], row[f"{prefix}/var_trace"], k)
            rows += [(*index, f"{prefix}/{name}", value) for name, value in stats.items()]
        out.append(pd.DataFrame(rows, columns=[*key, "metric", "value"]))
    return pd.concat(out, ignore_index=True)


def main() -> None:
    from analysis.load import load_results
    from analysis.verdict import load_manifests, method_table, summary_frame

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    frames = []
    for run in args.runs:
        measure = yaml.safe_load((run / "config.yaml").read_text())["measure"]
        if measure.get("reference_samples", 0) > 0:
            raise SystemExit(f"error: {run} ran the bias check; its NSR needs K + R draws")
        frames.append(amend(load_results([run]), int(measure["samples"])))
    df = pd.concat(frames, ignore_index=True)
    estimates, cells = method_table(df, load_manifests(args.runs))
    summary_frame(estimates, cells).to_csv(args.out, index=False, float_format="%.6g")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
