"""Strict conversion of plain dicts (YAML, ``--set a.b=c``) into nested dataclasses.

Unknown keys are an error naming the key and the valid ones; values are checked against the
field's annotation (bool, int, float, str, Literal, tuples/lists of those, X | None). Every
number must be finite (NaN and +-inf are rejected unless the field's metadata says
``{ALLOW_NONFINITE: True}``) and every integer must fit in int64; ranges a section needs
beyond that are its dataclass's ``__post_init__`` checks (a ValueError there becomes a
ConfigError naming the section).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from core.errors import ConfigError

#: Field metadata key: ``field(default=..., metadata={ALLOW_NONFINITE: True})`` lets a float
#: field hold NaN or +-inf (none of the shipped configs does).
ALLOW_NONFINITE = "allow_nonfinite"
INT64 = (-(2**63), 2**63 - 1)
#: A decimal number YAML 1.1 reads as a string (``1e-8``, ``1E2``: no dot or no exponent sign).
NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def number_text(value: Any) -> Any:
    """``value`` as a float when it is a string in plain decimal notation that YAML left a
    string (``1e-8``); anything else unchanged.

    >>> number_text("1e-8"), number_text("-2E3"), number_text("abc"), number_text("nan")
    (1e-08, -2000.0, 'abc', 'nan')
    """
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, recursively; missing keys keep defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{path or '<root>'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(
                f"unknown config key '{where}'; valid keys here: {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, value in data.items():
        finite = not fields[name].metadata.get(ALLOW_NONFINITE, False)
        kwargs[name] = convert(hints[name], value, f"{path}.{name}" if path else name, finite)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid config '{path or '<root>'}': {exc}") from None


def convert(annotation: Any, value: Any, path: str, finite: bool = True) -> Any:
    """Check ``value`` against ``annotation`` and convert it (lists -> tuples etc.); with
    ``finite`` a float must not be NaN or +-inf.

    >>> convert(tuple[float, ...], [1, 2.5], "camera.range")
    (1.0, 2.5)
    """
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value) and isinstance(value, annotation):
            return value
        return from_dict(annotation, value, path)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, path, finite)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"bad value for '{path}': {value!r}")
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"bad value for '{path}': {value!r}; expected one of {allowed}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value for '{path}': expected a list, got {value!r}")
        args = get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"bad value for '{path}': expected {len(args)} items, got {len(value)}"
                )
            items = [
                convert(a, v, f"{path}[{i}]", finite)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            ]
        else:
            item_type = args[0] if args else Any
            items = [convert(item_type, v, f"{path}[{i}]", finite) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"bad value for '{path}': expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"bad value for '{path}': expected an integer, got {value!r}")
        if not INT64[0] <= value <= INT64[1]:
            raise ConfigError(f"bad value for '{path}': {value} does not fit in a 64-bit integer")
        return value
    if annotation is float:
        value = number_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"bad value for '{path}': expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if finite and not math.isfinite(number):
            raise ConfigError(f"bad value for '{path}': expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"bad value for '{path}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} at {path}")


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-friendly dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def set_dotted(tree: dict, dotted_key: str, value: Any) -> None:
    """tree['a']['b'] = value for 'a.b' (creating intermediate dicts)."""
    parts = dotted_key.split(".")
    if not all(parts):
        raise ConfigError(f"bad --set key {dotted_key!r}")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted_key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict merge, override wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
