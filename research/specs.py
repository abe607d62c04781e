"""Specs and typed values: how a name with options, or a value from JSON or the command line, becomes a config value.

A choice with several options is a `Spec`, a plain dict `{"name": ..., **options}` written on the command line as
`rope`, `rope:base=500,interleaved=true`, `pkg.mod:Config@k=v` or a JSON object. `resolve_spec` turns it into the
registered frozen config dataclass, checking the name and every option's type (`coerce`). Every error is a
`ConfigError` whose message names the field and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from research.registry import Registry

Spec = dict  # {"name": <registered name or 'pkg.module:Attr'>, **kwargs}


def is_spec_type(hint) -> bool:
    """Whether a field annotation is a Spec (or an optional one)."""
    return hint is Spec or dict in (hint, typing.get_origin(hint), *typing.get_args(hint))


def spec_value(value):
    """A Spec field's value from JSON or the command line: None (or the word none) is None, anything else is
    parsed."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return None
    return parse_spec(value)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and what was expected."""


def parse_spec(value: str | dict) -> Spec:
    """`rope`, `rope:base=500,interleaved=true` or a JSON object -> Spec dict."""
    if isinstance(value, dict):
        return dict(value)
    value = value.strip()
    if value.startswith("{"):
        spec = json.loads(value)
        if "name" not in spec:
            raise ConfigError(f"spec {value!r} has no 'name'")
        return spec
    name, _, rest = value.partition(":") if not _looks_like_import_path(value) else (value, "", "")
    if _looks_like_import_path(value) and "@" in value:  # pkg.mod:Attr@k=v
        name, _, rest = value.partition("@")
    spec: dict[str, Any] = {"name": name}
    for item in filter(None, rest.split(",")):
        key, eq, raw = item.partition("=")
        if not eq:
            raise ConfigError(f"spec {value!r}: expected key=value, got {item!r}")
        spec[key.strip()] = parse_scalar(raw.strip())
    return spec


def _looks_like_import_path(value: str) -> bool:
    head, sep, tail = value.partition(":")
    return bool(sep) and "." in head and "=" not in head and tail[:1].isupper()


def parse_scalar(raw: str) -> Any:
    """Command-line literal -> int / float / bool / None / list (JSON) / str."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def resolve_spec(registry: Registry, spec: Spec | str, *, field: str) -> Any:
    """Spec -> instance of the registered frozen config class; unknown names or keys raise ConfigError."""
    spec = parse_spec(spec)
    if "name" not in spec:
        raise ConfigError(f"{field}: a spec needs a 'name'; valid choices: {', '.join(registry.names())}")
    try:
        cls = registry.get(spec["name"], field=field)
    except KeyError as e:
        raise ConfigError(str(e)) from None
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    valid = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"{field}: {spec['name']!r} has no option(s) {unknown}; valid options: {sorted(valid) or 'none'}"
        )
    kwargs = {k: coerce(v, valid[k].type, f"{field}.{k}", cls) for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{field}: {e}") from None


def coerce(value, annotation, field: str, owner=None):
    """Light type check and conversion for values coming from JSON or the command line."""
    if isinstance(annotation, str):
        hints = typing.get_type_hints(owner) if owner is not None else {}
        annotation = hints.get(field.rsplit(".", 1)[-1], Any)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is dict:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, field)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{field}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{field}: expected a list, written 64,128,256 or [64, 128, 256] (JSON), got {value!r}"
            )
        inner = args[0] if args else Any
        return tuple(coerce(v, inner, field) for v in value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{field}: expected one of {list(args)}, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{field}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{field}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{field}: expected a string, got {value!r}")
        return value
    return value
