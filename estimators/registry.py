"""METHODS: one row per estimator (name -> config class, builder, cost model).

The run config gets one section per row (``sds.*``, ``vsd.*``, ...), the CLI's ``--methods``
are validated against the row names, the regress check and the report take their method lists
from here (through the results they read), and ``benchmark.run.factories.build_estimator`` builds
a cell's estimator. Adding an estimator is one file in ``estimators/`` plus one row here (the
developer guide in docs/manual.md).

The cost model ``nfe_per_step(section, prior)`` gives the network evaluations one training
step spends per rendered image, by kind: ``prior`` (the diffusion network, each CFG branch
counts), ``phi`` (VSD's eps_phi, SSD's learned baseline) and ``depth`` (SSD's depth/normal
model). A test checks it against the counters of real steps. With ``noise_samples`` = K
(estimators/sampling.py) the evaluations inside ``grad`` are paid K times per image, those in
``update`` once (SSD's learned baseline fits on all K draws: K). One convention for every
row: the cost model is a function ``(section, prior) -> {kind: count}`` named in the row (the
family's rows adapt their class's ``nfe_per_step`` with ``_family_cost(cls)``).

>>> list(METHODS)
['sds', 'vsd', 'ssd', 'csd', 'nfsd', 'ism', 'sdi', 'asd', 'cds', 'esd', 'bridge']
>>> METHODS["sds"].nfe_per_step(SDSConfig(guidance_scale=7.5), None)
{'prior': 2, 'phi': 0, 'depth': 0}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.guidance import needs_unconditional
from core.interfaces import DiffusionPrior, GeometryEstimator
from estimators.asd import ASD, ASDConfig
from estimators.base import GradientEstimator, GuidanceConfig
from estimators.branches import require_negative
from estimators.bridge import Bridge, BridgeConfig
from estimators.cds import CDS, CDSConfig
from estimators.csd import CSD, CSDConfig
from estimators.esd import ESDConfig
from estimators.ism import ISM, ISMConfig
from estimators.nfsd import NFSD, NFSDConfig
from estimators.sdi import SDI, SDIConfig, annealed_timestep
from estimators.sds import SDSConfig
from estimators.ssd import SSDConfig
from estimators.vsd import VSDConfig


@dataclass(frozen=True)
class MethodBuild:
    """What a builder gets.

    Attributes:
        config: the method's config section.
        prior: the cell's prior.
        generator: the cell's ``init`` stream (step 1): seeds any trainable state (eps_phi).
        device: where the estimator's tensors live.
        image_shape: [C, H, W] of one encoded render.
        geometry: loads the prior's depth/normal estimator (SSD's baseline) on demand.
    """

    config: object
    prior: DiffusionPrior
    generator: torch.Generator
    device: torch.device
    image_shape: tuple[int, int, int]
    geometry: Callable[[], GeometryEstimator]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str
    config_class: type
    build: Callable[[MethodBuild], GradientEstimator]
    nfe_per_step: Callable[[object, DiffusionPrior | None], dict[str, int]]
    #: part of the golden variance regression (tests/golden/variance.json)
    in_golden: bool = False
    #: the cost model at a given training step, for methods whose cost changes during a run
    #: (SDS-Bridge after its switch step, ISM's inversion length with its t range); None:
    #: ``nfe_per_step`` at every step
    nfe_at_step: Callable[[object, DiffusionPrior | None, int], dict[str, int]] | None = None

    def mean_nfe_per_step(self, config, prior, steps: int) -> dict[str, float]:
        """The cost model averaged over the ``steps`` training steps of a run (what the
        counters of a whole cell measure)."""
        if self.nfe_at_step is None or steps < 1:
            return dict(self.nfe_per_step(config, prior))
        per_step = [self.nfe_at_step(config, prior, k) for k in range(steps)]
        return {kind: sum(c[kind] for c in per_step) / steps for kind in per_step[0]}


def cfg_branches(config: GuidanceConfig) -> int:
    """Prior network evaluations of one guided prediction: 2 with CFG, 1 without."""
    return 2 if needs_unconditional(config.guidance_scale, config.cfg_mode) else 1


def _cost(prior: int = 0, phi: int = 0, depth: int = 0) -> dict[str, int]:
    return {"prior": prior, "phi": phi, "depth": depth}


def _build_sds(b: MethodBuild) -> GradientEstimator:
    from estimators.sds import SDS

    return SDS(b.config)


def _sds_cost(config: SDSConfig, prior) -> dict[str, int]:
    return _cost(prior=cfg_branches(config) * config.noise_samples)


def _residual_eps_phi(b: MethodBuild):
    from estimators.vsd import build_residual_eps_phi

    return b.config, build_residual_eps_phi(b.config, b.image_shape, b.generator, b.device)


def _lora_eps_phi(b: MethodBuild):
    import dataclasses

    from estimators.eps_phi import LoRAEpsPhi

    vsd = b.config
    model = LoRAEpsPhi(b.prior, b.generator, rank=vsd.lora_rank, alpha=vsd.lora_alpha)
    return dataclasses.replace(vsd, lr=vsd.lora_lr), model


#: eps_phi by the prior's ``eps_phi_kind`` capability
EPS_PHI_BUILDERS = {"residual": _residual_eps_phi, "lora": _lora_eps_phi}


def _build_vsd(b: MethodBuild) -> GradientEstimator:
    from estimators.vsd import VSD

    config, model = EPS_PHI_BUILDERS[b.prior.eps_phi_kind](b)
    return VSD(config, model)


def _vsd_cost(config: VSDConfig, prior) -> dict[str, int]:
    """grad: the guided prediction + one eps_phi forward; update: ``updates_per_step``
    eps_phi training forwards. The world's residual eps_phi (prior + delta) also calls the
    conditional prior: once in grad when CFG is on (else it reuses eps_hat) and once per
    update."""
    k, updates = config.noise_samples, config.updates_per_step
    if prior is not None and prior.eps_phi_kind == "lora":
        return _cost(prior=k * cfg_branches(config), phi=k + updates)
    guided = needs_unconditional(config.guidance_scale, config.cfg_mode)
    return _cost(prior=k * (cfg_branches(config) + int(guided)) + updates, phi=k + updates)


def _build_ssd(b: MethodBuild) -> GradientEstimator:
    """SSD; its depth/normal model when the baseline reads one, its learned baseline's network
    (estimators/learned_baseline.py) from the cell's init stream."""
    from estimators.baselines import needs_geometry
    from estimators.ssd import SSD, build_learned_baseline

    geometry = b.geometry() if needs_geometry(b.config.baseline) else None
    learned = None
    if b.config.baseline == "learned":
        learned = build_learned_baseline(b.config, b.image_shape[0], b.generator, b.device)
    return SSD(b.config, geometry, b.device, learned)


