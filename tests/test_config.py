"""RunConfig loading: defaults, YAML + --set + CLI precedence, strict types, YAML round-trip."""

from __future__ import annotations

import pytest

from benchmark.run.config import RunConfig, config_to_yaml, load_config
from core.errors import ConfigError, UserError


def test_defaults_load():
    config = load_config()
    assert config == RunConfig()
    assert config.methods == ["sds"]
    assert config.steps == 300
    assert config.seeds == [0]
    assert config.device == "cpu"
    assert config.backbone == "voxel" and config.prior == "world"


def test_none_cli_values_keep_defaults():
    assert load_config(None, [], steps=None, seeds=None, device=None) == RunConfig()


def test_precedence_file_then_set_then_cli(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "steps: 10\n"
        "seeds: [1, 2]\n"
        "device: cpu\n"
        "sds:\n"
        "  guidance_scale: 3.0\n"
        "  t_min: 0.1\n"
        "render:\n"
        "  height: 16\n",
        encoding="utf-8",
    )
    config = load_config(
        str(path),
        ["steps=20", "sds.guidance_scale=5", "render.width=24"],
        steps=30,
        seeds=None,
    )
    assert config.steps == 30  # CLI beats --set beats file
    assert config.sds.guidance_scale == 5.0  # --set beats file
    assert config.sds.t_min == 0.1  # --set on a sibling key keeps the file's value
    assert config.seeds == [1, 2]  # file beats defaults; CLI None does not override
    assert config.render.height == 16 and config.render.width == 24
    assert config.sds.t_max == RunConfig().sds.t_max  # untouched keys keep defaults

    only_file = load_config(str(path))
    assert only_file.steps == 10 and only_file.sds.guidance_scale == 3.0


def test_later_set_wins():
    assert load_config(None, ["steps=5", "steps=7"]).steps == 7


def test_set_float_value():
    config = load_config(None, ["sds.guidance_scale=7.5"])
    assert config.sds.guidance_scale == 7.5
    assert type(config.sds.guidance_scale) is float


def test_set_literal_rejects_unknown_choice():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["sds.cfg_mode=bogus"])
    message = str(info.value)
    assert "sds.cfg_mode" in message and "'bogus'" in message
    assert "'diffusers'" in message and "'dreamfusion'" in message


def test_set_literal_accepts_known_choice():
    assert load_config(None, ["sds.cfg_mode=dreamfusion"]).sds.cfg_mode == "dreamfusion"


def test_int_accepted_for_float_field():
    config = load_config(None, ["sds.guidance_scale=7"])
    assert config.sds.guidance_scale == 7.0
    assert type(config.sds.guidance_scale) is float


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        pytest.param("steps=2.5", "'steps'", "integer", id="float-to-int"),
        pytest.param("steps=true", "'steps'", "integer", id="bool-to-int"),
        pytest.param("render.height=false", "'render.height'", "integer", id="bool-to-nested-int"),
        pytest.param(
            "sds.guidance_scale=true", "'sds.guidance_scale'", "number", id="bool-to-float"
        ),
        pytest.param("steps=abc", "'steps'", "integer", id="str-to-int"),
        pytest.param("eval.snapshots=1", "'eval.snapshots'", "true/false", id="int-to-bool"),
        pytest.param(
            "camera.elevation_range=abc", "'camera.elevation_range'", "list", id="str-to-tuple"
        ),
        pytest.param(
            "camera.elevation_range=[0, 10, 20]",
            "'camera.elevation_range'",
            "2 items",
            id="tuple-len",
        ),
        pytest.param(
            "camera.elevation_range=[0]", "'camera.elevation_range'", "2 items", id="tuple-short"
        ),
        pytest.param(
            "camera.elevation_range=[0, x]",
            "'camera.elevation_range[1]'",
            "number",
            id="tuple-item",
        ),
        pytest.param("seeds=[0, 1.5]", "'seeds[1]'", "integer", id="list-item"),
    ],
)
def test_bad_value_types_rejected(override, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert key in message and expected in message, message
    assert "\n" not in message


def test_tuple_from_list():
    config = load_config(None, ["camera.elevation_range=[0, 45]"])
    assert config.camera.elevation_range == (0.0, 45.0)
    assert all(type(v) is float for v in config.camera.elevation_range)


def test_optional_field_accepts_null_and_number():
    assert load_config(None, ["sds.t_max_final=0.5"]).sds.t_max_final == 0.5
    assert load_config(None, ["sds.t_max_final=null"]).sds.t_max_final is None


def test_post_init_validation_is_config_error():
    with pytest.raises(ConfigError, match="steps"):
        load_config(None, [], steps=0)
    with pytest.raises(ConfigError, match="t_min"):
        load_config(None, ["sds.t_min=0.9", "sds.t_max=0.1"])


def test_unknown_nested_key_names_dotted_key_and_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["sds.guidance_scle=7.5"])
    message = str(info.value)
    assert "'sds.guidance_scle'" in message
    for valid in ("guidance_scale", "cfg_mode", "t_min", "t_max", "weighting"):
        assert valid in message, message


def test_unknown_deep_key_in_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("camera:\n  elevation_rnage: [0, 10]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "'camera.elevation_rnage'" in message
    assert "elevation_range" in message and "batch_size" in message


def test_unknown_top_level_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["foo.bar=1"])
    message = str(info.value)
    assert "'foo'" in message
    for valid in ("steps", "seeds", "methods", "sds", "camera"):
        assert valid in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(["steps"], "key=value", id="no-equals"),
        pytest.param(["=3"], "bad --set key", id="empty-key"),
        pytest.param(["sds..t_min=0.1"], "bad --set key", id="empty-part"),
        pytest.param(["sds=3", "sds.t_min=0.1"], "not a section", id="scalar-then-section"),
        pytest.param(["sds=3"], "mapping", id="section-not-mapping"),
    ],
)
def test_bad_set_syntax(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("steps: [1,\n  foo: {\n", "not valid YAML", id="malformed"),
        pytest.param("- 1\n- 2\n", "mapping", id="top-level-list"),
    ],
)
def test_bad_yaml_file_is_one_line_error(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(str(path))
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_and_non_utf8_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"steps: \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(path))


def test_empty_config_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load_config(str(path)) == RunConfig()


def test_config_error_is_user_error():
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param([], id="defaults"),
        pytest.param(
            [
                "methods=[sds]",
                "seeds=[3, 1, 2]",
                "steps=17",
                "sds.guidance_scale=7.5",
                "sds.cfg_mode=dreamfusion",
                "sds.t_max_final=0.5",
                "sds.anneal_steps=10",
                "camera.elevation_range=[0, 45]",
                "voxel.background=[0, 0.5, 1]",
                "world.elevations=[5, 15]",
                "eval.snapshots=false",
                "render.height=16",
            ],
            id="customised",
        ),
    ],
)
def test_yaml_round_trip(tmp_path, overrides):
    config = load_config(None, overrides)
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(config), encoding="utf-8")
    again = load_config(config_file=str(path))
    assert again == config
    assert config_to_yaml(again) == config_to_yaml(config)
