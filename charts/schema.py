"""Strict loading of nested frozen dataclasses from parsed YAML.

A small replacement for a validation library: every profile key maps to a
typed dataclass field; unknown keys, wrong types and failed checks raise
ConfigError with the dotted key path, so the caller can name file and key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(Exception):
    """A profile value is wrong. `path` is the dotted key path inside the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


Check = Callable[[Any], None]


def check(*checks: Check, default: Any = dataclasses.MISSING,
          factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value must pass every check (each raises ValueError)."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"checks": checks})
    return dataclasses.field(default=default, metadata={"checks": checks})


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def build(tp: type[T], data: Any, path: str = "") -> T:
    """Build an instance of `tp` from plain data, rejecting anything unexpected."""
    return typing.cast(T, _convert(tp, data, path))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path)
        raise TypeError(f"unsupported union {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in allowed)} (got {value!r})")
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        (item_type, *_rest) = get_args(tp)
        return tuple(_convert(item_type, item, _join(path, i)) for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_describe(value)}")
        _key_type, value_type = get_args(tp)
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(path, f"keys must be strings (got {key!r})")
            converted[key] = _convert(value_type, item, _join(path, key))
        return types.MappingProxyType(converted)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected a boolean, got {_describe(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_describe(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {_describe(value)} {value!r}")
        return float(value)
    if tp is str:
        # YAML turns 10m into a string but 50 into an int; quantities are strings
        # in the model, so accept plain numbers and keep their text.
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(path, f"expected a string, got {_describe(value)}")
        return str(value)
    raise TypeError(f"unsupported type {tp!r} at {path}")


def _convert_dataclass(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a mapping, got {_describe(value)}")
    hints = get_type_hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(_join(path, str(unknown[0])),
                          f"unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key_path = _join(path, name)
        if name not in value:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(key_path, f"required {_type_name(hints[name])} is missing")
            continue
        converted = _convert(hints[name], value[name], key_path)
        for rule in field.metadata.get("checks", ()):
            try:
                rule(converted)
            except ValueError as err:
                raise ConfigError(key_path, str(err)) from None
        kwargs[name] = converted
    try:
        return tp(**kwargs)
    except ValueError as err:
        # __post_init__ cross-field checks inside one mapping.
        raise ConfigError(path, str(err)) from None


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in `override` replace the base value."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Reusable value checks. Each raises ValueError with a message for the user.

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]+|E[0-9]+)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def quantity(value: str) -> None:
    if not _QUANTITY.match(value):
        raise ValueError(f"not a Kubernetes quantity: {value!r} (e.g. 250m, 512Mi, 2Gi)")


def positive_quantity(value: str) -> None:
    quantity(value)
    if parse_quantity(value) <= 0:
        raise ValueError(f"must be greater than zero (got {value!r})")


def parse_quantity(value: str) -> float:
    """Quantity as a float in base units (cores or bytes)."""
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = float(match.group(1)), match.group(2) or ""
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    if suffix in binary:
        return number * binary[suffix]
    if suffix in decimal:
        return number * decimal[suffix]
    return number * 10 ** int(suffix[1:])


def at_least(minimum: int) -> Check:
    def rule(value: int) -> None:
        if value < minimum:
            raise ValueError(f"must be >= {minimum} (got {value})")
    return rule


def between(low: int, high: int) -> Check:
    def rule(value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
    return rule


def matches(pattern: str, hint: str) -> Check:
    compiled = re.compile(pattern)

    def rule(value: str) -> None:
        if not compiled.fullmatch(value):
            raise ValueError(f"{hint} (got {value!r})")
    return rule


def dns_label(value: str) -> None:
    if not _DNS_LABEL.match(value):
        raise ValueError(f"must be a DNS label (lowercase letters, digits, '-'; max 63) (got {value!r})")


def dns_name(value: str) -> None:
    if not _DNS_NAME.match(value):
        raise ValueError(f"must be a lowercase DNS name (got {value!r})")


def non_empty(value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")
