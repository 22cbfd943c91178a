"""Training data for the world CLIP from real training runs: renders of run checkpoints at
training cameras, graded by the exact metrics.

For every trained prompt and every method one cell is trained by the caller's ``train``
callable (the harness passes its own trainer: ``python -m benchmark.clip_trajectories``;
evaluation/ does not import benchmark/); at the steps of ``at`` its backbone is rendered at
``views`` training cameras (``evaluation.clip_data.training_cameras``: the held-out band
|elevation - 20| < 6 is never used, so the ladder and snapshot checks stay held out). Each
render is graded against the true render of every prompt at its camera with
``evaluation.clip_bank.exact_grades`` (mask IoU and PSNR), so the CLIP learns what the early,
blurry, saturated shapes of real runs are worth by the exact metrics.

Data (torch.save by the caller): images uint8 [N, V, 3, S, S], masks bool [N, V, 1, S, S],
grades float [N, V, O] (O = prompts), prompt_index [N], step [N], method [N] (names), prompts,
config. The voxel start (step 0) is the same render for every method: it is kept once per
prompt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any


def collect(
    train: Callable[[str, str], Any],
    methods: list[str],
    trained: list[str],
    steps: int,
    at: list[int],
    views: int,
    seed: int,
    size: int,
    device,
) -> dict:
    """Train the cells and collect the graded renders (module docstring). ``train(method,
    prompt)`` returns a fresh cell trainer: ``.step(k)`` trains step k, ``.backbone.render(
    cameras, height, width)`` renders; ``trained``: the prompts to train (grades are always
    against every prompt of the world); ``size``: the render side."""
    import torch

    from evaluation.clip_bank import exact_grades
    from evaluation.clip_data import training_cameras
    from world.objects import OBJECTS, known_prompts
    from world.renderer import render_object

    prompts = known_prompts()
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
            trainer = train(method, prompt)
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
