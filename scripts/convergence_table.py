"""Validation of the ground-truth-free convergence signals where the truth is known
(docs/convergence.md): regenerates the doc's tables and its figure from world runs.

    python scripts/convergence_table.py RUN_DIR [RUN_DIR ...] [--rule RULE] [--patience K]
        [--window W] [--doc docs/convergence.md] [--figure docs/img/convergence_signals.png]

Per method, over its cells (prompts x seeds; one seed per prompt here, so a cell is a
prompt): the mean Spearman correlation along each trajectory of every signal with the exact
quality (analysis/convergence.py; the step itself is the clock baseline), with 95% t CIs;
then the stop rule replayed on the logged signals: steps where it fires, the steps where
quality first reaches 80% / 95% of its final value, their differences and the quality at the
rule's step over the final quality; and the cost of the signals (time/convergence over the
training seconds). The tables replace the text between ``<!-- convergence-table -->`` and
``<!-- /convergence-table -->`` in the doc. Reads results only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = "<!-- convergence-table -->", "<!-- /convergence-table -->"
SIGNAL_COLUMNS = ("agreement", "render_change", "signal_ratio", "signal_sq", "update_cos",
                  "probe_signal_ratio", "step")  # fmt: skip


def _fmt(values, digits: int = 2) -> str:
    from analysis.stats import format_estimate, mean_ci

    return format_estimate(mean_ci(values), digits)


def correlation_table(cells) -> str:
    from analysis.cells import sort_labels

    present = [s for s in SIGNAL_COLUMNS if f"rho/{s}" in cells]
    head = "| method | cells | " + " | ".join(present) + " |"
    lines = [head, "|" + "---|" * (len(present) + 2)]
    for method in sort_labels(cells["method"]):
        mine = cells[cells["method"] == method]
        values = [_fmt(mine[f"rho/{s}"]) for s in present]
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def rule_table(cells) -> str:
    from analysis.cells import sort_labels

    lines = [
        "| method | fired | rule step | q80 step | q95 step | rule - q80 | rule - q95 | "
        "quality at rule / final |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in sort_labels(cells["method"]):
        m = cells[cells["method"] == method]
        fired = int(m["rule_step"].notna().sum())
        row = [
            f"{fired}/{len(m)}",
            _fmt(m["rule_step"], 0),
            _fmt(m["q80_step"], 0),
            _fmt(m["q95_step"], 0),
            _fmt(m["rule_minus_q80"], 0),
            _fmt(m["rule_minus_q95"], 0),
            _fmt(m["q_at_rule"]),
        ]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def cost_table(df) -> str:
    from analysis.cells import CELL, sort_labels

    rows = df[df["metric"].isin(["time/convergence", "train_seconds"])]
    conv = rows[rows["metric"] == "time/convergence"].groupby(CELL)["value"].sum()
    train = rows[rows["metric"] == "train_seconds"].groupby(CELL)["value"].max()
    share = (100 * conv / train).rename("share").reset_index()
    lines = ["| method | cells | signal cost, % of training seconds |", "|---|---|---|"]
    for method in sort_labels(share["method"]):
        mine = share[share["method"] == method]["share"]
        lines.append(f"| {method} | {len(mine)} | {_fmt(mine)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from analysis.convergence import validation_cells
    from analysis.load import load_results
    from results.stop_rule import parse_stop_rule

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--rule", default=None, help="default: the runs' config default")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--doc", default=str(ROOT / "docs" / "convergence.md"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "img" / "convergence_signals.png"))
    parser.add_argument("--figure-prompts", type=int, default=4)
    args = parser.parse_args(argv)
    if args.rule is None:
        from benchmark.run.config import DEFAULT_STOP_RULE

        args.rule = DEFAULT_STOP_RULE
    try:
        rule = parse_stop_rule(args.rule)
        df = load_results([Path(r) for r in args.runs])
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cells = validation_cells(df, rule, args.patience, args.window)
    if cells.empty:
        print(
            "error: no cell has a quality trajectory (world runs with evaluations)", file=sys.stderr
        )
        return 2
    n_steps = int(df["step"].max())
    text = "\n\n".join(
        [
            f"Runs: {', '.join(sorted(df['run_id'].unique()))}; {df['prompt'].nunique()} "
            f"prompts, {df['seed'].nunique()} seed(s), {n_steps} steps. Rule `{rule}`, "
            f"patience {args.patience}, window {args.window}.",
            "Spearman correlation of each signal with quality along the trajectory (mean "
            "over cells [95% t CI]; -1: the signal falls exactly as quality rises):",
            correlation_table(cells),
            "The stop rule against the truth (steps; mean [95% t CI] over the cells where "
            "both are defined):",
            rule_table(cells),
            "Cost of the signals (sum of the step section `time/convergence` over the "
            "training seconds, per cell):",
            cost_table(df),
        ]
    )
    doc = Path(args.doc)
    if doc.exists() and START in doc.read_text():
        body = doc.read_text()
        before, rest = body.split(START, 1)
        after = rest.split(END, 1)[1] if END in rest else ""
        doc.write_text(f"{before}{START}\n{text}\n{END}{after}")
    else:
        print(text)
    if args.figure:
        from analysis.convergence_plots import plot_convergence_signals
        from analysis.plot_style import figure_png

        fig = plot_convergence_signals(df, max_prompts=args.figure_prompts)
        Path(args.figure).write_bytes(figure_png(fig, colors=None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
