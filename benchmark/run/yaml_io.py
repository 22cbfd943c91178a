"""Reading user YAML files (run configs, sweep specs) with one-line errors. No torch."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.errors import ConfigError


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The mapping in YAML file ``path`` ({} for an empty file); ``what`` names the file in
    errors ("config file", "sweep spec"): missing, unreadable, not UTF-8, not YAML (with line
    and column) or not a mapping are one-line ConfigErrors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        # str(exc) spans several lines; user errors are one line.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return loaded
