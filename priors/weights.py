"""Loading helpers shared by the real-model adapters: one-line weights errors, quiet loading."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WeightsError", "_read_json", "quiet_loading", "weights_variant"]


@contextmanager
def quiet_loading():
    """Silence transformers' per-load progress bars for the block (state restored after)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class WeightsError(ValueError):
    """A weights directory that is missing, incomplete or of the wrong model type."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from None


def weights_variant(folder: Path, filename: str) -> str | None:
    """None when ``folder/filename`` exists; "fp16" when only its fp16 variant
    (``name.fp16.safetensors``, as many Hub repos ship) does; None otherwise too."""
    if (folder / filename).is_file() or not filename.endswith(".safetensors"):
        return None
    variant = filename.replace(".safetensors", ".fp16.safetensors")
    return "fp16" if (folder / variant).is_file() else None
