"""Strict loading of nested frozen dataclasses from parsed YAML.

A small replacement for a validation library: every profile key maps to a
typed dataclass field; unknown keys, wrong types and failed checks raise
ConfigError with the dotted key path, so the caller can name file and key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(Exception):
    """A profile value is wrong. `path` is the dotted key path inside the file."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class InvalidKeyError(ValueError):
    """Raised by a check or __post_init__ to blame a key below the one checked
    (a list item, or one field of a cross-field rule)."""

    def __init__(self, key: str | int, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


Check = Callable[[Any], None]

# Kubernetes integer fields (replicas, ports, seconds) are int32.
INT32_MAX = 2**31 - 1


def check(*checks: Check, default: Any = dataclasses.MISSING,
          factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value must pass every check (each raises ValueError)."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"checks": checks})
    return dataclasses.field(default=default, metadata={"checks": checks})


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if path and key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}" if path else key


def show(value: object, limit: int = 60) -> str:
    """A value for a message: quoted and escaped like Python's ascii(), at most `limit` characters."""
    text = getattr(value, "text", None)  # a YAML number as it was written (yamlsafe.SourceFloat)
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif value is None:
        shown = "null"
    elif isinstance(text, str):
        shown = text
    elif isinstance(value, (dict, Mapping)):
        shown = "a mapping"
    elif isinstance(value, (list, tuple)):
        shown = "a list"
    else:
        # Credentials in a URL (scheme://user:password@host) never reach a message.
        shown = ascii(_CREDENTIALS.sub("***@", value) if isinstance(value, str) else value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {show(value)}"
    if isinstance(value, (int, float)):
        return f"the number {show(value)}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"the text {show(value)}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (dict, Mapping)):
        return "a mapping"
    return "a value of another kind"


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(tp, "a value")


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
    if value is None:
        raise ConfigError(path, f"a value is required here: {_type_name(tp)} (got nothing)")
    if origin is Literal:
        allowed = get_args(tp)
        if not isinstance(value, (str, int)) or value not in allowed \
                or isinstance(value, bool) != isinstance(allowed[0], bool):
            hint = _did_you_mean(value, [str(a) for a in allowed])
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in allowed)}{hint} (got {show(value)})")
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list (got {_describe(value)})")
        (item_type, *_rest) = get_args(tp)
        return tuple(_convert(item_type, item, _join(path, i)) for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping (got {_describe(value)})")
        _key_type, value_type = get_args(tp)
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(path, f"keys must be text (got {show(key)})")
            converted[key] = _convert(value_type, item, _join(path, key))
        return types.MappingProxyType(converted)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false (got {_describe(value)})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be a whole number (got {_describe(value)})")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise ConfigError(path, f"must be at most {INT32_MAX} in size (got {show(value)})")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number (got {_describe(value)})")
        if isinstance(value, int) and abs(value) > 2**53:
            raise ConfigError(path, f"is too large (got {show(value)})")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(path, f"must be a finite number (got {show(value)})")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            # YAML reads 1.10 as 1.1 and 1:30 as 90; stringifying would change
            # what the user wrote, so the text must be quoted.
            kind = "a boolean" if isinstance(value, bool) else "a number"
            raise ConfigError(path, f"must be text, but YAML reads an unquoted {show(value)} as {kind}:"
                                    f" put it in quotes, e.g. \"{show(value)}\"")
        raise ConfigError(path, f"must be text (got {_describe(value)})")
    raise TypeError(f"unsupported type {tp!r} at {path}")


