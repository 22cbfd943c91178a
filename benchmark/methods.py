"""Method registry: names -> estimator builders. Adding a method is one entry here."""

from __future__ import annotations

from collections.abc import Callable

from benchmark.errors import UserError

KNOWN_METHODS = ("sds", "vsd", "ssd")


def _build_sds(config, prior, generator, device):
    from estimators.sds import SDS

    return SDS(config.sds)


BUILDERS: dict[str, Callable] = {"sds": _build_sds}


def validate_methods(methods: list[str]) -> list[str]:
    """Check method names; unknown and not-yet-implemented names are user errors."""
    if not methods:
        raise UserError("no methods given; available: " + ", ".join(BUILDERS))
    seen = []
    for name in methods:
        if name not in KNOWN_METHODS:
            raise UserError(f"unknown method '{name}'; known methods: {', '.join(KNOWN_METHODS)}")
        if name not in BUILDERS:
            raise UserError(
                f"method '{name}' is not implemented yet; available: {', '.join(BUILDERS)}"
            )
        if name not in seen:
            seen.append(name)
    return seen


def build_estimator(name: str, config, prior, generator, device):
    """The estimator of method ``name`` for ``prior``; ``generator`` (the cell's ``init``
    stream) seeds any trainable state it owns (VSD's eps_phi, SSD's mu)."""
    return BUILDERS[name](config, prior, generator, device)
