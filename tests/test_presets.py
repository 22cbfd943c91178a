"""The shipped config presets load, and 'matched' really shares guidance across methods."""

from pathlib import Path

import pytest

from benchmark.run.config import RunConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = ("cfg_mode", "guidance_scale", "weighting", "t_min", "t_max", "t_max_final")


PRESETS = sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sweep"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads(name):
    """Every run preset in configs/ loads (sweep specs, sweep_*.yaml, are tested in
    tests/test_sweep.py)."""
    assert isinstance(load_config(str(CONFIGS / name)), RunConfig)


def test_matched_preset_shares_guidance():
    config = load_config(str(CONFIGS / "matched.yaml"))
    for key in SHARED:
        assert getattr(config.sds, key) == getattr(config.vsd, key) == getattr(config.ssd, key)
    assert config.sds == load_config(None).sds  # the world default is the matched preset


def test_reference_preset_is_threestudio():
    config = load_config(str(CONFIGS / "reference.yaml"))
    assert (config.sds.cfg_mode, config.sds.guidance_scale) == ("dreamfusion", 100.0)
    assert (config.vsd.cfg_mode, config.vsd.guidance_scale) == ("diffusers", 7.5)
    assert config.vsd.t_max_final == 0.5


FAMILY = ("csd", "nfsd", "ism", "sdi", "asd", "cds", "esd", "bridge")


def test_matched_preset_covers_the_family():
    """The family shares w(t) and the t range with SDS, and CFG where the method has one."""
    config = load_config(str(CONFIGS / "matched.yaml"))
    for name in FAMILY:
        section = getattr(config, name)
        for key in ("weighting", "t_min", "t_max", "t_max_final", "cfg_mode", "guidance_scale"):
            assert getattr(section, key) == getattr(config.sds, key), (name, key)
    assert config.sdi.t_anneal is False


@pytest.mark.parametrize("name", FAMILY)
def test_family_paper_presets(name):
    """configs/<method>.yaml sets that method's section away from the world defaults."""
    config = load_config(str(CONFIGS / f"{name}.yaml"))
    assert getattr(config, name) != getattr(load_config(None), name)
