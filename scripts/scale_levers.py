"""Time SSD's control variate S = eps phi - sigma grad phi (phi = 1 - Pearson(depth_render,
D(x_t)), D = DPT(phi_decoder(x_t))) for each lever setting, at full size on CPU.

    python scripts/scale_levers.py --dir ~/.cache/steinbench/full-size/sd [--reps 2]

Loads only the VAE, TAESD and DPT of the full-size fixture (no UNet, no text encoder) into a
stand-in for the prior with the attributes the phi decoder reads, then runs the settings
round-robin (``--reps`` 0: one timed round; else one warm-up round, then ``--reps``
rounds), so a load change on a shared machine hits every setting alike. Times are medians of
process CPU seconds (all threads: robust to other processes' load), wall seconds too.
Prints a table and writes JSON (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch

SETTINGS = {  # name -> (phi_decoder, phi_resolution, depth_resolution, dtype)
    "full@512, dpt@384 (before)": ("full", 512, 384, torch.float32),
    "full@384, dpt@384": ("full", 384, 384, torch.float32),
    "tiny@512, dpt@512": ("tiny", 512, 512, torch.float32),
    "tiny@512, dpt@384": ("tiny", 512, 384, torch.float32),
    "tiny@384, dpt@384 (default)": ("tiny", 384, 384, torch.float32),
    "tiny@384, dpt@384, bf16": ("tiny", 384, 384, torch.bfloat16),
    "tiny@256, dpt@256": ("tiny", 256, 256, torch.float32),
}


def stand_in_prior(sd: Path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", torch_dtype=torch.float32)
    vae.requires_grad_(False).eval()
    return SimpleNamespace(
        path=sd,
        resolution=512,
        shape=(4, 64, 64),
        device=torch.device("cpu"),
        dtype=torch.float32,
        vae=vae,
        scaling_factor=float(vae.config.scaling_factor),
    )


def main() -> None:
    from estimators.baselines import pearson_correlation
    from estimators.stein import stein_control_variate
    from priors.decoders import PhiDecoder
    from priors.dpt import DPTGeometry

    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", type=Path, default=Path("scale_levers.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    prior = stand_in_prior(args.dir)
    names = [n for n in SETTINGS if not args.only or any(k in n for k in args.only.split(","))]
    geometries, models = {}, {}
    for name in names:
        kind, phi_res, depth_res, dtype = SETTINGS[name]
        decoder = PhiDecoder(prior, kind, "", phi_res, dtype)
        geometry = DPTGeometry(args.dir / "depth", prior, "cpu", decoder, depth_res, dtype)
        geometry.model = models.setdefault(dtype, geometry.model)  # one DPT per dtype
        geometries[name] = geometry
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, 4, 64, 64, generator=g)
    eps = torch.randn(1, 4, 64, 64, generator=g)
    target = torch.rand(1, 1, 64, 64, generator=g)
    ctx = SimpleNamespace(render={"depth": target})
    t = torch.tensor([500])
    times: dict[str, list[float]] = {n: [] for n in names}
    walls: dict[str, list[float]] = {n: [] for n in names}
    outputs = {}
    for rep in range(args.reps + 1 if args.reps else 1):
        for name in names:
            geometry = geometries[name]

            def phi(x, geometry=geometry):
                return 1.0 - pearson_correlation(target, geometry.depth(x, t, ctx))

            start, cpu = time.perf_counter(), time.process_time()
            s = stein_control_variate(phi, x_t, eps, 0.8)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            if rep or args.reps == 0:
                times[name].append(cpu)
                walls[name].append(seconds)
            outputs[name] = s
            print(f"round {rep} {name}: {cpu:.2f} CPU s, {seconds:.2f} s wall", flush=True)
    base = statistics.median(times[names[0]])
    base_name = names[0]
    rows = []
    for name in names:
        median = statistics.median(times[name])
        ref = outputs[names[0]].flatten()
        cos = float(torch.nn.functional.cosine_similarity(outputs[name].flatten(), ref, dim=0))
        wall = statistics.median(walls[name])
        row = {"setting": name, "cpu_seconds": median, "wall_seconds": wall}
        rows.append({**row, "ratio": median / base, "cos_S_vs_first": cos, "first": base_name})
        print(
            f"{name:<32} {median:7.2f} CPU s ({wall:6.2f} s wall)  x{median / base:5.2f}  "
            f"cos(S, S_first) {cos:+.3f}"
        )
    args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
