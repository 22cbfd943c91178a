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


KEYS = ("format", "step", "trainer", "n_evals", "train_seconds", "initial", "final")


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", steps: int | None = None
) -> CellCheckpoint:
    """Read a checkpoint onto ``device``. A truncated or corrupt file, missing keys, values
    of the wrong type, or (given the cell's ``steps``) a step outside [0, steps) is a
    one-line UserError naming the file, which is left untouched."""
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

    def bad(what: str) -> UserError:
        return UserError(
            f"checkpoint {path} is invalid ({what}); it was left untouched: delete it to "
            "restart that cell from step 0"
        )

    missing = [k for k in KEYS if k not in data]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    counts = {k: data[k] for k in ("step", "n_evals")}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"{key} must be an integer >= 0, got {value!r}")
    if steps is not None and not counts["step"] < steps:
        raise bad(f"step {counts['step']} is outside [0, {steps}) of this cell")
    seconds = data["train_seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise bad(f"train_seconds must be a number >= 0, got {seconds!r}")
    for key in ("trainer", "initial", "final"):
        if not isinstance(data[key], dict):
            raise bad(f"{key} must be a mapping")
    return CellCheckpoint(
        step=counts["step"],
        trainer_state=data["trainer"],
        n_evals=counts["n_evals"],
        train_seconds=float(seconds),
        initial=dict(data["initial"]),
        final=dict(data["final"]),
    )


def check_state(
    reference, loaded, path: Path, where: str = "trainer", free_rows: frozenset[str] = frozenset()
) -> None:
    """``loaded`` (a checkpoint's trainer state) has the structure of ``reference`` (a fresh
    trainer's ``state_dict()``): the same keys of every mapping and, for every tensor both
    hold, the same shape and dtype. Optimiser slots a fresh optimiser has not created yet
    (Adam's ``state`` before the first step) are checked against their parameter's shape by
    the optimiser itself, so mapping keys missing from ``reference`` are allowed only there.
    Tensors at the key paths in ``free_rows`` (e.g. ``trainer.backbone.means``) may differ
    in their row count (dim 0) only. A mismatch is a one-line UserError naming the file and
    the key."""

    def fail(what: str) -> None:
        raise UserError(
            f"checkpoint {path} does not fit this cell ({where}: {what}); it was left "
            "untouched: delete it to restart that cell from step 0"
        )

    if isinstance(reference, torch.Tensor):
        if not isinstance(loaded, torch.Tensor):
            fail(f"expected a tensor, got {type(loaded).__name__}")
        rows_free = where in free_rows and loaded.dim() == reference.dim() >= 1
        same = (
            loaded.shape[1:] == reference.shape[1:]
            if rows_free
            else loaded.shape == reference.shape
        )
        if not same or loaded.dtype != reference.dtype:
            fail(
                f"shape {tuple(loaded.shape)} {loaded.dtype}, expected "
                f"{tuple(reference.shape)} {reference.dtype}"
            )
    elif isinstance(reference, dict):
        if not isinstance(loaded, dict):
            fail(f"expected a mapping, got {type(loaded).__name__}")
        missing = [k for k in reference if k not in loaded]
        if missing:
            fail(f"missing key {missing[0]!r}")
        extra = [k for k in loaded if k not in reference]
        if extra and not where.endswith(".state"):
            fail(f"unexpected key {extra[0]!r}")
        for key in reference:
            check_state(reference[key], loaded[key], path, f"{where}.{key}", free_rows)
    elif isinstance(reference, (list, tuple)):
        if not isinstance(loaded, (list, tuple)) or len(loaded) != len(reference):
            fail(f"expected a list of {len(reference)}")
        for i, (ref, got) in enumerate(zip(reference, loaded, strict=True)):
            check_state(ref, got, path, f"{where}[{i}]", free_rows)


def load_trainer_state(trainer, checkpoint: CellCheckpoint, path: Path) -> None:
    """``trainer.load_state_dict`` of a checkpoint after ``check_state`` against the
    trainer's own state; Adam's per-parameter slots must have their parameter's shape. Any
    mismatch is a one-line UserError naming the file (nothing of the cell has run yet)."""
    state = checkpoint.trainer_state
    free = frozenset(f"trainer.backbone.{name}" for name in trainer.backbone.variable_rows)
    reference = trainer.state_dict()
    for optional in ("stop", "convergence"):  # checkpoints written before the stop rule
        if optional not in state:
            reference.pop(optional, None)
    check_state(reference, state, path, free_rows=free)
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"checkpoint {path} does not fit this cell ({reason}); it was left untouched: "
            "delete it to restart that cell from step 0"
        ) from None
    optimizer = trainer.optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        for slot, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise UserError(
                    f"checkpoint {path} does not fit this cell (optimizer.state.{index}.{slot}: "
                    f"shape {tuple(value.shape)}, parameter {tuple(param.shape)}); it was left "
                    "untouched: delete it to restart that cell from step 0"
                )
