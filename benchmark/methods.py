"""Method registry: names -> estimator builders. Adding a method is one entry here."""

from __future__ import annotations

from collections.abc import Callable

from benchmark.family_methods import FAMILY_BUILDERS, FAMILY_METHODS
from core.errors import UserError

KNOWN_METHODS = ("sds", "vsd", "ssd", *FAMILY_METHODS)


def is_latent_diffusers_prior(prior) -> bool:
    """True for priors/stable_diffusion.StableDiffusionPrior (``--prior sd:PATH``)."""
    from priors.stable_diffusion import StableDiffusionPrior

    return isinstance(prior, StableDiffusionPrior)


def _build_sds(config, prior, generator, device):
    from estimators.sds import SDS

    return SDS(config.sds)


def _build_vsd(config, prior, generator, device):
    """VSD with the pixel-space residual eps_phi, initialised from the cell's init stream."""
    from estimators.vsd import VSD, build_residual_eps_phi

    if is_latent_diffusers_prior(prior):
        # LoRA copy of the prior's UNet + camera class embedding (estimators.eps_phi)
        import dataclasses

        from estimators.eps_phi import LoRAEpsPhi

        vsd = config.vsd
        model = LoRAEpsPhi(prior, generator, rank=vsd.lora_rank, alpha=vsd.lora_alpha)
        return VSD(dataclasses.replace(vsd, lr=vsd.lora_lr), model)
    shape = getattr(prior, "shape", (3, config.render.height, config.render.width))
    return VSD(config.vsd, build_residual_eps_phi(config.vsd, shape, generator, device))


def geometry_estimator(prior, config=None):
    """The depth/normal estimator SSD's baseline uses with this prior: the world's Bayes
    estimator, or a frozen DPT for an SD prior (``sd.depth_model``, else ``PATH/depth``;
    loaded once per prior)."""
    from world.prior import WorldPrior

    if isinstance(prior, WorldPrior):
        from world.geometry import WorldBayesGeometry

        return WorldBayesGeometry(prior)
    if is_latent_diffusers_prior(prior):
        return _dpt_geometry(prior, config.sd.depth_model if config is not None else "")
    raise UserError(f"no depth/normal estimator is available for prior {type(prior).__name__}")


def _dpt_geometry(prior, depth_model: str):
    from priors.dpt import DPTGeometry
    from priors.stable_diffusion import WeightsError

    path = depth_model or str(prior.path / "depth")
    if not depth_model and not (prior.path / "depth").is_dir():
        raise UserError(
            "SSD's depth/normal baseline on an SD prior needs a depth model: set "
            "--set sd.depth_model=PATH (a transformers DPTForDepthEstimation directory) "
            "or use --set ssd.baseline=constant"
        )
    key = f"dpt:{path}"
    if key not in prior.auxiliary:
        try:
            prior.auxiliary[key] = DPTGeometry(path, prior, prior.device)
        except WeightsError as exc:
            raise UserError(str(exc)) from None
    return prior.auxiliary[key]


def _build_ssd(config, prior, generator, device):
    from estimators.ssd import SSD

    geometry = None if config.ssd.baseline == "constant" else geometry_estimator(prior, config)
    return SSD(config.ssd, geometry, device)


BUILDERS: dict[str, Callable] = {
    "sds": _build_sds,
    "vsd": _build_vsd,
    "ssd": _build_ssd,
    **FAMILY_BUILDERS,
}


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
