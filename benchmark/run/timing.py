"""Per-section wall-clock of a training step, CUDA-synchronised when on GPU, and memory."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class SectionTimer:
    """Accumulates seconds per named section. On CUDA the clock is read after
    ``torch.cuda.synchronize()``, so a section owns the kernels it launched."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            self.add(name, self.now() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def memory_metrics(device: torch.device) -> dict[str, float]:
    """``mem/rss_mb`` (resident now), ``mem/peak_rss_mb`` (process high-water mark, so it
    never decreases across cells) and on CUDA ``mem/cuda_peak_mb`` (max allocated since the
    cell's last ``reset_peak_memory``)."""
    import psutil

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak_kb / (1024.0 * 1024.0) if sys.platform == "darwin" else peak_kb / 1024.0
    metrics = {
        "mem/rss_mb": psutil.Process().memory_info().rss / 2**20,
        "mem/peak_rss_mb": peak_mb,
    }
    if torch.device(device).type == "cuda":
        metrics["mem/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics


def reset_peak_memory(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
