"""Held-out snapshots of training runs with their exact metrics: the CLIP's ranking test set.

    python -m evaluation.clip_snapshots --out evaluation/assets/world_clip/snapshots.npz RUN_DIR...

Reads run dirs (``benchmark run`` output: snapshots/<cell>_step<k>.png, the held-out ring
side by side, and metrics.parquet) and keeps, per snapshot of a world prompt, the ring's
views and the held-out ``psnr`` and ``mask_iou`` logged at that step. The voxel backbone's
step-0 render is the same in every run of a prompt, so step 0 is kept once per prompt and
backbone. Stored (np.savez_compressed):

    images        uint8 [N, V, 3, S, S]
    prompt_index  int [N] into ``prompts`` (the world's prompts)
    step, psnr, mask_iou   [N]
    source        str [N] "run_id/method/seed/backbone"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from results.schema import SNAPSHOT_DIR, snapshot_name
from world.objects import known_prompts

SNAPSHOTS = Path(__file__).resolve().parent / "assets" / "world_clip" / "snapshots.npz"


def _ring(path: Path, size: int) -> np.ndarray:
    """[H, V*W, 3] PNG -> uint8 [V, 3, S, S]."""
    from PIL import Image

    with Image.open(path) as image:
        row = np.asarray(image.convert("RGB"))
    v = row.shape[1] // size
    return row.reshape(size, v, size, 3).transpose(1, 3, 0, 2).copy()


def run_prompts(run: Path, df) -> list[str]:
    """The run's prompts as its manifest lists them (the writer named its files among
    these); the prompts of its rows when the manifest is missing or unreadable."""
    try:
        prompts = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["prompts"]
        if isinstance(prompts, list) and all(isinstance(p, str) for p in prompts):
            return prompts
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return [str(p) for p in df["prompt"].unique()]


def collect(run_dirs: list[Path], size: int = 32) -> dict[str, np.ndarray]:
    """The snapshot arrays (module docstring) of ``run_dirs``."""
    import pandas as pd
    import yaml

    prompts = known_prompts()
    rows, seen_start = [], set()
    for run in run_dirs:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        backbone = config.get("backbone", "voxel")
        df = pd.read_parquet(run / "metrics.parquet")
        df = df[df["metric"].isin(["psnr", "mask_iou"])]
        wide = df.pivot_table(
            index=["method", "prompt", "seed", "step"], columns="metric", values="value"
        )
        among = run_prompts(run, df)  # the run's prompts make its file names unique
        for (method, prompt, seed, step), metrics in wide.iterrows():
            name = snapshot_name(method, prompt, int(seed), int(step), among)
            path = run / SNAPSHOT_DIR / name
            if prompt not in prompts or not path.is_file() or metrics.isna().any():
                continue
            if int(step) == 0 and backbone == "voxel":
                if (prompt, backbone) in seen_start:
                    continue
                seen_start.add((prompt, backbone))
            rows.append(
                (
                    _ring(path, size),
                    prompts.index(prompt),
                    int(step),
                    float(metrics["psnr"]),
                    float(metrics["mask_iou"]),
                    f"{run.name}/{method}/{int(seed)}/{backbone}",
                )
            )
    images, index, step, psnr, iou, source = zip(*rows, strict=True)
    return {
        "images": np.stack(images),
        "prompt_index": np.array(index),
        "step": np.array(step),
        "psnr": np.array(psnr),
        "mask_iou": np.array(iou),
        "source": np.array(source),
        "prompts": np.array(prompts),
    }


def load_snapshots(path: Path = SNAPSHOTS) -> dict:
    """The stored snapshots as tensors (images float [N, V, 3, S, S] in [0, 1])."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    return {
        "images": torch.from_numpy(out["images"]).float() / 255.0,
        "prompt_index": torch.from_numpy(out["prompt_index"]),
        "step": torch.from_numpy(out["step"]),
        "psnr": torch.from_numpy(out["psnr"]),
        "mask_iou": torch.from_numpy(out["mask_iou"]),
        "source": [str(s) for s in out["source"]],
        "prompts": [str(p) for p in out["prompts"]],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs")
    parser.add_argument("--out", type=Path, default=SNAPSHOTS)
    args = parser.parse_args(argv)
    data = collect(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    counts = np.bincount(data["prompt_index"], minlength=len(data["prompts"])).tolist()
    print(json.dumps({"snapshots": len(data["step"]), "per_prompt": counts}))


if __name__ == "__main__":
    main()
