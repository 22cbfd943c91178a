"""Per-prompt held-out PSNR, start -> end, for every method of a run (docs/family.md,
docs/gaussians.md).

    python scripts/psnr_table.py RUN_DIR [--metric psnr] [--reference sds]

Prints two markdown tables: per method the prompts improved, the mean gain (end - start)
with its 95% t CI over the (prompt, seed) cells and the gain minus the reference method's,
paired by (prompt, seed) (same random streams); then the end value of every (prompt, method),
with the shared start in the first column (every method starts from the same init stream).
Seeds are averaged in the second table. Reads results only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def gains(df, metric: str):
    """[method, prompt, seed, start, end, gain] from the first and last logged step."""
    rows = df[df["metric"] == metric].sort_values("step")
    first = rows.groupby(["method", "prompt", "seed"])["value"].first()
    last = rows.groupby(["method", "prompt", "seed"])["value"].last()
    out = first.rename("start").to_frame().join(last.rename("end"))
    out["gain"] = out["end"] - out["start"]
    return out.reset_index()


def main(argv: list[str] | None = None) -> int:
    from analysis.cells import sort_labels
    from analysis.load import load_results
    from analysis.stats import format_estimate, mean_ci, paired_difference

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--metric", default="psnr")
    parser.add_argument("--reference", default="sds")
    args = parser.parse_args(argv)
    df = load_results(args.run)
    order = list(dict.fromkeys(df["prompt"]))  # the prompts file's order
    table = gains(df, args.metric)
    methods = sort_labels(table["method"].unique())
    ref = table[table["method"] == args.reference].set_index(["prompt", "seed"])["gain"]
    print(f"| method | cells improved | {args.metric} gain, mean [95% CI] | gain - "
          f"{args.reference} gain [95% CI] | mean end |")  # fmt: skip
    print("|---|---|---|---|---|")
    for method in methods:
        rows = table[table["method"] == method].set_index(["prompt", "seed"])
        paired = ref.reindex(rows.index)
        diff = paired_difference(rows["gain"].to_numpy(), paired.to_numpy())
        print(
            f"| {method} | {int((rows['gain'] > 0).sum())}/{len(rows)} | "
            f"{format_estimate(mean_ci(rows['gain']))} | {format_estimate(diff)} | "
            f"{rows['end'].mean():.2f} |"
        )
    wide = table.groupby(["prompt", "method"])["end"].mean().unstack("method")[methods]
    start = table.groupby("prompt")["start"].mean()
    print()
    print("| prompt | start | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for prompt in order:
        cells = " | ".join(f"{wide.loc[prompt, m]:.2f}" for m in methods)
        print(f"| {prompt} | {start[prompt]:.2f} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
