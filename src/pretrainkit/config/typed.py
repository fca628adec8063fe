"""Turn plain dicts (YAML) into typed, validated dataclasses; unknown keys get a suggestion."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from pretrainkit.errors import ConfigError, closest

T = TypeVar("T")
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``; every way it fails is one ConfigError naming ``where``.

    PyYAML's safe constructors raise more than ``YAMLError`` on some well-formed input
    (``2023-13-45`` is a ValueError, ``!!timestamp x`` an AttributeError, ``!!int ''`` an
    IndexError, deep nesting a RecursionError): a user's file gets a clear line either way.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {error}") from None
    except (ValueError, TypeError, AttributeError, LookupError, OverflowError) as error:
        raise ConfigError(f"{where}: not valid YAML: a value cannot be read ({error})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None


def read_yaml_file(path: str | os.PathLike, where: str | None = None) -> Any:
    """The YAML document of a UTF-8 file; a ConfigError naming the file when it is missing,
    unreadable, not UTF-8 or not valid YAML."""
    where = where or str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a folder, expected a YAML file") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where}: not UTF-8 (byte offset {error.start})") from None
    return load_yaml(text, where)


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``where`` names the place for error messages."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key {key!r}{closest(str(key), fields)}; "
                f"valid keys: {', '.join(fields)}"
            )
    kwargs = {}
    for name in fields:
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``, converting ints to floats where allowed."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer of 309 digits or more
            raise ConfigError(f"{where}: {value} is too large for a float") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def to_dict(obj: Any) -> Any:
    """Inverse of ``from_dict``: plain dicts and lists, ready for YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: Mapping[str, Any]) -> dict:
    """Set dotted keys (``encoder.num_layers``) in a nested dict; returns a new dict."""
    import copy

    if overrides and not isinstance(data, dict):
        raise ConfigError(
            f"overrides {', '.join(overrides)}: expected a mapping to set them in, "
            f"got {type(data).__name__}"
        )
    result = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                node[part] = {} if part not in node else node[part]
                if not isinstance(node[part], dict):
                    raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
            node = node[part]
        node[parts[-1]] = value
    return result


def check_choice(value: str, choices: typing.Iterable[str], key: str) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"{key}: {value!r} is not one of {', '.join(choices)}{closest(value, choices)}"
        )


def check_range(value: float | int, key: str, low: float | None = None, high: float | None = None):
    """Raise ConfigError unless ``low <= value <= high`` (either bound may be None); NaN and
    infinities are never in range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{key}: {value!r} is outside {bounds}")
