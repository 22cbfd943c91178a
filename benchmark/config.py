"""The run configuration: typed, nested, strict. Loaded from YAML + ``--set`` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import yaml

from backbones.hashgrid import HashGridConfig
from backbones.image import ImageConfig
from backbones.voxel import VoxelConfig
from benchmark.typed_config import deep_merge, from_dict, set_dotted, to_dict
from benchmark.yaml_io import read_yaml_mapping
from core.cameras import CameraConfig
from core.errors import ConfigError
from estimators.asd import ASDConfig
from estimators.base import GuidanceConfig
from estimators.bridge import BridgeConfig
from estimators.cds import CDSConfig
from estimators.csd import CSDConfig
from estimators.esd import ESDConfig
from estimators.ism import ISMConfig
from estimators.nfsd import NFSDConfig
from estimators.sdi import SDIConfig
from estimators.ssd import SSDConfig
from estimators.vsd import VSDConfig
from evaluation.clip_spec import check_clip_spec
from priors.stable_diffusion import SDPriorConfig, parse_prior
from world.prior import WorldPriorConfig

BackboneName = Literal["voxel", "hashgrid", "image"]
DeviceName = Literal["cpu", "cuda"]


@dataclass
class RenderConfig:
    height: int = 32
    width: int = 32

    def __post_init__(self) -> None:
        if not (4 <= self.height <= 1024 and 4 <= self.width <= 1024):
            raise ValueError("height and width must lie in [4, 1024]")


@dataclass
class EvalConfig:
    """Held-out evaluation: ``n_views`` cameras on a ring that no reference camera uses."""

    every: int = 50
    n_views: int = 8
    elevation: float = 20.0
    azimuth_offset: float = 7.5
    snapshots: bool = True
    #: CLIP scorer of clip_score / clip_r_precision (evaluation/clip.py): "auto" (the shipped
    #: world CLIP when the prior is the world, else none), "none", "world", or "ARCH:PATH"
    clip: str = "auto"

    def __post_init__(self) -> None:
        if self.every < 1 or self.n_views < 1:
            raise ValueError("every and n_views must be >= 1")
        check_clip_spec(self.clip)


@dataclass
class OptimConfig:
    """Adam on the backbone (learning rates are per parameter group, in the backbone config)."""

    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-15


@dataclass
class SDSConfig(GuidanceConfig):
    pass


@dataclass
class MeasureConfig:
    """Gradient-variance probe (DESIGN.md section 4, benchmark/measure.py): every ``every``
    steps (0 = off) and at step 0 and the last step, K = ``samples`` draws of (camera, t, eps)
    from the ``measure`` stream, theta frozen. ``chunk`` samples are vectorised at once
    (memory O(chunk x parameters)); ``engine`` picks torch.func or plain autograd ("auto":
    func, autograd if the backbone cannot be vmapped); ``bootstrap`` resamples give the 95% CI
    of log_var from a K x K Gram matrix, exact up to ``sketch_dim`` parameters, count-sketched
    beyond; ``reference_samples`` > 0 adds the bias check against a large-sample mean."""

    every: int = 50
    samples: int = 16
    variants: tuple[Literal["all", "fixed_camera", "fixed_camera_t"], ...] = (
        "all",
        "fixed_camera",
        "fixed_camera_t",
    )
    reference_samples: int = 0
    bootstrap: int = 200
    chunk: int = 16
    engine: Literal["auto", "func", "autograd"] = "auto"
    sketch_dim: int = 131072

    def __post_init__(self) -> None:
        if self.every < 0 or self.samples < 2 or self.reference_samples < 0:
            raise ValueError("need every >= 0, samples >= 2, reference_samples >= 0")
        if self.bootstrap < 0 or self.chunk < 1 or self.sketch_dim < 1:
            raise ValueError("need bootstrap >= 0, chunk >= 1, sketch_dim >= 1")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"duplicate measurement variants in {self.variants}")


@dataclass
class RunConfig:
    methods: list[str] = field(default_factory=lambda: ["sds"])
    prompts_file: str = "prompts/objects.txt"
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 300
    device: DeviceName = "cpu"
    out: str = "runs"
    threads: int = 2
    checkpoint_every: int = 50
    backbone: BackboneName = "voxel"
    prior: str = "world"  # "world" or "sd:PATH" (a diffusers Stable Diffusion directory)
    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    hashgrid: HashGridConfig = field(default_factory=HashGridConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    world: WorldPriorConfig = field(default_factory=WorldPriorConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    sds: SDSConfig = field(default_factory=SDSConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    ssd: SSDConfig = field(default_factory=SSDConfig)
    # the score-distillation family (issue 19, docs/family.md)
    csd: CSDConfig = field(default_factory=CSDConfig)
    nfsd: NFSDConfig = field(default_factory=NFSDConfig)
    ism: ISMConfig = field(default_factory=ISMConfig)
    sdi: SDIConfig = field(default_factory=SDIConfig)
    asd: ASDConfig = field(default_factory=ASDConfig)
    cds: CDSConfig = field(default_factory=CDSConfig)
    esd: ESDConfig = field(default_factory=ESDConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    sd: SDPriorConfig = field(default_factory=SDPriorConfig)

    def __post_init__(self) -> None:
        try:
            parse_prior(self.prior)
        except ValueError:
            raise ConfigError(
                f"bad value for 'prior': {self.prior!r}; expected 'world' or 'sd:PATH' "
                "(a diffusers Stable Diffusion directory)"
            ) from None
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0 (0: only on Ctrl-C)")
        if self.backbone == "image":
            self.camera = fixed_image_camera(self.camera, self.image)


def fixed_image_camera(camera: CameraConfig, image: ImageConfig) -> CameraConfig:
    """The 2D world's camera distribution: the single camera the image represents
    (``image.elevation``, ``image.azimuth``; distance and fovy at the middle of their ranges).
    With ``backbone: image`` the run's ``camera`` ranges are replaced by it, so training, the
    gradient-variance probe and the view-aware prior all see that camera."""
    distance, fovy = camera.center()
    return CameraConfig(
        elevation_range=(image.elevation, image.elevation),
        azimuth_range=(image.azimuth, image.azimuth),
        distance_range=(distance, distance),
        fovy_range=(fovy, fovy),
        batch_size=camera.batch_size,
    )


def parse_set_value(text: str):
    """Parse the value of ``--set key=value`` as YAML (numbers, bools, lists, strings)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(
    config_file: str | None = None, overrides: list[str] | None = None, **cli: object
) -> RunConfig:
    """Defaults <- YAML file <- ``--set a.b=c`` overrides <- explicit CLI flags (not None)."""
    tree: dict = {}
    if config_file:
        loaded = read_yaml_mapping(config_file, "config file")
        tree = deep_merge(tree, loaded or {})
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        set_dotted(tree, key.strip(), parse_set_value(value))
    for key, value in cli.items():
        if value is not None:
            tree[key] = value
    return from_dict(RunConfig, tree)


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
