"""Fault injection for the sweep tests, through a hook (never by patching the trainer).

``STEINBENCH_SWEEP_INJECT_FAILURES="PATTERN[:N[:exit|:exitK]],..."`` makes every cell whose
id matches the fnmatch PATTERN fail on its first N attempts (default 1): it raises after
leaving partial output in its cell dir, or with ``exit`` its worker process dies before the
run, with ``exitK`` when the cell reaches step K (``die_at_step``, a ``before_step`` hook of
the run). The driver reads it and passes it to the task, so it works on every executor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from core.errors import UserError

INJECT_ENV = "STEINBENCH_SWEEP_INJECT_FAILURES"


class InjectedFailure(RuntimeError):
    """Raised by the test hook (``STEINBENCH_SWEEP_INJECT_FAILURES``)."""


def injected_failures(text: str | None) -> list[tuple[str, int, str]]:
    """Parse ``PATTERN[:N[:exit|:exitK]],...``: (pattern, attempts that fail (default 1),
    kind: raise, exit (before the run) or exitK (at step K))."""
    rules = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        pattern, count, kind, *rest = [*item.strip().split(":"), "", ""]
        valid_kind = kind in ("", "exit") or re.fullmatch(r"exit\d+", kind)
        if rest[:-2] or not valid_kind or not (count or "1").isdigit():
            raise UserError(f"bad {INJECT_ENV} entry {item!r}: expected PATTERN[:N[:exit[K]]]")
        rules.append((pattern, int(count or 1), kind or "raise"))
    return rules


def die_at_step(step: int) -> Callable[[int], None]:
    """A ``before_step`` hook (benchmark.run.trainer.CellHooks) that makes this worker process
    die when the cell reaches ``step``: a worker killed mid-cell (OOM, segfault)."""

    def hook(k: int) -> None:
        if k == step:
            os._exit(3)

    return hook