def _ssd_cost(config: SSDConfig, prior) -> dict[str, int]:
    """The guided prediction; the depth/normal model once per draw; the learned baseline once
    per draw in grad and once per draw in update (its fit)."""
    from estimators.baselines import needs_geometry

    k = config.noise_samples
    learned = 2 * k * int(config.baseline == "learned")
    depth = k * int(needs_geometry(config.baseline))
    return _cost(prior=k * cfg_branches(config), phi=learned, depth=depth)


# ------------------------------------------------------------- the score-distillation family


def _family_cost(cls: type, at_step: bool = False):
    """The cost model of a family method: its class's ``nfe_per_step`` (t = None: the worst
    case for SDI's t-dependent inversion; bridge before its switch step) in this registry's
    kinds (its ``eps_phi`` is ``phi``). With ``at_step`` the returned function takes the
    training step as a third argument (the class's ``nfe_per_step(config, step=...)``)."""

    def cost(config, prior, step: int = 0) -> dict[str, int]:
        raw = cls.nfe_per_step(config, step=step) if at_step else cls.nfe_per_step(config)
        return _cost(
            prior=raw.get("prior", 0), phi=raw.get("eps_phi", 0), depth=raw.get("depth", 0)
        )

    return cost


def _sdi_cost(config, prior, step: int = 0) -> dict[str, int]:
    """SDI's prior evaluations per image at ``step``: with ``t_anneal`` its t is threestudio's
    deterministic schedule, so the inversion's rungs at that step are known; without it t is
    the harness's random draw and the worst case t = T - 1 is kept (estimators.sdi)."""
    T = prior.num_train_timesteps if prior is not None else 1000
    t = annealed_timestep(config, step, T) if config.t_anneal else None
    return _cost(prior=SDI.nfe_per_step(config, t)["prior"])


