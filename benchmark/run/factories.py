"""The one place components are built from a run config, through the registries.

    METHODS    (estimators/registry.py)  name -> config section, builder, cost model
    BACKBONES  (backbones/registry.py)   name -> config section, builder
    PRIORS     (here)                    ``world`` | ``learned[:PATH]`` | ``sd:PATH`` -> builder

Config sections are looked up by registry name (``method_config``, ``backbone_config``);
nothing else in the harness reads a section by a computed attribute name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from backbones.base import Backbone
from backbones.registry import BACKBONES, BackboneBuild
from core.errors import UserError
from core.interfaces import DiffusionPrior
from estimators.base import GradientEstimator, GuidanceConfig
from estimators.baselines import needs_geometry
from estimators.registry import METHODS, MethodBuild


def method_config(config, name: str) -> GuidanceConfig:
    """The config section of method ``name`` (``config.<name>``)."""
    return config.sections()[name]


def backbone_config(config):
    """The config section of the configured backbone."""
    return config.sections()[config.backbone]


def validate_methods(methods: list[str]) -> list[str]:
    """Registered method names, deduplicated in order; an unknown name is a UserError."""
    if not methods:
        raise UserError("no methods given; available: " + ", ".join(METHODS))
    seen: list[str] = []
    for name in methods:
        if name not in METHODS:
            raise UserError(f"unknown method '{name}'; known methods: {', '.join(METHODS)}")
        if name not in seen:
            seen.append(name)
    return seen


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


# ------------------------------------------------------------------------------ priors


def _world_prior(config, prompts: list[str], device: torch.device) -> DiffusionPrior:
    from world.prior import WorldPrior

    distance, fovy = config.camera.center()
    return WorldPrior(
        prompts,
        config.render.height,
        config.render.width,
        distance=distance,
        fovy=fovy,
        config=config.world,
        device=device,
    )


def _sd_prior(config, prompts: list[str], device: torch.device) -> DiffusionPrior:
    """``--prior sd:PATH``: a local diffusers Stable Diffusion directory (priors/stable_diffusion);
    a missing, incomplete or wrong directory and over-long prompts are one-line user errors."""
    from priors.spec import parse_prior
    from priors.stable_diffusion import StableDiffusionPrior, WeightsError

    _, path = parse_prior(config.prior)
    try:
        prior = StableDiffusionPrior(path, config.sd, device, prompts)
    except (WeightsError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return prior


def _learned_prior(config, prompts: list[str], device: torch.device) -> DiffusionPrior:
    """``--prior learned[:PATH]``: the UNet trained on the world's exact score
    (priors/learned.py; default the shipped final checkpoint, ``learned:early`` the early
    one); the world prior beside it gives the exact parts (SSD's geometry, exact eps*)."""
    from priors.learned import LearnedPrior, parse_learned
    from priors.weights import WeightsError
    from world.class_targets import ExactTargets

    path = parse_learned(config.prior)
    world = _world_prior(config, prompts, device)

    def exact_targets(table):
        return ExactTargets(table, world.references, world.alphas_cumprod.cpu())

    try:
        prior = LearnedPrior(path, world, device, prompts, exact_targets)
    except (WeightsError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if prior.resolution != (config.render.height, config.render.width):
        raise UserError(
            f"the learned prior at {path} is {prior.resolution[0]}x{prior.resolution[1]}; set "
            f"render.height/width to match (got {config.render.height}x{config.render.width})"
        )
    return prior


@dataclass(frozen=True)
class PriorSpec:
    name: str
    build: Callable[[object, list[str], torch.device], DiffusionPrior]
    description: str


PRIORS: dict[str, PriorSpec] = {
    spec.name: spec
    for spec in (
        PriorSpec("world", _world_prior, "the ground-truth world's analytic prior"),
        PriorSpec("sd", _sd_prior, "a local diffusers Stable Diffusion directory (sd:PATH)"),
        PriorSpec("learned", _learned_prior, "the UNet trained on the world (learned[:PATH])"),
    )
}


def build_prior(config, prompts: list[str], device: torch.device) -> DiffusionPrior:
    """The configured prior; models an estimator will need (SSD's depth model) are loaded
    here, once, so a missing one is an error before any cell runs."""
    kind = config.prior.partition(":")[0]
    if kind not in PRIORS:
        raise UserError(f"unknown prior '{config.prior}'")
    prior = PRIORS[kind].build(config, prompts, device)
    if kind != "world" and "ssd" in config.methods and needs_geometry(config.ssd.baseline):
        prior.geometry_estimator(config.sd.depth_model)
    return prior


# --------------------------------------------------------------------- backbones, optim


def build_backbone(
    config, device: torch.device, generator: torch.Generator | None = None
) -> Backbone:
    """The configured backbone; ``generator`` (the cell's ``init`` stream, step 0) draws any
    random initial parameters (the hash grid's table and MLPs)."""
    spec = BACKBONES[config.backbone]
    build = BackboneBuild(
        backbone_config(config), config.render.height, config.render.width, device, generator
    )
    return spec.build(build)


def build_optimizer(backbone: Backbone, config) -> torch.optim.Optimizer:
    """Adam over the backbone's parameter groups (per-group learning rates)."""
    return torch.optim.Adam(
        backbone.param_groups(),
        betas=(config.optim.beta1, config.optim.beta2),
        eps=config.optim.eps,
    )


# --------------------------------------------------------------------------- estimators


def build_estimator(name: str, config, prior, generator, device) -> GradientEstimator:
    """The estimator of method ``name`` for ``prior``; ``generator`` (the cell's ``init``
    stream) seeds any trainable state it owns (VSD's eps_phi)."""
    spec = METHODS[name]
    shape = prior.space_shape(config.render.height, config.render.width)
    depth_model = config.sd.depth_model
    build = MethodBuild(
        method_config(config, name),
        prior,
        generator,
        device,
        tuple(shape),
        lambda: prior.geometry_estimator(depth_model),
    )
    from estimators.sampling import with_sampling_levers

    return with_sampling_levers(spec.build(build), build.config)


def build_sds_twin(name: str, config, prior, generator, device) -> GradientEstimator | None:
    """Plain SDS with method ``name``'s guidance fields (``GuidanceConfig``: scale, CFG mode,
    weighting, t schedule, sampling levers), for the probe's matched-state comparison and bias
    check (benchmark/probe/twin.py); None for SDS itself or with ``measure.twin`` off."""
    import dataclasses

    from estimators.base import GuidanceConfig
    from estimators.sds import SDSConfig

    if name == "sds" or not getattr(config.measure, "twin", True):
        return None
    section = method_config(config, name)
    fields = {f.name: getattr(section, f.name) for f in dataclasses.fields(GuidanceConfig)}
    shape = prior.space_shape(config.render.height, config.render.width)
    build = MethodBuild(SDSConfig(**fields), prior, generator, device, shape, lambda: None)
    from estimators.sampling import with_sampling_levers

    return with_sampling_levers(METHODS["sds"].build(build), build.config)
