"""Cell checkpoints for resume: everything a cell needs to continue bit-identically.

A checkpoint holds the backbone state (parameters and buffers), the Adam state, the
estimator's own state (VSD's eps_phi and its optimiser, SSD's mu), the number of steps done,
the cell's counters (prior evaluations, training seconds) and its initial / last evaluation
metrics. Random streams need no state: every draw is a pure function of (seed, stream,
prompt, step) (benchmark/streams.py), so continuing at step k draws what an uninterrupted
run draws at step k.

Files are written atomically (results.atomic.atomic_write_bytes) and read with
``torch.load(weights_only=True)``; an unreadable file is reported, never overwritten.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import UserError
from results.atomic import atomic_write_bytes

FORMAT_VERSION = 1


@dataclass
class CellCheckpoint:
    """The resumable state of one cell after ``step`` optimiser steps."""

    step: int
    trainer_state: dict
    n_evals: int
    train_seconds: float
    initial: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)


def checkpoint_path(run_dir: Path, cell_name: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"{cell_name}.pt"


def save_checkpoint(path: Path, checkpoint: CellCheckpoint) -> None:
    """Atomic torch.save of the checkpoint (a kill leaves the previous file or this one)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FORMAT_VERSION,
            "step": checkpoint.step,
            "trainer": checkpoint.trainer_state,
            "n_evals": checkpoint.n_evals,
            "train_seconds": checkpoint.train_seconds,
            "initial": checkpoint.initial,
            "final": checkpoint.final,
        },
        buffer,
    )
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> CellCheckpoint:
    """Read a checkpoint onto ``device``; a truncated or corrupt file is a one-line UserError."""
    try:
        data = torch.load(Path(path), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"checkpoint {path} is unreadable (truncated or corrupt: {reason}); it was left "
            "untouched: delete it to restart that cell from step 0"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has an unknown format; it was left untouched")
    return CellCheckpoint(
        step=int(data["step"]),
        trainer_state=data["trainer"],
        n_evals=int(data["n_evals"]),
        train_seconds=float(data["train_seconds"]),
        initial=dict(data["initial"]),
        final=dict(data["final"]),
    )
