"""What SSD's ``baseline=posterior_mc`` costs against SDS: process CPU seconds per training
step (the trainer's ``time/cpu_step``, robust to other processes' load), the estimator section
alone, the prior's network evaluations per step, and the references the reduced posterior
keeps (docs/stein_ceiling.md).

    python scripts/stein_mc_cost.py --setting cfg7.5 --prompt "a snowman" --steps 40

SDS and SSD (``--set ssd.baseline=posterior_mc``) train side by side from the same seed, one
step each in turn (the same machine state for both); one thread. Prints one line per method
and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.stein_ceiling import SETTINGS, fail  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="cfg7.5", help=",".join(SETTINGS))
    p.add_argument("--prompt", default="a snowman")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = p.parse_args(argv)
    if args.setting not in SETTINGS:
        fail(f"unknown setting {args.setting!r}; known: {', '.join(SETTINGS)}")
    if args.steps < 2:
        fail("need --steps >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellTrainer

    torch.set_num_threads(1)
    setting = list(SETTINGS[args.setting])
    ssd_setting = [s.replace("sds.", "ssd.") for s in setting if s.startswith("sds.")]
    overrides = [*setting, *ssd_setting, "ssd.baseline=posterior_mc", *args.set]
    config = load_config(None, [*overrides, f"steps={args.steps}"])
    prior = build_prior(config, [args.prompt], torch.device("cpu"))
    trainers = {
        m: CellTrainer(config, m, args.prompt, 0, prior, torch.device("cpu"))
        for m in ("sds", "ssd")
    }
    sums = {m: {"cpu": 0.0, "est": 0.0, "evals": 0, "refs": 0.0, "refs_max": 0.0} for m in trainers}
    load = os.getloadavg()[0]
    for step in range(args.steps):
        for m, trainer in trainers.items():
            before = prior.n_evals
            out = trainer.step(step)
            d = out.diagnostics
            if step == 0:
                continue  # first step: one-time set-up (references, memo)
            s = sums[m]
            s["cpu"] += d["time/cpu_step"]
            s["est"] += d.get("time/estimator", 0.0)
            s["evals"] += prior.n_evals - before
            s["refs"] += d.get("mc_refs", 0.0)
            s["refs_max"] = max(s["refs_max"], d.get("mc_refs_max", 0.0))
    n = args.steps - 1
    for m, s in sums.items():
        print(
            f"{m}: cpu/step {s['cpu'] / n * 1e3:.1f} ms, estimator section {s['est'] / n * 1e3:.1f}"
            f" ms (wall), prior evaluations/step {s['evals'] / n:.2f}, mean refs kept"
            f" {s['refs'] / n:.1f} (max {s['refs_max']:.0f})"
        )
    a, b = sums["ssd"], sums["sds"]
    print(
        f"ratio ssd/sds: cpu/step {a['cpu'] / b['cpu']:.2f}, estimator {a['est'] / b['est']:.2f}, "
        f"evaluations {a['evals'] / max(b['evals'], 1):.2f}; setting {args.setting}, prompt "
        f"{args.prompt!r}, {n} steps each, 1 thread, load {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