def _ism_cost(config: ISMConfig, prior, step: int = 0) -> dict[str, float]:
    """ISM's mean prior evaluations per image at ``step``: its inversion stops at s, so the
    count depends on t; averaged over the step's t range (estimators.ism)."""
    T = prior.num_train_timesteps if prior is not None else 1000
    return _cost(prior=ISM.nfe_per_step(config, step=step, num_train_timesteps=T)["prior"])


def _simple(cls: type, needs_negative: Callable[[object], bool] = lambda c: False):
    """A builder for a family method that takes only its config section."""

    def build(b: MethodBuild) -> GradientEstimator:
        if needs_negative(b.config):
            require_negative(b.prior, cls.name)
        return cls(b.config)

    return build


def _build_cds(b: MethodBuild) -> GradientEstimator:
    """eps* [C, H, W] of the run, drawn from the cell's init stream."""
    from estimators.cds import CDS

    eps_star = torch.randn(b.image_shape, generator=b.generator).to(b.device)
    return CDS(b.config, eps_star)


def _build_esd(b: MethodBuild) -> GradientEstimator:
    """ESD = VSD's eps_phi (by the prior's ``eps_phi_kind``) with ESD's camera-CFG."""
    from estimators.esd import ESD

    config, model = EPS_PHI_BUILDERS[b.prior.eps_phi_kind](b)
    return ESD(config, model)


def _esd_cost(config: ESDConfig, prior) -> dict[str, int]:
    """VSD's cost (lambda = ``camera_cfg`` = 1 is VSD's code path) and, for lambda != 1, per
    draw in grad: the camera-free eps_phi branch (phi + 1) and, with CFG on, the conditional
    prior prediction ESD's grad makes itself for both camera branches. The world's residual
    eps_phi would make that call inside (VSD's count already has it, so the prior count is
    VSD's); the LoRA eps_phi makes none in VSD, so there it is one more."""
    cost = _vsd_cost(config, prior)
    if config.camera_cfg != 1.0:
        k = config.noise_samples
        cost["phi"] += k
        if prior is not None and prior.eps_phi_kind == "lora":
            cost["prior"] += k * int(needs_unconditional(config.guidance_scale, config.cfg_mode))
    return cost


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("sds", "SDS (DreamFusion)", SDSConfig, _build_sds, _sds_cost, True),
        MethodSpec("vsd", "VSD (ProlificDreamer)", VSDConfig, _build_vsd, _vsd_cost, True),
        MethodSpec("ssd", "SSD (SteinDreamer)", SSDConfig, _build_ssd, _ssd_cost, True),
        MethodSpec(
            "csd",
            "CSD (classifier score)",
            CSDConfig,
            _simple(CSD, lambda c: c.uses_negative),
            _family_cost(CSD),
        ),
        MethodSpec(
            "nfsd",
            "NFSD (noise-free)",
            NFSDConfig,
            _simple(NFSD, lambda c: True),
            _family_cost(NFSD),
        ),
        MethodSpec(
            "ism",
            "ISM (LucidDreamer)",
            ISMConfig,
            _simple(ISM, lambda c: c.negative_prompt is not None),
            _ism_cost,
            nfe_at_step=_ism_cost,
        ),
        MethodSpec(
            "sdi",
            "SDI (inversion)",
            SDIConfig,
            _simple(SDI),
            _family_cost(SDI),
            nfe_at_step=_sdi_cost,
        ),
        MethodSpec(
            "asd",
            "ASD (ScaleDreamer)",
            ASDConfig,
            _simple(ASD),
            _family_cost(ASD),
        ),
        MethodSpec("cds", "Consistent3D (CDS)", CDSConfig, _build_cds, _family_cost(CDS)),
        MethodSpec("esd", "ESD (entropic)", ESDConfig, _build_esd, _esd_cost),
        MethodSpec(
            "bridge",
            "SDS-Bridge",
            BridgeConfig,
            _simple(Bridge, lambda c: True),
            _family_cost(Bridge),
            nfe_at_step=_family_cost(Bridge, at_step=True),
        ),
    )
}
