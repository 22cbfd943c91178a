"""The ``eval.clip`` scorer spec, checked without importing torch or open_clip.

"auto"       the world's shipped CLIP when the prior is the world, otherwise none
"none"       no CLIP metrics
"world"      the small CLIP shipped in evaluation/assets/world_clip
"ARCH:PATH"  ARCH an open_clip model name or a JSON model config path, PATH a checkpoint
"""

from __future__ import annotations

SPECIAL_SPECS = ("auto", "none", "world")


def split_clip_spec(spec: str) -> tuple[str, str]:
    """'ARCH:PATH' -> (ARCH, PATH); a JSON-config ARCH is split after its '.json'."""
    if ".json:" in spec:
        arch, _, path = spec.partition(".json:")
        return arch + ".json", path
    arch, _, path = spec.partition(":")
    return arch, path


def check_clip_spec(spec: str) -> str:
    """Syntax check (no file access): 'auto', 'none', 'world' or 'ARCH:PATH'; ValueError."""
    if spec in SPECIAL_SPECS:
        return spec
    arch, path = split_clip_spec(spec)
    if not arch.strip() or not path.strip():
        raise ValueError(
            f"clip must be one of {list(SPECIAL_SPECS)} or 'ARCH:PATH' (an open_clip model name "
            f"or JSON config, and a checkpoint path), got {spec!r}"
        )
    return spec


def resolve_clip_spec(spec: str, prior: str) -> str:
    """'auto' -> 'world' when the prior is the world (or learned on it), else 'none'; other
    specs unchanged."""
    if spec == "auto":
        return "world" if prior == "world" or prior.partition(":")[0] == "learned" else "none"
    return spec
