"""Is the runs' CLIP score a quality measure? The gate, read from the run manifests.

A run records its CLIP scorer and what ``evaluation.clip_checks`` found for it in
``manifest["clip"] = {"name", "checks": {"passed", "reasons", figures...}}`` (the shipped world
CLIP's figures come from its provenance.json). CLIP metrics (``clip_score``,
``clip_r_precision``) count as quality only when every run that logged them says
``checks.passed``; otherwise the report shows them as a diagnostic, outside the quality
columns, and says why with the figures. A run without the entry (older runs, or a user's
CLIP nobody checked) does not pass.

>>> gate = clip_gate([{"clip": {"name": "world", "checks": {"passed": True}}}])
>>> gate.quality
True
>>> clip_gate([{}]).quality
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ClipGate:
    quality: bool
    note: str


def _figures(checks: dict) -> str:
    def fmt(key: str, digits: int = 2) -> str | None:
        value = checks.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return f"{value:.{digits}f}"

    parts = []
    for key, label, digits in (
        ("min_margin_true_partial", "smallest margin true - partial", 1),
        ("min_margin_partial_blob", "smallest margin partial - blob", 1),
        ("median_rho_psnr", "median Spearman rho with PSNR", 2),
        ("median_rho_mask_iou", "median rho with mask IoU", 2),
        ("median_rho_psnr_after_step0", "median rho with PSNR after step 0", 2),
    ):
        text = fmt(key, digits)
        if text is not None:
            parts.append(f"{label} {text}")
    return "; ".join(parts)


def clip_gate(manifests: list[dict]) -> ClipGate:
    """The gate over the manifests of the runs that logged CLIP metrics."""
    entries = [m.get("clip") for m in manifests]
    failed = []
    figures = ""
    for entry in entries:
        checks = (entry or {}).get("checks") if isinstance(entry, dict) else None
        if not isinstance(checks, dict):
            failed.append("the run does not record CLIP checks (an older run or an unchecked CLIP)")
            continue
        figures = figures or _figures(checks)
        if not checks.get("passed"):
            failed += [str(r) for r in checks.get("reasons", [])] or ["its checks failed"]
    name = next((e.get("name") for e in entries if isinstance(e, dict) and e.get("name")), "")
    which = f"CLIP '{name}'" if name else "CLIP"
    where = (
        "ladder true > partial > blob on the held-out ring for every prompt, and the rank "
        "correlation with PSNR and mask IoU over training snapshots"
    )
    if not failed:
        return ClipGate(True, f"{which} passed its ranking checks ({where}): {figures}.")
    reasons = "; ".join(dict.fromkeys(failed))
    text = (
        f"{which} is NOT a quality measure for these runs: it failed its ranking checks "
        f"({where}): {reasons}."
    )
    if figures:
        text += f" Figures: {figures}."
    text += " Its columns are shown as a diagnostic, outside the quality tables and the verdict."
    return ClipGate(False, text)


def is_clip_metric(name: str) -> bool:
    """clip_score, clip_r_precision and their ``final ...`` summary columns."""
    return name.removeprefix("final ").startswith("clip")


def gate_for(df, manifests: dict[str, dict] | None) -> ClipGate | None:
    """The gate of the runs in ``df`` (long-format results) that logged CLIP metrics; None
    when none did. ``manifests``: run_id -> manifest."""
    clip = df[df["metric"].map(is_clip_metric)]
    if clip.empty:
        return None
    runs = list(dict.fromkeys(clip["run_id"]))
    return clip_gate([(manifests or {}).get(r, {}) for r in runs])
