"""Training data for the world CLIP from real training runs: renders of run checkpoints at
training cameras, graded by the exact metrics (issue 17, item 3).

    python -m benchmark.clip_trajectories --out TRAJ.pt [--methods sds,vsd,ssd]
        [--steps 300] [--at 0,10,25,50,100,200,300] [--views 16] [--seed 100]

For every prompt of the world and every method, one cell is trained with the default world
configuration (``benchmark.trainer.CellTrainer``, the runs' own code path, seed ``--seed``:
other random streams than any committed run); at the steps of ``--at`` its backbone is
rendered at ``--views`` training cameras (``evaluation.clip_data.training_cameras``: the
held-out band |elevation - 20| < 6 is never used, so the ladder and snapshot checks stay held
out). Each render is graded against the true render of every prompt at its camera with
``evaluation.clip_bank.exact_grades`` (mask IoU and PSNR), so the CLIP learns what the early,
blurry, saturated shapes of real runs are worth by the exact metrics.

File (torch.save): images uint8 [N, V, 3, S, S], masks bool [N, V, 1, S, S], grades float
[N, V, O] (O = prompts), prompt_index [N], step [N], method [N] (names), prompts, config.
The voxel start (step 0) is the same render for every method: it is kept once per prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def trajectories(
    methods: list[str],
    steps: int,
    at: list[int],
    views: int,
    seed: int,
    threads: int = 2,
    trained: list[str] | None = None,
    overrides: tuple[str, ...] = (),
) -> dict:
    """Train the cells and collect the graded renders (module docstring); ``trained``: the
    prompts to train (default all; grades are always against every prompt), ``overrides``:
    extra ``--set`` strings (tests use a smaller world)."""
    import torch

    from benchmark.config import load_config
    from benchmark.factories import build_prior, resolve_device
    from benchmark.trainer import CellTrainer, configure_torch
    from evaluation.clip_bank import exact_grades
    from evaluation.clip_data import training_cameras
    from world.objects import OBJECTS, known_prompts
    from world.renderer import render_object

    prompts = known_prompts()
    sets = [f"threads={threads}", *overrides]
    config = load_config(None, sets, methods=methods, steps=steps, seeds=[seed])
    device = resolve_device("cpu")
    configure_torch(config.threads)
    trained = prompts if trained is None else trained
    prior = build_prior(config, trained, device)
    size = config.render.height
    cams = training_cameras(views, torch.Generator().manual_seed(seed))
    truth = [render_object(OBJECTS[p], cams, size, size) for p in prompts]
    bank = {
        "true": torch.stack([t["rgb"] for t in truth]),
        "mask": torch.stack([t["mask"] for t in truth]),
    }
    out: dict[str, list] = {
        k: [] for k in ("images", "masks", "grades", "prompt", "step", "method")
    }

    def capture(trainer, k: int, prompt_index: int, method: str) -> None:
        with torch.no_grad():
            r = trainer.backbone.render(cams.to(device), size, size)
        rgb, mask = r["rgb"].clamp(0, 1).cpu(), (r["opacity"] > 0.5).float().cpu()
        grades = exact_grades(rgb, mask, torch.arange(views), bank)
        out["images"].append((rgb * 255).round().to(torch.uint8))
        out["masks"].append(mask.bool())
        out["grades"].append(grades)
        out["prompt"].append(prompt_index)
        out["step"].append(k)
        out["method"].append(method)

    started = time.perf_counter()
    for prompt in trained:
        i = prompts.index(prompt)
        for j, method in enumerate(methods):
            trainer = CellTrainer(config, method, prompt, seed, prior, device)
            for k in range(steps + 1):
                if k in at and (k > 0 or j == 0):
                    capture(trainer, k, i, method)
                if k < steps:
                    trainer.step(k)
            print(
                json.dumps(
                    {"prompt": prompt, "method": method, "grade_end": round(
                        float(out["grades"][-1][:, i].mean()), 3),
                     "seconds": round(time.perf_counter() - started, 1)}
                ),
                flush=True,
            )  # fmt: skip
    return {
        "images": torch.stack(out["images"]),
        "masks": torch.stack(out["masks"]),
        "grades": torch.stack(out["grades"]),
        "prompt_index": torch.tensor(out["prompt"]),
        "step": torch.tensor(out["step"]),
        "method": out["method"],
        "prompts": prompts,
        "config": {
            "methods": methods,
            "steps": steps,
            "at": at,
            "views": views,
            "seed": seed,
            "size": size,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="sds,vsd,ssd")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--at", default="0,10,25,50,100,200,300")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from benchmark.factories import validate_methods
    from core.errors import UserError, printable_line

    try:
        at = sorted({int(s) for s in args.at.split(",")})
        methods = validate_methods(args.methods.split(","))
        if args.steps < 1 or args.views < 1 or not all(0 <= k <= args.steps for k in at):
            raise UserError("need --steps >= 1, --views >= 1 and every --at step in [0, steps]")
        if not args.out.parent.is_dir():
            raise UserError(f"no folder {args.out.parent} for --out")
    except (UserError, ValueError) as exc:
        print(f"error: {printable_line(str(exc))}", file=sys.stderr)
        return 2
    data = trajectories(methods, args.steps, at, args.views, args.seed, args.threads)
    torch.save(data, args.out)
    print(json.dumps(data["config"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
