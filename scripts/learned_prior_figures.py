"""The learned prior's training curve and error table figure (docs/learned_prior.md).

    .venv/bin/python scripts/learned_prior_figures.py --out docs/img/learned_prior_curve.png

Left: the per-batch relative error sum ||eps_net - eps*||^2 / sum ||eps*||^2 of training
(priors/assets/learned/curve.csv, moving average over 20 steps) against the step, the early
export marked. Right: the shipped checkpoints' error tables (provenance.json, row ``all``)
by timestep band. Prints the tables as markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "priors" / "assets" / "learned"


def markdown_table(provenance: dict) -> str:
    table = provenance["error_table"]
    bands = [*table["bands"], "all"]
    lines = ["| prompt | " + " | ".join(f"t {b}" if b != "all" else "all t" for b in bands) + " |"]
    lines.append("| --- " * (len(bands) + 1) + "|")
    for row, values in table["rows"].items():
        cells = " | ".join(f"{values[b]:.3f}" for b in bands)
        lines.append(f"| {'**all prompts**' if row == 'all' else row} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/img/learned_prior_curve.png")
    parser.add_argument("--assets", default=str(ASSETS))
    args = parser.parse_args(argv)
    assets = Path(args.assets)
    curve_path = assets / "curve.csv"
    if not curve_path.is_file():
        print(f"error: no training curve at {curve_path}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with curve_path.open() as f:
        rows = list(csv.DictReader(f))
    step = np.array([int(r["step"]) for r in rows])
    rel = np.array([float(r["relative_error"]) for r in rows])
    seconds = np.array([float(r["seconds"]) for r in rows])
    kernel = np.ones(20) / 20
    smooth = np.convolve(rel, kernel, mode="valid")
    provenances = {
        name: json.loads((assets / name / "provenance.json").read_text())
        for name in ("early", "final")
        if (assets / name / "provenance.json").is_file()
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(step, rel, color="0.8", lw=0.8, label="batch")
    left.plot(step[len(step) - len(smooth) :], smooth, color="C0", label="moving average (20)")
    for name, prov in provenances.items():
        left.axvline(prov["step"], color="C3" if name == "early" else "C2", ls="--", lw=1)
        left.text(prov["step"], rel.max() * 0.9, f" {name}", color="0.2", fontsize=8)
    left.set_yscale("log")
    final = provenances.get("final", {})
    batch, threads = final.get("config", {}).get("batch", "?"), final.get("threads", "?")
    left.set_xlabel(
        f"step (batch {batch}; {seconds[-1] / 60:.0f} min of training, {threads} thread(s))"
    )
    left.set_ylabel("relative squared eps error")
    left.set_title("training: batch error against the exact eps*")
    left.legend(fontsize=8)
    for i, (name, prov) in enumerate(provenances.items()):
        table = prov["error_table"]
        values = [table["rows"]["all"][b] for b in table["bands"]]
        x = np.arange(len(values)) + (i - 0.5) * 0.35
        right.bar(x, values, width=0.35, label=f"{name} (step {prov['step']})")
        print(f"## {name}: step {prov['step']}, {prov['training_seconds']:.0f} s\n")
        print(markdown_table(prov) + "\n")
    if provenances:
        bands = next(iter(provenances.values()))["error_table"]["bands"]
        right.set_xticks(range(len(bands)), [f"t {b}" for b in bands])
    right.set_ylabel("sum ||eps_net - eps*||^2 / sum ||eps*||^2")
    right.set_title("error table (all prompts)")
    right.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
