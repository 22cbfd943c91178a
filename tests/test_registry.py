"""The registries: every method's cost model against the counters of real steps, the run
config's sections and the CLI's method check derived from the rows, and a builder per row."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from backbones.registry import BACKBONES
from benchmark.run.config import load_config
from benchmark.run.factories import PRIORS, build_estimator, method_config, validate_methods
from benchmark.run.trainer import CellTrainer
from core.errors import UserError
from estimators.registry import METHODS

SMALL = [
    "voxel.resolution=8",
    "voxel.n_samples=16",
    "render.height=16",
    "render.width=16",
    "eval.snapshots=false",
]
# (method, overrides): each CFG regime and the knobs a cost model reads
CASES = [
    ("sds", []),
    ("sds", ["sds.guidance_scale=7.5"]),
    ("vsd", []),
    ("vsd", ["vsd.guidance_scale=7.5", "vsd.updates_per_step=2"]),
    ("ssd", []),
    ("ssd", ["ssd.baseline=constant", "ssd.guidance_scale=3", "ssd.cfg_mode=dreamfusion"]),
    ("ssd", ["ssd.baseline=learned"]),
    ("ssd", ["ssd.baseline=learned", "ssd.learned_field=vector", "ssd.noise_samples=2"]),
    # the responsibilities' Stein fields: no network evaluation beyond the prior's
    ("ssd", ["ssd.baseline=posterior", "ssd.mu=optimal", "ssd.guidance_scale=7.5"]),
    ("csd", []),
    ("nfsd", []),
    ("asd", []),
    ("cds", []),
    ("esd", []),
    ("esd", ["esd.guidance_scale=7.5"]),  # ESD's own conditional call serves both branches
    ("bridge", []),  # before its switch step
    # CARV's levers (estimators/sampling.py): K draws per render
    ("sds", ["sds.noise_samples=3", "sds.t_importance=true"]),
    ("vsd", ["vsd.noise_samples=2", "vsd.guidance_scale=7.5"]),
    ("ssd", ["ssd.noise_samples=2", "ssd.t_stratified=true"]),
    ("esd", ["esd.noise_samples=2", "esd.guidance_scale=7.5", "esd.updates_per_step=2"]),
]
#: methods whose cost depends on t: checked against the worst case (SDI's model gives it; ISM's
#: model is the mean over t, its class gives the count at the largest t)
T_DEPENDENT = {"sdi", "ism"}


def test_every_method_has_a_case_here():
    assert {m for m, _ in CASES} | T_DEPENDENT == set(METHODS)


@pytest.mark.parametrize("method", sorted(T_DEPENDENT))
def test_t_dependent_cost_model_is_an_upper_bound(world_prior_small, method):
    config = load_config(None, [*SMALL, "camera.batch_size=2"])
    trainer = CellTrainer(config, method, "a snowman", 0, world_prior_small, torch.device("cpu"))
    before = world_prior_small.n_evals
    trainer.step(0)
    section = method_config(config, method)
    bound = METHODS[method].nfe_per_step(section, world_prior_small)
    if method == "ism":
        from estimators.ism import ISM

        bound = ISM.nfe_per_step(section, t=world_prior_small.num_train_timesteps - 1)
    assert 0 < (world_prior_small.n_evals - before) / 2 <= bound["prior"]


@pytest.mark.parametrize(("method", "overrides"), CASES, ids=lambda v: str(v))
def test_cost_model_matches_the_counters_of_real_steps(world_prior_small, method, overrides):
    """Network evaluations of two training steps (batch 2) by kind == 2 x B x nfe_per_step."""
    config = load_config(None, [*SMALL, "camera.batch_size=2", *overrides])
    trainer = CellTrainer(config, method, "a snowman", 0, world_prior_small, torch.device("cpu"))
    prior_before = world_prior_small.n_evals
    own_before = trainer.estimator.network_evaluations()
    for step in range(2):
        trainer.step(step)
    measured = {"prior": world_prior_small.n_evals - prior_before}
    for kind, count in trainer.estimator.network_evaluations().items():
        measured[kind] = count - own_before.get(kind, 0)
    expected = METHODS[method].nfe_per_step(method_config(config, method), world_prior_small)
    per_step_and_image = {k: v / 4 for k, v in measured.items()}
    assert per_step_and_image == {k: v for k, v in expected.items() if v or k in measured}


def test_config_sections_come_from_the_registries():
    config = load_config(None, [])
    assert set(config.sections()) == set(METHODS) | set(BACKBONES)
    for name, spec in METHODS.items():
        assert isinstance(method_config(config, name), spec.config_class)
    names = {f.name for f in dataclasses.fields(config)}
    assert set(METHODS) <= names and set(BACKBONES) <= names


def test_validate_methods_names_the_registry():
    assert validate_methods(["ssd", "sds", "ssd"]) == ["ssd", "sds"]
    with pytest.raises(UserError, match="known methods: " + ", ".join(METHODS)):
        validate_methods(["nope"])


@pytest.mark.parametrize("method", list(METHODS))
def test_every_row_builds_an_estimator_whose_grad_is_pure(world_prior_small, method):
    """The builder works, and grad() leaves the estimator's state untouched (only counters)."""
    from estimators.base import EstimatorContext

    config = load_config(None, SMALL)
    gen = torch.Generator().manual_seed(0)
    est = build_estimator(method, config, world_prior_small, gen, "cpu")
    before = est.state_dict()
    x = torch.rand(1, 3, 16, 16)
    t = torch.tensor([500])
    eps = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    cameras = world_prior_small.reference_cameras[[0]]
    ctx = EstimatorContext("a snowman", cameras, render={"depth": torch.ones(1, 1, 16, 16)})
    out = est.grad(x, t, eps, world_prior_small, ctx)
    assert out.grad.shape == x.shape and torch.isfinite(out.grad).all()
    after = est.state_dict()
    counters = {"n_evals", "n_evals_depth"}

    def strip(state):
        if isinstance(state, dict):
            return {k: strip(v) for k, v in state.items() if k not in counters}
        return state

    torch.testing.assert_close(strip(after), strip(before), rtol=0, atol=0, equal_nan=True)


