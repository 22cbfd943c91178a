"""Measure the world's phenomena (docs/world.md, "What the world shows"): one JSON line each.

    python scripts/world_phenomena.py averaging  [--seeds 0,1]            # (b) SDS on spots
    python scripts/world_phenomena.py share      [--prompt P]             # (a) eps share vs CFG
    python scripts/world_phenomena.py saturation [--prompt P]             # (c) chroma vs CFG
    python scripts/world_phenomena.py particles  [--prompt P] [--n 4]     # (d) VSD particles
    python scripts/world_phenomena.py grid --out grid.png                 # truth, SDS, VSD, ...

Every experiment runs the world default (configs/world_default.yaml: 32x32, voxel 32^3, 300
steps) unless ``--set key=value`` overrides say otherwise; one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from benchmark.run.phenomena import eps_share, setup, train, train_particles
from world.instance_metrics import seed_diversity

DEFAULT = "configs/world_default.yaml"
BALL = "a red ball with white spots"
CFGS = {
    "none": ["sds.guidance_scale=1"],
    "diffusers7.5": ["sds.guidance_scale=7.5"],
    "dreamfusion100": ["sds.cfg_mode=dreamfusion", "sds.guidance_scale=100"],
}
KEYS = ("psnr", "instance", "averaging", "commitment", "detail", "chroma", "extreme", "mask_iou")


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in KEYS if k in metrics}


def averaging(args) -> None:
    """SDS on the detail prompt against all instances, and on its first instance alone."""
    config, prior, ev = setup(args.set, args.prompt, DEFAULT)
    for seed in args.seeds:
        emit(
            exp="averaging",
            refs="all",
            seed=seed,
            **pick(train(config, "sds", args.prompt, seed, prior, ev).final),
        )
    full = prior.references[args.prompt]
    prior.references[args.prompt] = full.of_instance(0)
    for seed in args.seeds:
        emit(
            exp="averaging",
            refs="instance 0",
            seed=seed,
            **pick(train(config, "sds", args.prompt, seed, prior, ev).final),
        )
    prior.references[args.prompt] = full


def share(args) -> None:
    """The eps-only share of SDS's image-space variance at the true renders, per CFG."""
    config, prior, _ = setup(args.set, args.prompt, DEFAULT)
    for name, over in CFGS.items():
        c, _, _ = setup([*args.set, *over], args.prompt, DEFAULT, prior=prior)
        for seed in args.seeds:
            s = eps_share(c, "sds", args.prompt, prior, n_groups=args.groups, seed=seed)
            emit(exp="share", prompt=args.prompt, cfg=name, seed=seed, share=round(s["share"], 4))


def saturation(args) -> None:
    """SDS chroma / extreme pixels per CFG, with the generic and the objects unconditional."""
    for unc in ("generic", "objects"):
        base = [*args.set, f"world.unconditional={unc}"]
        config, prior, ev = setup(base, args.prompt, DEFAULT)
        for name, over in CFGS.items():
            c, _, _ = setup([*base, *over], args.prompt, DEFAULT, prior=prior)
            for seed in args.seeds:
                f = train(c, "sds", args.prompt, seed, prior, ev).final
                emit(exp="saturation", unconditional=unc, cfg=name, seed=seed, **pick(f))


def particles(args) -> None:
    """SDS seeds, VSD seeds (one particle each) and n VSD particles sharing eps_phi."""
    config, prior, ev = setup(args.set, args.prompt, DEFAULT)
    seeds = list(range(args.n))
    runs = {
        "sds": [train(config, "sds", args.prompt, s, prior, ev) for s in seeds],
        "vsd": [train(config, "vsd", args.prompt, s, prior, ev) for s in seeds],
        "vsd_particles": train_particles(config, "vsd", args.prompt, args.n, 0, prior, ev),
    }
    for label, rs in runs.items():
        d = seed_diversity(
            [int(r.final["instance"]) for r in rs], torch.stack([r.renders for r in rs])
        )
        means = {
            k: round(sum(r.final[k] for r in rs) / len(rs), 4) for k in KEYS if k in rs[0].final
        }
        emit(exp="particles", method=label, n=args.n, **d, **means)


def grid(args) -> None:
    """A PNG: rows = truth instances (first 4), SDS, VSD (4 particles), CSD, ISM; 4 views."""
    import numpy as np
    from PIL import Image

    config, prior, ev = setup(args.set, args.prompt, DEFAULT)
    rows = [ev.truth_rgb[k, :4] for k in range(min(4, ev.truth_rgb.shape[0]))]
    labels = [f"truth #{k}" for k in range(len(rows))]
    for method in ("sds", "csd", "ism"):
        rows.append(train(config, method, args.prompt, 0, prior, ev).renders[:4])
        labels.append(method)
    for k, r in enumerate(train_particles(config, "vsd", args.prompt, 4, 0, prior, ev)):
        rows.append(r.renders[:4])
        labels.append(f"vsd particle {k}")
    image = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)
    array = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    big = Image.fromarray(array).resize((array.shape[1] * 3, array.shape[0] * 3), 0)
    label_rows(big, labels).save(args.out)
    emit(exp="grid", out=args.out, rows=labels)


def label_rows(image, labels: list[str], margin: int = 120):
    """``image`` (PIL, len(labels) equal rows) with a white left margin naming each row."""
    from PIL import Image, ImageDraw

    out = Image.new("RGB", (image.width + margin, image.height), "white")
    out.paste(image, (margin, 0))
    draw = ImageDraw.Draw(out)
    row = image.height / len(labels)
    for k, text in enumerate(labels):
        draw.text((6, int(k * row + row / 2 - 5)), text, fill="black")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiment", choices=["averaging", "share", "saturation", "particles", "grid"]
    )
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--out", default="phenomena_grid.png")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(
            f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr
        )
        return 2
    defaults = {"saturation": "a red sphere", "particles": "a ball of some colour"}
    args.prompt = args.prompt or defaults.get(args.experiment, BALL)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    globals()[args.experiment](args)
    print(f"# {args.experiment}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
