"""Typed physics parameters built from a plain mapping (a device config), with errors that name the field."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .points import ConfigError

P = TypeVar("P")


def build_params(cls: type[P], data: Mapping[str, Any], what: str) -> P:
    """Build dataclass `cls` from `data`; unknown keys and badly typed values raise ConfigError naming them."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(what, f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, raw in data.items():
        kwargs[key] = _convert(f"{what}.{key}", hints[key], raw)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(what, str(exc)) from None


def _convert(name: str, hint: Any, raw: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, inner[0], raw)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(name, f"expected true or false, got {raw!r}")
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ConfigError(name, f"expected a finite number, got {raw!r}")
        return float(raw)
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(name, f"expected an integer, got {raw!r}")
        return raw
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(name, f"expected a string, got {raw!r}")
        return raw
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(name, f"expected a list, got {raw!r}")
        return tuple(raw)
    return raw


def require(condition: bool, message: str) -> None:
    """Raise ConfigError unless condition holds; used by parameter __post_init__ checks. The message starts
    with the parameter's name ("<name> must ..."), which becomes the error's key."""
    if not condition:
        key = message.split(" ", 1)[0].rstrip(":")
        raise ConfigError(key, message)