def test_priors_table():
    assert set(PRIORS) == {"world", "sd", "learned"}


def test_run_help_names_every_method_and_backbone():
    """``run --help`` lists the registries' names (written out there so --help needs no
    torch import)."""
    import argparse

    from benchmark.cli.parser import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    help_text = " ".join(commands.choices["run"].format_help().split())
    for name in (*METHODS, *BACKBONES):
        assert name in help_text, name


def test_a_cost_that_changes_during_the_run_is_averaged_over_its_steps(world_prior_small):
    """SDS-Bridge costs 1 evaluation per image before its switch step and 2 after: over 4
    steps with the switch at 1 the counters give (1 + 2 + 2 + 2) / 4 = 1.75 per step and
    image, which is the run's cost model (what the manifest records)."""
    config = load_config(None, [*SMALL, "camera.batch_size=2", "bridge.switch_step=1"])
    trainer = CellTrainer(config, "bridge", "a snowman", 0, world_prior_small, torch.device("cpu"))
    before = world_prior_small.n_evals
    for step in range(4):
        trainer.step(step)
    measured = (world_prior_small.n_evals - before) / (4 * 2)
    spec = METHODS["bridge"]
    model = spec.mean_nfe_per_step(method_config(config, "bridge"), world_prior_small, 4)
    assert measured == model["prior"] == 1.75
    assert spec.nfe_per_step(method_config(config, "bridge"), world_prior_small)["prior"] == 1


#: ESD's cost per image and step, (prior, phi), by eps_phi kind; the residual rows are the
#: counters' (test_cost_model_matches_the_counters_of_real_steps, tests/test_family.py), the LoRA
#: rows tests/test_real_models.py's. s = 1 and lambda = 1 read as before ESD's second cost model
#: (a classmethod) went; with CFG on the residual prior count was one too many (5), with LoRA one
#: too few (2), and K draws paid one camera-free branch instead of K.
ESD_COSTS = [
    ({}, (2, 3), (1, 3)),
    ({"camera_cfg": 1.0}, (2, 2), (1, 2)),
    ({"camera_cfg": 1.0, "guidance_scale": 7.5}, (4, 2), (2, 2)),
    ({"guidance_scale": 7.5}, (4, 3), (3, 3)),
    ({"guidance_scale": 7.5, "noise_samples": 2, "updates_per_step": 2}, (8, 6), (6, 6)),
]


@pytest.mark.parametrize(("kwargs", "residual", "lora"), ESD_COSTS)
def test_esd_cost_model_table(kwargs, residual, lora):
    from types import SimpleNamespace

    from estimators.esd import ESDConfig

    config, spec = ESDConfig(**kwargs), METHODS["esd"]
    for prior, want in ((None, residual), (SimpleNamespace(eps_phi_kind="lora"), lora)):
        cost = spec.nfe_per_step(config, prior)
        assert (cost["prior"], cost["phi"], cost["depth"]) == (*want, 0)
