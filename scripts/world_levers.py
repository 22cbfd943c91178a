"""CARV's levers in the world: the compute multiplier each gives SDS and SSD (docs/manual.md).

    python scripts/world_levers.py --out /tmp/levers [--steps 30] [--seeds 0,1]

Runs ``--methods sds,ssd`` on three prompts (a red sphere, a snowman, a green torus) once
plainly (the base) and once per lever (``noise_samples=4``; ``t_importance``;
``noise_samples=4`` with ``t_stratified``), every run with the same steps, seeds and a probe
of K = 8 draws (variant ``all``) every ``--steps`` steps, no bias check. Each lever cell is
paired with the base SDS cell of the same prompt and seed (``analysis.compute.lever_table``):
the multiplier is (NSR_SDS c_SDS) / (NSR_m c_m) with c the measured NFE per step, so > 1
means the lever reaches plain SDS's relative precision with less compute. Prints a markdown
table (mean [95% t CI] over prompts x seeds) and writes ``levers.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROMPTS = ("a red sphere", "a snowman", "a green torus")
LEVERS = {
    "k4": ("noise_samples=4",),
    "importance": ("t_importance=true",),
    "k4+strata": ("noise_samples=4", "t_stratified=true"),
}
METHODS = ("sds", "ssd")


def run(out: Path, name: str, sets: list[str], steps: int, seeds: str) -> Path:
    """One ``python -m benchmark run`` into out/name; returns its run dir."""
    root = out / name
    common = [
        f"measure.every={steps}",
        "measure.samples=8",
        "measure.variants=[all]",
        "measure.reference_samples=0",
    ]
    command = [sys.executable, "-m", "benchmark", "run", "--methods", ",".join(METHODS)]
    command += ["--prompts", str(out / "prompts.txt"), "--steps", str(steps), "--seeds", seeds]
    command += ["--out", str(root), "--quiet", "--no-report"]
    for item in [*common, *sets]:
        command += ["--set", item]
    subprocess.run(command, check=True)
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")

    from analysis.compute import lever_table
    from analysis.load import load_results
    from analysis.verdict import load_manifests

    dirs = {"base": run(args.out, "base", [], args.steps, args.seeds)}
    for name, options in LEVERS.items():
        sets = [f"{m}.{o}" for m in METHODS for o in options]
        dirs[name] = run(args.out, name, sets, args.steps, args.seeds)
    frames = {name: load_results([d]) for name, d in dirs.items()}
    base = frames.pop("base")
    _, table = lever_table(base, frames, load_manifests(dirs.values()))
    print("| cell | NFE/step | x compute (NSR x NFE) |")
    print("|---|---|---|")
    for _, row in table.iterrows():
        m, lo, hi = (row[f"compute_multiplier{s}"] for s in ("", "_lo", "_hi"))
        print(f"| {row['label']} | {row['nfe/step']:.1f} | {m:.2f} [{lo:.2f}, {hi:.2f}] |")
    records = table.to_dict(orient="records")
    (args.out / "levers.json").write_text(json.dumps(records, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
