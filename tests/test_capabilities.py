"""The contract suite: every registered prior and backbone declares the capabilities of its
interface (core/interfaces.py, backbones/base.py) with the declared types, the declarations
hold (a prior's ``shape`` is what ``encode`` gives, ``supports_negative`` answers, a
``vmap_encode`` prior encodes under torch.func.vmap), callers read them as attributes (no
``getattr`` probing), and a backbone keeps no hidden state between two calls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from backbones.base import Backbone
from backbones.registry import BACKBONES, BackboneBuild
from benchmark.run.config import load_config
from benchmark.run.factories import PRIORS, build_prior
from core.cameras import look_at_origin
from core.interfaces import DiffusionPrior, PriorContext
from estimators.registry import EPS_PHI_BUILDERS

ROOT = Path(__file__).resolve().parents[1]
H = W = 16
PROMPT = "a red sphere"
#: small but real builds of every backbone row
BACKBONE_CONFIGS = {
    "voxel": {"resolution": 8, "n_samples": 8},
    "hashgrid": {"log2_hashmap_size": 10, "n_samples": 8},
    "gaussians": {"n_points": 64},
    "image": {},
}
PRIOR_CAPABILITIES = ("shape", "eps_phi_kind", "supports_negative", "vmap_encode", "probe_chunk")
BACKBONE_CAPABILITIES = ("supports_vmap", "variable_rows")


def _cameras(n: int = 2):
    ones = torch.ones(n)
    return look_at_origin(ones * 20.0, torch.linspace(0.0, 90.0, n), ones * 2.5, ones * 40.0)


@pytest.fixture(scope="module")
def sd_fixture(tmp_path_factory) -> Path:
    from priors.fixtures import make_fixtures

    root = tmp_path_factory.mktemp("fx")
    make_fixtures(root, ["sd"])
    return root / "sd"


@pytest.fixture
def prior_of_row(request, world_prior_small):
    """The prior a registry row builds (the world row: the shared small world prior)."""

    def build(name: str) -> DiffusionPrior:
        if name == "world":
            return world_prior_small
        if name == "learned":  # the shipped checkpoint (trained at 32x32; encode is any size)
            config = load_config(None, [], prior="learned")
            return build_prior(config, [PROMPT], torch.device("cpu"))
        path = request.getfixturevalue("sd_fixture")
        config = load_config(None, [f"render.height={H}", f"render.width={W}"], prior=f"sd:{path}")
        return build_prior(config, [PROMPT], torch.device("cpu"))

    return build


def test_every_prior_row_has_a_contract_case():
    assert set(PRIORS) == {"world", "sd", "learned"}


@pytest.mark.parametrize("name", list(PRIORS))
def test_every_prior_row_declares_its_capabilities(prior_of_row, name):
    prior = prior_of_row(name)
    assert isinstance(prior, DiffusionPrior)
    for cap in PRIOR_CAPABILITIES:  # declared on the interface, so never missing
        assert hasattr(DiffusionPrior, cap), cap
    assert prior.eps_phi_kind in EPS_PHI_BUILDERS
    assert isinstance(prior.supports_negative, bool)
    assert isinstance(prior.vmap_encode, bool)
    assert prior.probe_chunk is None or (
        isinstance(prior.probe_chunk, int) and prior.probe_chunk > 0
    )
    assert prior.shape is None or (len(prior.shape) == 3 and min(prior.shape) > 0)
    # the declared space is what encode gives
    rgb = torch.rand(2, 3, H, W)
    x = prior.encode(rgb)
    assert tuple(x.shape) == (2, *prior.space_shape(H, W))
    if prior.vmap_encode:
        vmapped = torch.func.vmap(lambda r: prior.encode(r[None])[0])(rgb)
        torch.testing.assert_close(vmapped, x)
    ctx = PriorContext(PROMPT, _cameras())
    t = torch.tensor([500, 500])
    if prior.supports_negative:
        eps = prior.predict_negative(x, t, ctx, "{prompt}, blurry")
        assert eps.shape == x.shape and torch.isfinite(eps).all()
    else:
        with pytest.raises(NotImplementedError):
            prior.predict_negative(x, t, ctx, "")
    if prior.eps_phi_kind == "lora":
        assert isinstance(prior.denoiser(), torch.nn.Module)
    prior.prepare([PROMPT, "a prompt no prior knows"])  # an unknown prompt is the cell's error


def _backbone(name: str) -> Backbone:
    spec = BACKBONES[name]
    config = spec.config_class(**BACKBONE_CONFIGS[name])
    build = BackboneBuild(config, H, W, torch.device("cpu"), torch.Generator().manual_seed(0))
    return spec.build(build)


def test_every_backbone_row_has_a_contract_case():
    assert set(BACKBONE_CONFIGS) == set(BACKBONES)


_MODULE_INTERNALS = set(vars(torch.nn.Module()))


def _plain_attributes(module: torch.nn.Module) -> str:
    """The instance attributes torch.nn.Module does not manage, private ones included
    (parameters, buffers and submodules are compared through ``state_dict``)."""
    return repr({k: v for k, v in vars(module).items() if k not in _MODULE_INTERNALS})


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_row_declares_its_capabilities_and_keeps_no_hidden_state(name):
    backbone = _backbone(name)
    for cap in BACKBONE_CAPABILITIES:
        assert hasattr(Backbone, cap), cap
    assert isinstance(backbone.supports_vmap, bool)
    assert isinstance(backbone.variable_rows, tuple)
    state_keys = set(backbone.state_dict())
    assert set(backbone.variable_rows) <= state_keys
    # two calls of render with the same input give the same images, and neither changes the
    # backbone (no flag set by one call and read by the next)
    cameras = _cameras()
    plain = _plain_attributes(backbone)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    info: dict = {}
    first = backbone.render(cameras, H, W, info=info)
    second = backbone.render(cameras, H, W)
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    torch.testing.assert_close(backbone.state_dict(), before, rtol=0, atol=0)
    assert _plain_attributes(backbone) == plain
    # the training strategy hands its state in and out
    optimizer = torch.optim.Adam(backbone.param_groups())
    state = backbone.initialize_state()
    assert isinstance(state, dict)
    state = backbone.step_pre_render(optimizer, state, 0)
    info = {}
    out = backbone.render(cameras, H, W, info=info)
    state = backbone.step_pre_backward(optimizer, state, 0, info)
    out["rgb"].sum().backward()
    state = backbone.step_post_backward(optimizer, state, 0, info)
    assert isinstance(state, dict)
    # what one step hands the next travels in ``state``, not in the backbone's attributes
    assert _plain_attributes(backbone) == plain


#: attributes the capability declarations replaced: read as attributes, never probed
_DECLARED = {
    "shape",
    "references",
    "vmap_encode",
    "probe_chunk",
    "supports_negative",
    "supports_vmap",
    "eps_phi_kind",
    "render",
}


def test_no_getattr_probing_of_capabilities():
    """No ``getattr(obj, "<capability>", default)`` or ``hasattr(obj, "<capability>")`` in the
    source packages: the interfaces declare them with defaults."""
    found = []
    packages = [p.parent for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"]
    for path in sorted(f for package in packages for f in package.rglob("*.py")):
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr"}
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in _DECLARED
            ):
                found.append(f"{rel}:{node.lineno}")
    assert found == []
