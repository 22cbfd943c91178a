"""The world-CLIP trainer's user inputs (``python -m evaluation.train_world_clip``): torch
files read without running code, and every argument checked before any work.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from core.errors import UserError

#: what a --bank-cache file of train() and a --trajectories file must hold
BANK_KEYS = ("seed", "views", "bank", "generator")
TRAJECTORY_KEYS = ("images", "grades", "prompt_index", "prompts")


def load_tensor_file(path: Path, what: str, keys: tuple[str, ...] = ()) -> dict:
    """The dict in torch file ``path``, read with ``torch.load(weights_only=True)``: tensors,
    numbers, strings and containers only, so a crafted file cannot run code. A file that
    does not load that way, is not a dict or lacks one of ``keys`` is a one-line UserError
    naming ``what`` (the flag)."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors have many types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"cannot read {what} {path} as a tensor file (no code is loaded): {reason[:200]}"
        ) from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise UserError(f"{what} {path} is not a file of this kind (need keys {', '.join(keys)})")
    return data


def check_args(args: argparse.Namespace) -> None:
    """Every argument of ``main`` checked before any work: a one-line UserError each."""
    if args.steps < 1 or args.views < 1 or args.threads < 1 or args.per_batch_trajectory < 0:
        raise UserError(
            "need --steps >= 1, --views >= 1, --threads >= 1 and --per-batch-trajectory >= 0"
        )
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must lie in [0, 2**63), got {args.seed}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a finite number > 0, got {args.lr}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if args.recheck is not None and not (out / "model.safetensors").is_file():
        raise UserError(f"--recheck needs a trained world CLIP in --out {out}")
    for name in ("trajectories", "init"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            raise UserError(f"--{name} {path} does not exist")
    if args.init is not None and not (args.init / "model.safetensors").is_file():
        raise UserError(f"--init {args.init} holds no model.safetensors")
    if args.trajectories is not None:
        load_tensor_file(args.trajectories, "--trajectories", TRAJECTORY_KEYS)
    cache = args.bank_cache
    if cache is not None and cache.exists() and not cache.is_file():
        raise UserError(f"--bank-cache {cache} is not a file")
    if cache is not None and cache.is_file():
        load_tensor_file(cache, "--bank-cache", () if args.recheck else BANK_KEYS)
    if cache is not None and not cache.parent.is_dir():
        raise UserError(f"no folder {cache.parent} for --bank-cache")
