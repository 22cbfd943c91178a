"""The run configuration: typed, nested, strict. Loaded from YAML + ``--set`` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Literal

import yaml

from backbones.image import ImageConfig
from backbones.registry import BACKBONES
from benchmark.probe.config import MeasureConfig
from benchmark.run.typed_config import deep_merge, from_dict, set_dotted, to_dict
from benchmark.run.yaml_io import read_yaml_mapping
from core.cameras import CameraConfig
from core.errors import ConfigError
from estimators.registry import METHODS
from evaluation.clip_spec import check_clip_spec
from priors.spec import parse_prior
from priors.stable_diffusion import SDPriorConfig
from world.prior import WorldPriorConfig

DeviceName = Literal["cpu", "cuda"]
#: Seeds are stored as int64 (metrics.parquet) and hashed into the streams: 0 <= seed < 2**63.
SEED_LIMIT = 2**63
#: the default stopping rule, calibrated in the world (docs/convergence.md)
DEFAULT_STOP_RULE = "agreement<0.1 & render_change<0.1"


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

    every: int = 100
    n_views: int = 8
    elevation: float = 20.0
    azimuth_offset: float = 7.5
    snapshots: bool = True
    #: CLIP scorer of clip_score / clip_r_precision (evaluation/clip.py): "auto" (the shipped
    #: world CLIP when the prior is the world, else none), "none", "world", or "ARCH:PATH"
    clip: str = "auto"
    #: quality ceiling per prompt (evaluation/ceiling.py: a cached photometric fit) and the
    #: quality/* fraction-of-gap metrics; world prompts only
    ceiling: bool = True
    #: instances of a distribution prompt the ceiling fits (its first N, 0: all): one fit per
    #: instance, so the best of N is a lower bound on the best of all (evaluation/ceiling.py)
    ceiling_instances: int = 4

    def __post_init__(self) -> None:
        if self.every < 1 or self.n_views < 1:
            raise ValueError("every and n_views must be >= 1")
        if self.ceiling_instances < 0:
            raise ValueError(f"ceiling_instances must be >= 0, got {self.ceiling_instances}")
        check_clip_spec(self.clip)


@dataclass
class OptimConfig:
    """Adam on the backbone (learning rates are per parameter group, in the backbone config)."""

    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-15

    def __post_init__(self) -> None:
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"need 0 <= beta1, beta2 < 1, got {self.beta1}, {self.beta2}")
        if not self.eps > 0.0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


@dataclass
class StopConfig:
    """Ground-truth-free convergence signals and the stopping rule on them
    (benchmark/run/convergence.py, results/stop_rule.py). ``signals``: compute the ``conv/*``
    signals (O(parameters) work per step, no network evaluation); ``window``: steps of their
    exponential averages; ``rule``: conditions joined by ``&`` (e.g. ``agreement<0.2 &
    render_change<0.05``) or ``none``, checked at every evaluation; ``patience``: consecutive
    evaluations it must hold; ``action``: ``record`` the step where it fires (the run goes on)
    or ``stop`` the cell there; ``updates``: also ``update_cos`` (a copy of theta per step)."""

    signals: bool = True
    window: int = 20
    updates: bool = False
    rule: str = DEFAULT_STOP_RULE
    patience: int = 2
    action: Literal["record", "stop"] = "record"

    def __post_init__(self) -> None:
        from results.stop_rule import parse_stop_rule

        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        rule = parse_stop_rule(self.rule)
        if rule.conditions and not self.signals:
            raise ValueError("a stop rule needs the signals: set stop.signals=true or rule none")
        if "update_cos" in rule.signals and not self.updates:
            raise ValueError("a rule on update_cos needs stop.updates=true")


class RunConfigBase:
    """Validation and section lookup of ``RunConfig`` (whose fields are built below)."""

    def __post_init__(self) -> None:
        try:
            parse_prior(self.prior)
        except ValueError:
            raise ConfigError(
                f"bad value for 'prior': {self.prior!r}; expected 'world', 'learned[:PATH]' "
                "(a learned-prior folder) or 'sd:PATH' (a diffusers Stable Diffusion directory)"
            ) from None
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        bad = [s for s in self.seeds if not 0 <= s < SEED_LIMIT]
        if bad:
            raise ValueError(f"seeds must lie in [0, 2**63), got {bad[0]}")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.workers < 0:
            raise ValueError("workers must be >= 0 (0: auto)")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0 (0: only on Ctrl-C)")
        if self.backbone == "image":
            self.camera = fixed_image_camera(self.camera, self.image)

    def sections(self) -> dict[str, object]:
        """Registry name -> config section, for every method and backbone."""
        return {name: getattr(self, name) for name in (*BACKBONES, *METHODS)}


def _section(cls: type):
    return field(default_factory=cls)


def _sections(registry: dict) -> list[tuple]:
    """(name, config class, default) of every registry row: one config section each."""
    return [
        (name, spec.config_class, _section(spec.config_class)) for name, spec in registry.items()
    ]


#: The run configuration. Its method and backbone sections come from the registries
#: (METHODS, BACKBONES): a new method or backbone gets its section without an edit here.
RunConfig = make_dataclass(
    "RunConfig",
    [
        ("methods", list[str], field(default_factory=lambda: ["sds"])),
        ("prompts_file", str, "prompts/objects.txt"),
        ("seeds", list[int], field(default_factory=lambda: [0])),
        ("steps", int, 300),
        ("device", DeviceName, "cpu"),
        ("out", str, "runs"),
        ("threads", int, 2),
        ("workers", int, 0),  # cells at once (0: auto, benchmark/run/parallel_cells.py)
        ("checkpoint_every", int, 50),
        ("backbone", Literal[tuple(BACKBONES)], "voxel"),
        ("prior", str, "world"),  # "world", "learned[:PATH]" or "sd:PATH" (diffusers SD dir)
        *_sections(BACKBONES),
        ("world", WorldPriorConfig, _section(WorldPriorConfig)),
        ("camera", CameraConfig, _section(CameraConfig)),
        ("render", RenderConfig, _section(RenderConfig)),
        ("eval", EvalConfig, _section(EvalConfig)),
        ("optim", OptimConfig, _section(OptimConfig)),
        ("measure", MeasureConfig, _section(MeasureConfig)),
        ("stop", StopConfig, _section(StopConfig)),
        *_sections(METHODS),
        ("sd", SDPriorConfig, _section(SDPriorConfig)),
    ],
    bases=(RunConfigBase,),
    namespace={"__module__": __name__, "__doc__": "The resolved configuration of one run."},
)


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