def _did_you_mean(value: object, choices: list[str]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.lower() == value.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def _convert_dataclass(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping of keys (got {_describe(value)})")
    hints = get_type_hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    unknown = sorted((k for k in value if k not in fields), key=str)
    if unknown:
        key = unknown[0]
        hint = _did_you_mean(key, sorted(fields))
        names = ", ".join(sorted(fields))
        if len(names) > 150:
            names = names[:150].rsplit(",", 1)[0] + ", ..."
        allowed = "" if hint else f" (allowed: {names})"
        raise ConfigError(_join(path, _key_text(key)), f"unknown key{hint}{allowed}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key_path = _join(path, name)
        if name not in value:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(key_path, f"is required: {_type_name(hints[name])} (missing)")
            continue
        converted = _convert(hints[name], value[name], key_path)
        for rule in field.metadata.get("checks", ()):
            try:
                rule(converted)
            except InvalidKeyError as err:
                raise ConfigError(_join(key_path, err.key), err.message) from None
            except ValueError as err:
                raise ConfigError(key_path, str(err)) from None
        kwargs[name] = converted
    try:
        return tp(**kwargs)
    except InvalidKeyError as err:
        raise ConfigError(_join(path, err.key), err.message) from None
    except ValueError as err:
        # __post_init__ cross-field checks inside one mapping.
        raise ConfigError(path, str(err)) from None


def _key_text(key: object) -> str:
    text = str(key)
    shown = text if text.isascii() and text.isprintable() else ascii(text)[1:-1]
    return shown if len(shown) <= 60 else shown[:57] + "..."


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
# Patterns are applied with fullmatch: `$` in re.match lets a trailing newline pass.

# apimachinery resource.Quantity: <signedNumber><suffix>, where suffix is a
# binary SI, a decimal SI or a decimal exponent (e<signed integer>).
_QUANTITY = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Kubernetes caps quantities at 2^63-1 and rounds below 3 decimal places; an
# exponent beyond this range can only be one of those silent changes.
_MAX_EXPONENT = 30
QUANTITY_MAX = Decimal(2**63 - 1)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def quantity_value(value: str) -> Decimal:
    """A Kubernetes quantity as an exact decimal in base units (cores or bytes)."""
    match = _QUANTITY.fullmatch(value) if len(value) <= 64 else None
    if not match:
        raise ValueError(f"not a Kubernetes quantity (e.g. 250m, 512Mi, 2Gi) (got {show(value)})")
    sign, digits, suffix = match.group(1), match.group(2), match.group(3) or ""
    number = Decimal(digits) * (-1 if sign == "-" else 1)
    if suffix in _BINARY:
        result = number * _BINARY[suffix]
    else:
        exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"the exponent is out of range (got {show(value)})")
        result = number.scaleb(exponent)
    if abs(result) > QUANTITY_MAX:
        raise ValueError(f"is larger than Kubernetes allows (2^63-1) (got {show(value)})")
    if result != result.quantize(Decimal("0.001"), rounding=ROUND_FLOOR):
        raise ValueError(f"has more than 3 decimal places; Kubernetes would round it up (got {show(value)})")
    return result


def quantity(value: str) -> None:
    quantity_value(value)


def positive_quantity(value: str) -> None:
    if quantity_value(value) <= 0:
        raise ValueError(f"must be greater than zero (got {show(value)})")


def parse_quantity(value: str) -> float:
    """Quantity as a float in base units (cores or bytes)."""
    return float(quantity_value(value))


def at_least(minimum: int) -> Check:
    def rule(value: int) -> None:
        if value < minimum:
            raise ValueError(f"must be >= {minimum} (got {show(value)})")
    return rule


def between(low: float, high: float) -> Check:
    def rule(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {show(value)})")
    return rule


def matches(pattern: str, hint: str, max_length: int = 253) -> Check:
    compiled = re.compile(pattern)

    def rule(value: str) -> None:
        if len(value) > max_length or not compiled.fullmatch(value):
            raise ValueError(f"{hint} (got {show(value)})")
    return rule


def dns_label(value: str) -> None:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"must be a DNS label (lowercase letters, digits, '-'; max 63) (got {show(value)})")


def dns_name(value: str) -> None:
    """A DNS subdomain (RFC 1123): dot-separated DNS labels, at most 253 characters."""
    labels = value.split(".")
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a lowercase DNS name (labels of letters, digits and '-', each at most 63,"
                         f" 253 in all) (got {show(value)})")


def non_empty(value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")
