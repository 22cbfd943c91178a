"""Method registry: names -> estimator builders. Adding a method is one entry here."""

from __future__ import annotations

from collections.abc import Callable

from benchmark.errors import UserError

KNOWN_METHODS = ("sds", "vsd", "ssd")


def _build_sds(config, prior, generator, device):
    from estimators.sds import SDS

    return SDS(config.sds)


def _build_vsd(config, prior, generator, device):
    """VSD with the pixel-space residual eps_phi, initialised from the cell's init stream."""
    from estimators.vsd import VSD, build_residual_eps_phi

    shape = getattr(prior, "shape", (3, config.render.height, config.render.width))
    return VSD(config.vsd, build_residual_eps_phi(config.vsd, shape, generator, device))


def geometry_estimator(prior):
    """The depth/normal estimator SSD's baseline uses with this prior."""
    from world.prior import WorldPrior

    if isinstance(prior, WorldPrior):
        from world.geometry import WorldBayesGeometry

        return WorldBayesGeometry(prior)
    raise UserError(f"no depth/normal estimator is available for prior {type(prior).__name__}")


def _build_ssd(config, prior, generator, device):
    from estimators.ssd import SSD

    geometry = None if config.ssd.baseline == "constant" else geometry_estimator(prior)
    return SSD(config.ssd, geometry, device)


BUILDERS: dict[str, Callable] = {"sds": _build_sds, "vsd": _build_vsd, "ssd": _build_ssd}


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
