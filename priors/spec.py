"""The ``prior`` setting: which diffusion prior a run uses, and where its weights are."""

from __future__ import annotations

SD_PREFIX = "sd:"


def parse_prior(spec: str) -> tuple[str, str | None]:
    """'world' -> ('world', None); 'sd:PATH' -> ('sd', PATH); 'learned' -> ('learned', None);
    'learned:PATH' -> ('learned', PATH); ValueError otherwise.

    >>> parse_prior("learned:early"), parse_prior("sd:/m")
    (('learned', 'early'), ('sd', '/m'))
    """
    if spec in ("world", "learned"):
        return spec, None
    if spec.startswith(SD_PREFIX) and spec[len(SD_PREFIX) :].strip():
        return "sd", spec[len(SD_PREFIX) :].strip()
    if spec.startswith("learned:") and spec[len("learned:") :].strip():
        return "learned", spec[len("learned:") :].strip()
    raise ValueError(
        f"'prior' must be 'world', 'learned[:PATH]' (a learned-prior folder) or 'sd:PATH' "
        f"(a diffusers Stable Diffusion directory), got {spec!r}"
    )
