"""Point specifications of simulated devices: type, writability, physical limits and value coercion."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from dr_common.config import ConfigError

Value = Union[float, bool]

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


__all__ = ["ConfigError", "PointError", "PointSpec", "Value", "check_range", "coerce"]


class PointError(ValueError):
    """A read or write of a point was refused; nothing was changed."""


@dataclass(frozen=True)
class PointSpec:
    """One point of a device model: how to read it, whether and how it may be written."""

    name: str
    kind: str  # "float" or "bool"
    getter: Callable[[], Value]
    setter: Callable[[Value], None] | None = None
    minimum: float | None = None
    maximum: float | None = None
    units: str = ""

    @property
    def writable(self) -> bool:
        return self.setter is not None

    @property
    def python_type(self) -> type:
        return bool if self.kind == "bool" else float


def coerce(spec: PointSpec, value: object) -> Value:
    """Convert a written value to the point's type or raise PointError naming the point."""
    if spec.kind == "bool":
        return to_bool(spec.name, value)
    return to_float(spec.name, value)


def to_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PointError(f"{name}: expected a boolean (true/false, on/off, 1/0), got {value!r}")


def to_float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise PointError(f"{name}: expected a number, got boolean {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise PointError(f"{name}: expected a number, got {value!r}") from None
    else:
        raise PointError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise PointError(f"{name}: expected a finite number, got {value!r}")
    return number


def check_range(name: str, value: float, minimum: float | None, maximum: float | None, units: str = "") -> None:
    """Raise PointError when value lies outside [minimum, maximum] (either bound may be open)."""
    unit = f" {units}" if units else ""
    if minimum is not None and value < minimum:
        raise PointError(f"{name}: {value:g}{unit} is below the minimum {minimum:g}{unit}")
    if maximum is not None and value > maximum:
        raise PointError(f"{name}: {value:g}{unit} is above the maximum {maximum:g}{unit}")
