"""How much the quality ceiling of a distribution prompt loses by fitting only its first N
instances (``eval.ceiling_instances``, evaluation/ceiling.py): the photometric fit of every
instance at the run defaults (or ``--set`` overrides), one row per instance, and the best of
the first N for N = 1, 2, 4, ... against the best of all (docs/world.md).

    python scripts/ceiling_instances.py "a red ball with white spots" --out ceiling_instances.csv

Each fit is one SDS cell's training on the fit's own streams (``CEILING_SEED``), so K
instances cost K cells. The fits are not cached (the cache holds only the best of N).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_of_first(psnrs: list[float], caps: list[int]) -> dict[int, float]:
    """max(psnrs[:n]) for each n in ``caps`` (n >= len: every instance).

    >>> best_of_first([20.0, 22.5, 21.0, 23.0], [1, 2, 4])
    {1: 20.0, 2: 22.5, 4: 23.0}
    """
    return {n: max(psnrs[:n]) for n in caps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prompt", help="a distribution prompt (python -m benchmark prompts)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="CSV of the per-instance fits")
    args = p.parse_args(argv)

    import torch

    from benchmark.run.config import load_config
    from benchmark.run.factories import build_backbone, build_optimizer
    from benchmark.streams import RandomStreams
    from core.errors import UserError
    from evaluation.ceiling import _fit_one
    from evaluation.heldout import HeldOutEvaluator
    from world.distributions import instances

    try:
        config = load_config(None, args.overrides)
        objects = instances(args.prompt)
    except (UserError, ValueError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    device = torch.device("cpu")
    evaluator = HeldOutEvaluator(args.prompt, config, device)
    rows = []
    for k, obj in enumerate(objects):
        started = time.perf_counter()
        out = _fit_one(obj, args.prompt, config, device, build_backbone, build_optimizer,
                       RandomStreams, evaluator)  # fmt: skip
        seconds = time.perf_counter() - started
        rows.append({"instance": k, "psnr": out["psnr"], "mask_iou": out["mask_iou"],
                     "best_instance": out["instance"], "seconds": seconds})  # fmt: skip
        print(f"instance {k:2d}: psnr {out['psnr']:.2f} dB, iou {out['mask_iou']:.3f}, "
              f"scored against instance {int(out['instance'])}", flush=True)  # fmt: skip
    psnrs = [r["psnr"] for r in rows]
    caps = sorted({n for n in (1, 2, 4, 8, len(psnrs)) if n <= len(psnrs)})
    best = max(psnrs)
    for n, value in best_of_first(psnrs, caps).items():
        print(f"best of the first {n:2d}: {value:.2f} dB ({value - best:+.2f} dB vs all)")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
