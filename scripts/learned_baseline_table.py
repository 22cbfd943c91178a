"""The learned-baseline table (docs/learned_baseline.md) from several runs of the same prompts.

    python scripts/learned_baseline_table.py --run depth=RUN_A --run "learned scalar"=RUN_B \
        --run "learned vector"=RUN_C --csv docs/learned_baseline.csv

RUN_A holds SDS and SSD with the depth baseline; the other runs hold one SSD variant each, on
the same prompts and seeds (the same random streams, so cells pair with RUN_A's SDS by
(prompt, seed): common random numbers). Every SSD cell is labelled ``ssd [NAME]`` and the
verdict machinery (``analysis.verdict.method_table``) gives, per method, the mean over cells
with its 95% t CI and the paired difference with SDS (``cv_gain_vs_sds``: the nats the
method's control variate removes beyond SDS's eps on the same draws). Added here (``EXTRA``,
not in summary.csv): ``cv_oracle_gain`` (the in-sample-optimal scale of the method's control
variate), the image-space ``img_cv_gain``, and the same on the probe variant
``fixed_camera_t`` (``fixed_*``: camera and t fixed, eps only: the part of the variance any
Stein control variate can act on), and ``log_var`` with the camera fixed and with camera and
t fixed (where the variance comes from). The variance split by the
law of total variance (summary.csv's ``eps_share``, ``t_share``, ``camera_share`` and
``eps_var``: E_{c,t}[Var_eps(G | c, t)], the part a Stein control variate can act on, with
prompt-clustered CIs) is read from summary.csv like every verdict column; the single-draw
``fixed_*`` columns appear only for runs that logged that variant. Prints a markdown table;
writes one CSV row per method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (summary column, markdown header, digits)
COLUMNS = (
    ("cv_gain", "cv_gain (nats)", 3),
    ("cv_oracle_gain", "oracle cv_gain", 3),
    ("img_cv_gain", "image cv_gain", 3),
    ("fixed_cv_gain", "cv_gain, eps only", 3),
    ("fixed_img_cv_gain", "image cv_gain, eps only", 3),
    ("log_var", "log var", 2),
    ("eps_share", "eps share (split)", 2),
    ("t_share", "t share (split)", 2),
    ("camera_share", "camera share (split)", 2),
    ("eps_var", "E[Var_eps] (split)", 4),
    ("log_var_fixed_camera", "log var, camera fixed", 2),
    ("log_var_eps_only", "log var, eps only", 2),
    ("nsr", "NSR", 1),
    ("update_log_var", "update log var", 3),
    ("cos_self", "cos_self", 3),
    ("psnr", "final PSNR", 2),
    ("quality_psnr", "quality (PSNR)", 3),
    ("psnr_equal_compute", "PSNR @ SDS NFE", 2),
    ("psnr_equal_seconds", "PSNR @ SDS s", 2),
    ("compute_multiplier", "x compute (NFE)", 2),
    ("compute_multiplier_seconds", "x compute (s)", 2),
    ("nfe_per_step", "NFE/step", 1),
    ("seconds_per_step", "s/step", 3),
)


def labelled_results(runs: dict[str, str]):
    """Long-format results of the runs with ``label``: ``sds`` or ``ssd [NAME]``."""
    import pandas as pd

    from analysis.load import load_results

    frames = []
    for name, path in runs.items():
        df = load_results([path])
        df["label"] = [m if m != "ssd" else f"ssd [{name}]" for m in df["method"]]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


#: summary column -> logged probe metric, beside summary.csv's (at the last probe step > 0)
EXTRA = {
    "cv_oracle_gain": "var/all/cv_oracle_gain",
    "img_cv_gain": "var/all/img_cv_gain",
    "fixed_cv_gain": "var/fixed_camera_t/cv_gain",
    "fixed_cv_oracle_gain": "var/fixed_camera_t/cv_oracle_gain",
    "fixed_img_cv_gain": "var/fixed_camera_t/img_cv_gain",
    "log_var_fixed_camera": "var/fixed_camera/log_var",
    "log_var_eps_only": "var/fixed_camera_t/log_var",
}


def extra_rows(df, cells) -> dict[str, dict[str, float]]:
    """Per label and EXTRA column q: q, q_lo, q_hi, q_n (mean and 95% t CI over cells) and
    q_vs_sds, q_vs_sds_lo, q_vs_sds_hi (paired difference with SDS by prompt and seed)."""
    from analysis.cells import CELL
    from analysis.stats import mean_ci, paired_difference

    out: dict[str, dict[str, float]] = {}
    for q, metric in EXTRA.items():
        rows = df[(df["metric"] == metric) & (df["step"] > 0)].sort_values("step")
        if rows.empty:
            continue
        last = rows.groupby(CELL)["value"].last().rename(q).reset_index()
        table = cells[[*CELL, "label"]].merge(last, on=CELL, how="left")
        ref = table[table["label"] == "sds"][["prompt", "seed", q]]
        for label, mine in table.groupby("label"):
            est = mean_ci(mine[q].to_numpy(float))
            merged = mine.merge(ref, on=["prompt", "seed"], suffixes=("", "_ref"))
            diff = paired_difference(merged[q].to_numpy(float), merged[q + "_ref"].to_numpy(float))
            out.setdefault(label, {}).update(
                {q: est.mean, f"{q}_lo": est.lo, f"{q}_hi": est.hi, f"{q}_n": est.n}
            )
            out[label].update(
                {f"{q}_vs_sds": diff.mean, f"{q}_vs_sds_lo": diff.lo, f"{q}_vs_sds_hi": diff.hi}
            )
    return out


def table(runs: dict[str, str]):
    """summary.csv-style frame (one row per label) with the cv_oracle_gain columns."""
    from analysis.verdict import load_manifests, method_table, summary_frame

    df = labelled_results(runs)
    estimates, cells = method_table(df, load_manifests(list(runs.values())))
    frame = summary_frame(estimates, cells)
    extra = extra_rows(df, cells)
    keys = sorted({k for values in extra.values() for k in values})
    for key in keys:
        frame[key] = [extra.get(label, {}).get(key) for label in frame["method"]]
    return frame


def _fmt(row, q: str, digits: int) -> str:
    mean, lo, hi = row.get(q), row.get(f"{q}_lo"), row.get(f"{q}_hi")
    if mean is None or mean != mean:
        return "n/a"
    text = f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    diff = row.get(f"{q}_vs_sds")
    if row["method"] != "sds" and diff is not None and diff == diff and q != "nfe_per_step":
        dlo, dhi = row.get(f"{q}_vs_sds_lo"), row.get(f"{q}_vs_sds_hi")
        if q == "nsr":  # the ratio NSR_m / NSR_SDS (analysis.verdict: no CI; its word)
            text += f"<br>vs SDS x {diff:.3f} ({row.get('nsr_verdict', 'n/a')})"
        else:
            text += f"<br>vs SDS {diff:+.{digits}f} [{dlo:+.{digits}f}, {dhi:+.{digits}f}]"
    return text


def markdown(frame) -> str:
    """The table in markdown: 'mean [CI]' and 'vs SDS diff [CI]' per column the runs logged."""
    columns = [c for c in COLUMNS if c[0] in frame.columns and frame[c[0]].notna().any()]
    head = "| method | cells | " + " | ".join(h for _, h, _ in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for row in frame.to_dict("records"):
        cells = f"{row['cells_ok']}/{row['cells']}"
        values = " | ".join(_fmt(row, q, d) for q, _, d in columns)
        lines.append(f"| {row['method']} | {cells} | {values} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR")
    parser.add_argument("--csv", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    frame = table(runs)
    if args.csv is not None:
        frame.to_csv(args.csv, index=False, float_format="%.6g")
    print(markdown(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
