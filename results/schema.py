"""Names both sides of a run directory agree on.

A run dir (``runs/<run_id>/``) holds ``config.yaml``, ``manifest.json``, ``metrics.parquet``
(long format, ``METRIC_COLUMNS``) and ``snapshots/`` with ``snapshot_name(...)`` and
``truth_snapshot_name(prompt)`` PNGs. A sweep dir holds one run dir per cell under
``cells/<cell_id>/``.

>>> slug("A red sphere!")
'a-red-sphere'
>>> cell_id("sds", "a red sphere", 0, {})
'sds_a-red-sphere_s0'
>>> snapshot_name("ssd", "a snowman", 1, 50)
'ssd_a-snowman_s1_step00050.png'
>>> is_machine_metric("var/all/seconds"), is_machine_metric("var/all/log_var")
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

METRIC_COLUMNS = ("run_id", "method", "prompt", "seed", "step", "metric", "value")
#: one cell of a run: the key columns of a metric row without step / metric / value
CELL_COLUMNS = ("method", "prompt", "seed")
#: the method every paired comparison is made against
REFERENCE_METHOD = "sds"

METRICS_FILE = "metrics.parquet"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_PATTERN = re.compile(
    r"^(?P<method>[^_]+)_(?P<slug>.+)_s(?P<seed>\d+)_step(?P<step>\d+)\.png$"
)


def base_slug(text: str) -> str:
    """File-name-safe form of a prompt: 'a red sphere' -> 'a-red-sphere' (not unique)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "prompt"


def slug(text: str, among: Iterable[str] = ()) -> str:
    """File-name-safe form of a prompt, unique among the prompts ``among`` of its run.

    ``base_slug(text)``; when another prompt of ``among`` has the same base slug (``a cat``
    and ``A cat!``), every such prompt gets ``--`` and 8 hex digits of the SHA-1 of its text
    appended: stable, a prompt whose slug is unique in its run keeps its plain name, and a
    suffixed name never equals a plain one (``base_slug`` never writes ``--``).

    >>> slug("A cat!"), slug("A cat!", among=["a dog", "A cat!"])
    ('a-cat', 'a-cat')
    >>> slug("a cat", ["a cat", "A cat!"]), slug("A cat!", ["a cat", "A cat!"])
    ('a-cat--008bd0f0', 'a-cat--9144e1de')
    """
    base = base_slug(text)
    if any(other != text and base_slug(other) == base for other in among):
        return f"{base}--{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"
    return base


def cell_name(method: str, prompt: str, seed: int, among: Iterable[str] = ()) -> str:
    """``<method>_<prompt slug>_s<seed>``: a cell's name in file names and messages;
    ``among``: the run's prompts (``slug``)."""
    return f"{method}_{slug(prompt, among)}_s{seed}"


def overrides_hash(point: dict[str, Any]) -> str:
    """8 hex digits identifying a sweep grid point (sorted JSON, SHA-1)."""
    text = json.dumps(point, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def cell_id(
    method: str, prompt: str, seed: int, point: dict[str, Any], among: Iterable[str] = ()
) -> str:
    """Stable, readable sweep cell id: ``cell_name`` plus ``_<8 hex>`` of the grid point."""
    base = cell_name(method, prompt, seed, among)
    return f"{base}_{overrides_hash(point)}" if point else base


def snapshot_name(method: str, prompt: str, seed: int, step: int, among: Iterable[str] = ()) -> str:
    """File name of a cell's held-out renders at ``step``."""
    return f"{cell_name(method, prompt, seed, among)}_step{step:05d}.png"


def truth_snapshot_name(prompt: str, among: Iterable[str] = ()) -> str:
    """File name of the true object's renders at the held-out cameras."""
    return f"truth_{slug(prompt, among)}.png"


def is_machine_metric(name: str) -> bool:
    """Metrics measured on the machine, which differ between identical runs: wall-clock
    (``train_seconds``, ``var/seconds``, ``var/<v>/seconds``, ``time/<section>``) and memory
    (``mem/...``). Every other metric is reproducible bit for bit on CPU."""
    return name.startswith(("time/", "mem/")) or name.rsplit("/", 1)[-1].endswith("seconds")
