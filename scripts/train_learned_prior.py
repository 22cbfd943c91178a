"""Train the learned prior: a class-conditional diffusers UNet2DModel regressed on the world's
exact score eps*_k(x_t) (priors/learned_classes.py), resumable and seeded.

    .venv/bin/python scripts/train_learned_prior.py --out work/learned --steps 1800 \
        --early 300 --export priors/assets/learned

Each step: B references x_0 (uniform over prompts, then over the prompt's references; every
instance the world exposes for a prompt is one of its references), label = (prompt, view bin
of x_0's camera), dropped to the null class with probability ``--label-dropout``, t ~ U{0..T-1},
eps ~ N(0, I), x_t = alpha_t x_0 + sigma_t eps, loss = mean (eps_net(x_t, t, k) - eps*_k(x_t))^2.
AdamW, linear warm-up then cosine decay to 10% of ``--lr``.

``--out`` keeps the training state (state/checkpoint.pt every ``--checkpoint-every`` steps,
at the end, on Ctrl-C / SIGTERM and at ``--stop-after``; state/curve.csv); ``--resume``
continues it bit for bit (same arguments required, except ``--steps``: a new length re-times
the cosine decay from the current step on, recorded in provenance.json).

Exports (``--export DIR``): DIR/early at step ``--early`` and DIR/final at the end, each a
folder with unet/ (fp16 safetensors, ``save_pretrained``), scheduler/, classes.json and
provenance.json (data, config, seed, training time, error table).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="training state folder")
    parser.add_argument("--export", default="", help="write DIR/early and DIR/final")
    parser.add_argument("--prompts", default="prompts/single_objects.txt")
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--early", type=int, default=300, help="step of the early export")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--error-samples", type=int, default=16, help="draws per table cell")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--stop-after", type=int, default=0, help="save and exit after N steps (0: run to end)"
    )
    args = parser.parse_args(argv)
    checks = [
        (args.steps >= 1, "--steps must be >= 1"),
        (args.batch >= 1, "--batch must be >= 1"),
        (args.lr > 0, "--lr must be > 0"),
        (0.0 <= args.label_dropout < 1.0, "--label-dropout must lie in [0, 1)"),
        (0 <= args.early <= args.steps, "--early must lie in [0, --steps]"),
        (args.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
        (args.error_samples >= 1, "--error-samples must be >= 1"),
        (args.threads >= 1, "--threads must be >= 1"),
        (args.warmup >= 0, "--warmup must be >= 0"),
        (args.stop_after >= 0, "--stop-after must be >= 0"),
        (Path(args.prompts).is_file(), f"prompts file not found: {args.prompts}"),
    ]
    for ok, message in checks:
        if not ok:
            parser.exit(2, f"error: {message}\n")
    return args


def learning_rate(step: int, args) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 0.1 lr at ``steps``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    span = max(1, args.steps - args.warmup)
    progress = min(1.0, (step - args.warmup) / span)
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


CONFIG_KEYS = ("prompts", "steps", "batch", "lr", "warmup", "label_dropout", "seed", "early")


def build_world(prompts: list[str]):
    """The world prior at the run defaults (references rendered here) and the exact targets."""
    from core.cameras import CameraConfig
    from core.schedule import ddpm_alphas_cumprod
    from priors.learned_classes import ClassTable
    from world.class_targets import ExactTargets
    from world.prior import WorldPrior

    render = {"height": 32, "width": 32}
    distance, fovy = CameraConfig().center()
    world = WorldPrior(prompts, render["height"], render["width"], distance, fovy)
    table = ClassTable(tuple(prompts))
    return world, ExactTargets(table, world.references, ddpm_alphas_cumprod())


def export(unet, targets, world, folder: Path, args, state: dict, progress_factory) -> dict:
    """Write the diffusers folder (fp16) and provenance.json; the error table is computed
    from the fp16 weights as loaded back (what a user of the folder gets)."""
    from diffusers import UNet2DModel

    from priors.learned import save_learned
    from priors.learned_error import BANDS, band_name, error_table

    save_learned(unet, targets.table, folder)
    loaded = UNet2DModel.from_pretrained(
        folder / "unet", local_files_only=True, torch_dtype=torch.float32
    ).eval()
    rows = len(targets.table.prompts) + 1
    with progress_factory(rows * len(BANDS), f"error table {folder.name}") as bar:
        table = error_table(loaded, targets, args.error_samples, args.seed, progress=bar.update)
    world_config = world.config
    provenance = {
        "what": "class-conditional UNet2DModel regressed on the world's exact eps*",
        "data": {
            "prompts": list(targets.table.prompts),
            "references": int(targets.images.shape[0]),
            "references_per_prompt": [
                int((targets.prompt_of == p).sum()) for p in range(len(targets.table.prompts))
            ],
            "resolution": [32, 32],
            "world": {
                "n_azimuth": world_config.n_azimuth,
                "elevations": list(world_config.elevations),
                "supersample": world_config.supersample,
                "tau": world_config.tau,
            },
            "target": "eps*_k of the (prompt, view bin) reference mixture; null: all prompts",
        },
        "config": {k: getattr(args, k) for k in CONFIG_KEYS},
        "architecture": json.loads((folder / "unet" / "config.json").read_text()),
        "parameters": int(sum(p.numel() for p in unet.parameters())),
        "seed": args.seed,
        "step": state["step"],
        "training_seconds": round(state["seconds"], 1),
        "schedule_changes": state.get("schedule_changes", []),
        "threads": args.threads,
        "load_average_at_export": list(os.getloadavg()),
        "error_table": {
            "definition": "sum ||eps_net - eps*||^2 / sum ||eps*||^2 over the cell's draws",
            "bands": [band_name(b) for b in BANDS],
            "samples_per_cell": args.error_samples,
            "seed": args.seed,
            "rows": table,
        },
    }
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return table


def progress_bar(total: int, desc: str, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, initial=initial, dynamic_ncols=True, file=sys.stderr)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, _interrupt)  # kill PID saves the state like Ctrl-C
    out = Path(args.out)
    state_path = out / "state" / "checkpoint.pt"
    if state_path.exists() and not args.resume:
        print(f"error: {state_path} exists; pass --resume or use another --out", file=sys.stderr)
        return 2
    if args.resume and not state_path.exists():
        print(f"error: --resume but no {state_path}", file=sys.stderr)
        return 2
    from benchmark.run.prompts import read_prompts

    prompts = read_prompts(args.prompts)
    world, targets = build_world(prompts)
    from priors.learned_classes import build_unet

    torch.manual_seed(args.seed)  # the UNet's init only; every draw below has a generator
    unet = build_unet(targets.table.n_classes)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    state = {"step": 0, "seconds": 0.0, "exported": []}
    if args.resume:
        saved = torch.load(state_path, weights_only=False)
        old = saved["config"]
        new = {k: getattr(args, k) for k in CONFIG_KEYS}
        if {k: v for k, v in old.items() if k != "steps"} != {
            k: v for k, v in new.items() if k != "steps"
        }:
            print(f"error: --resume with other arguments than {old}", file=sys.stderr)
            return 2
        unet.load_state_dict(saved["unet"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        state = saved["state"]
        if old["steps"] != args.steps:  # a new length: the cosine decay follows it from here
            if args.steps < state["step"]:
                print(f"error: --steps {args.steps} < the {state['step']} done", file=sys.stderr)
                return 2
            state.setdefault("schedule_changes", []).append(
                {"at_step": state["step"], "steps_from": old["steps"], "steps_to": args.steps}
            )
    (out / "state").mkdir(parents=True, exist_ok=True)
    curve_path = out / "state" / "curve.csv"
    if not args.resume:
        curve_path.write_text("step,loss,relative_error,lr,seconds\n")
    else:  # rows written after the saved state are redone
        lines = curve_path.read_text().splitlines()
        kept = [lines[0]] + [r for r in lines[1:] if int(r.split(",")[0]) <= state["step"]]
        curve_path.write_text("\n".join(kept) + "\n")

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "unet": unet.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "state": state,
                "config": {k: getattr(args, k) for k in CONFIG_KEYS},
            },
            tmp,
        )
        tmp.replace(state_path)

    def maybe_export(name: str) -> None:
        if args.export and name not in state["exported"]:
            unet.eval()
            export(unet, targets, world, Path(args.export) / name, args, state, progress_bar)
            unet.train()
            state["exported"].append(name)
            save_state()

    side = int(round((targets.images.shape[1] // 3) ** 0.5))
    unet.train()
    first_step = state["step"]
    try:
        with progress_bar(args.steps, "train", state["step"]) as bar, curve_path.open("a") as f:
            writer = csv.writer(f)
            while state["step"] < args.steps:
                if state["step"] == args.early:
                    maybe_export("early")
                start = time.perf_counter()
                step = state["step"]
                lr = learning_rate(step, args)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x0, labels, _ = targets.sample(args.batch, generator)
                drop = torch.rand(args.batch, generator=generator) < args.label_dropout
                labels = torch.where(drop, targets.table.null, labels)
                t = torch.randint(
                    0, len(targets.alphas_cumprod), (args.batch,), generator=generator
                )
                eps = torch.randn(x0.shape, generator=generator)
                abar = targets.alphas_cumprod[t][:, None]
                x_t = (abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps).view(-1, 3, side, side)
                with torch.no_grad():
                    exact = targets.eps(x_t, t, labels)
                pred = unet(x_t, t, class_labels=labels).sample
                loss = ((pred - exact) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rel = float(((pred.detach() - exact) ** 2).sum() / (exact**2).sum())
                state["seconds"] += time.perf_counter() - start
                state["step"] = step + 1
                writer.writerow([step + 1, f"{loss.item():.6g}", f"{rel:.6g}", f"{lr:.4g}",
                                 f"{state['seconds']:.1f}"])  # fmt: skip
                bar.set_postfix(loss=f"{loss.item():.4f}", rel=f"{rel:.3f}")
                bar.update()
                if state["step"] % args.checkpoint_every == 0:
                    f.flush()
                    save_state()
                if args.stop_after and state["step"] - first_step >= args.stop_after:
                    f.flush()
                    save_state()
                    print(f"stopped at step {state['step']}; --resume goes on", file=sys.stderr)
                    return 0
    except KeyboardInterrupt:
        save_state()
        print(f"interrupted at step {state['step']}; resume with --resume", file=sys.stderr)
        return 130
    save_state()
    if state["step"] == args.early:
        maybe_export("early")
    maybe_export("final")
    print(f"done: {state['step']} steps, {state['seconds']:.0f} s of training", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
