"""Command-line options generated from typed dataclasses (one source of truth)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pretrainkit.config.typed import from_dict, load_yaml, read_yaml_file
from pretrainkit.errors import ConfigError


def option_type(tp: Any):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        base = option_type(inner)

        def optional(text: str):
            return None if text.lower() in ("none", "null") else base(text)

        return optional
    return {int: int, float: float, str: str}.get(tp, str)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) by field name, those of base
    classes included (a subclass's own win)."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    docs.update(_own_field_docs(cls))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, skip: Iterable[str] = (), title: str | None = None
) -> None:
    """One ``--field-name`` option per dataclass field; help from the field's docstring."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = docs.get(f.name, "").replace("%", "%%")
        default = f.default if f.default is not dataclasses.MISSING else None
        default = str(default).replace("%", "%%")  # argparse formats help with %
        if hints[f.name] is bool:
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {default})",
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                type=option_type(hints[f.name]),
                default=argparse.SUPPRESS,
                metavar=f.name.upper(),
                help=f"{help_text} (default: {default})",
            )


def dataclass_from_args(cls: type, namespace: argparse.Namespace, extra: dict | None = None):
    """The dataclass from parsed options; a --config file's values are already the parser's
    defaults (defaults < file < flags), and the dataclass validates the result."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    values.update(extra or {})
    return from_dict(cls, values, cls.__name__)


def read_config_file(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    data = read_yaml_file(p, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def split_model_overrides(extra: list[str]) -> dict[str, Any]:
    """``--model.encoder.num_layers 4`` pairs → ``{"encoder.num_layers": 4}`` (YAML-typed)."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--model."):
            raise ConfigError(f"unrecognised argument {token!r}")
        key, _, value = token[len("--model.") :].partition("=")
        if not _:
            if i + 1 >= len(extra):
                raise ConfigError(f"{token} needs a value")
            value = extra[i + 1]
            i += 1
        overrides[key] = load_yaml(value, f"--model.{key}")
        i += 1
    return overrides


def add_union_options(
    parser: argparse.ArgumentParser, classes: dict[str, type], prefix: str, title: str
) -> None:
    """One flag per field of any of ``classes`` (a choice's name → its options dataclass),
    stored as ``prefix + field`` and only when given; help names the choices that have it."""
    group = parser.add_argument_group(title)
    seen: dict[str, list[str]] = {}
    for owner, cls in classes.items():
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, []).append(owner)
    for owner, cls in classes.items():
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            if seen[f.name][0] != owner:
                continue  # a field several choices share gets one flag
            owners = ", ".join(seen[f.name])
            text = f"{docs.get(f.name, '')} [{owners}; default: {f.default}]".replace("%", "%%")
            flag, dest = "--" + f.name.replace("_", "-"), prefix + f.name
            if hints[f.name] is bool:
                group.add_argument(
                    flag,
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=text,
                )
            else:
                group.add_argument(
                    flag,
                    dest=dest,
                    type=option_type(hints[f.name]),
                    default=argparse.SUPPRESS,
                    metavar=f.name.upper(),
                    help=text,
                )


def given_union_options(
    namespace: argparse.Namespace, prefix: str, cls: type | None, chosen: str
) -> dict[str, Any]:
    """The ``add_union_options`` flags that were given, as field → value; a ConfigError for
    one that the chosen choice's options ``cls`` (None: it has none) do not have."""
    given = {k[len(prefix) :]: v for k, v in vars(namespace).items() if k.startswith(prefix)}
    own = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
    stray = sorted(set(given) - own)
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        valid = ", ".join("--" + k.replace("_", "-") for k in sorted(own)) or "none"
        raise ConfigError(f"{flags} does not apply to {chosen!r} (its options: {valid})")
    return given
