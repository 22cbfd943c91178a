"""Training data for the world CLIP from real training runs (the data and its grading:
``evaluation.clip_trajectories``; this module trains the cells with the runs' own code path).

    python -m benchmark.clip_trajectories --out TRAJ.pt [--methods sds,vsd,ssd]
        [--steps 300] [--at 0,10,25,50,100,200,300] [--views 16] [--seed 100]

Every cell is trained with the default world configuration (``benchmark.run.trainer.
CellTrainer``, seed ``--seed``: other random streams than any committed run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    """Train the cells and collect the graded renders (``evaluation.clip_trajectories.
    collect``); ``trained``: the prompts to train (default all; grades are always against
    every prompt), ``overrides``: extra ``--set`` strings (tests use a smaller world)."""
    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior, resolve_device
    from benchmark.run.trainer import CellTrainer, configure_torch
    from evaluation.clip_trajectories import collect
    from world.objects import known_prompts

    sets = [f"threads={threads}", *overrides]
    config = load_config(None, sets, methods=methods, steps=steps, seeds=[seed])
    device = resolve_device("cpu")
    configure_torch(config.threads)
    trained = known_prompts() if trained is None else trained
    prior = build_prior(config, trained, device)

    def train(method: str, prompt: str) -> CellTrainer:
        return CellTrainer(config, method, prompt, seed, prior, device)

    size = config.render.height
    return collect(train, methods, trained, steps, at, views, seed, size, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="sds,vsd,ssd")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--at", default="0,10,25,50,100,200,300")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from benchmark.run.config import load_config
    from benchmark.run.factories import validate_methods
    from core.errors import UserError, printable_line

    try:
        try:
            at = sorted({int(s) for s in args.at.split(",")})
        except ValueError:
            raise UserError(f"--at must be step numbers separated by commas: {args.at!r}") from None
        methods = validate_methods(args.methods.split(","))
        if args.steps < 1 or args.views < 1 or not all(0 <= k <= args.steps for k in at):
            raise UserError("need --steps >= 1, --views >= 1 and every --at step in [0, steps]")
        if args.out.is_dir():
            raise UserError(f"--out {args.out} is a folder; give a file name such as traj.pt")
        if not args.out.parent.is_dir():
            raise UserError(f"no folder {args.out.parent} for --out")
        # threads, seed, steps and methods as a run would check them
        load_config(None, [f"threads={args.threads}"], methods=methods, steps=args.steps,
                    seeds=[args.seed])  # fmt: skip
        data = trajectories(methods, args.steps, at, args.views, args.seed, args.threads)
        save(data, args.out)
    except UserError as exc:
        print(f"error: {printable_line(str(exc))}", file=sys.stderr)
        return 2
    print(json.dumps(data["config"]))
    return 0


def save(data: dict, out: Path) -> None:
    """``data`` to ``out`` atomically. When ``out`` cannot be written (full disk, the folder
    gone or read-only) the data goes to a temp file instead and the UserError names it."""
    import io
    import tempfile

    import torch

    from core.errors import UserError
    from results.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(data, buffer)
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fd, spare = tempfile.mkstemp(prefix="clip_trajectories-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getvalue())
        except OSError:
            raise UserError(f"cannot write {out} ({reason}); the data is lost") from None
        raise UserError(f"cannot write {out} ({reason}); the data was saved to {spare}") from None


if __name__ == "__main__":
    raise SystemExit(main())
