"""The steps at which a costlier method has spent SDS's budget (evaluated off the grid)."""

from __future__ import annotations

import math

from benchmark.run.factories import method_config


def equal_compute_steps(config, method: str, prior) -> set[int]:
    """The steps at which a costlier method has spent SDS's whole budget (registry cost
    model: SDS's steps x c_SDS / c_m network evaluations per step): floor and ceil, evaluated
    besides the ``eval.every`` grid so that PSNR at SDS's budget is read between adjacent
    steps, not interpolated across the grid (which understated the costlier method by 1.3-1.7
    dB on a 100-step grid). Empty for SDS, without SDS in the run, or for a cheaper method.

    >>> from benchmark.run.config import load_config
    >>> sorted(equal_compute_steps(load_config(None, ["steps=150", "methods=[sds,vsd]"]),
    ...     "vsd", None))
    [37, 38]
    """
    from estimators.registry import METHODS

    if method == "sds" or "sds" not in config.methods or method not in METHODS:
        return set()
    steps = config.steps

    def cost(name: str) -> float:
        section = method_config(config, name)
        return float(sum(METHODS[name].mean_nfe_per_step(section, prior, steps).values()))

    c_sds, c_m = cost("sds"), cost(method)
    if not (c_sds > 0 and c_m > c_sds):
        return set()
    exact = steps * c_sds / c_m
    return {k for k in (math.floor(exact), math.ceil(exact)) if 0 < k < steps}
