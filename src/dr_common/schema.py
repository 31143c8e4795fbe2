"""A small tolerant parser for JSON payloads: field-name variants, numbers as strings, ISO or epoch times.

Keys are matched after normalisation (case, '_', '-' and spaces ignored), so `requestedReductionKw`,
`requested_reduction_kw` and `RequestedReductionKW` are the same field; each field may list other
words that mean the same (`operation` for `op`, `endTime` for `until`). Every failure raises
`PayloadError` naming the canonical field.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dr_common.timeutil import parse_time


class PayloadError(ValueError):
    """A payload that cannot be used; `field` names the offending field ('<payload>' for the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field '{field}': {message}")
        self.field = field
        self.reason = message


_KEY_NOISE = str.maketrans("", "", "_- ")


@functools.lru_cache(maxsize=4096)
def normalize_key(key: str) -> str:
    return key.lower().translate(_KEY_NOISE)


@dataclass(frozen=True)
class Field:
    """One field of a schema. `kind` is one of str, float, int, bool, time, dict, list, strlist."""

    name: str
    kind: str
    required: bool = False
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 256

    def keys(self) -> set[str]:
        return {normalize_key(self.name), *(normalize_key(a) for a in self.aliases)}


def decode_json(raw: bytes | str) -> dict[str, Any]:
    """Decode a JSON object from bytes or text; anything else raises PayloadError('<payload>')."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError("<payload>", f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise PayloadError("<payload>", f"expected a JSON object, got {type(value).__name__}")
    return value


def parse_fields(fields: Iterable[Field], raw: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """Map a raw mapping onto canonical field names. Returns (values, extra) where `extra` holds the
    keys that matched no field. Missing optional fields are absent from `values`."""
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise PayloadError("<payload>", f"expected an object, got {type(raw).__name__}")
    index, required = _field_index(fields if isinstance(fields, tuple) else tuple(fields))
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise PayloadError("<payload>", f"keys must be strings, got {key!r}")
        field = index.get(normalize_key(key))
        if field is None:
            extra[key] = value
            continue
        if value is None:
            continue
        if field.name in values:
            raise PayloadError(field.name, f"given twice (as '{key}' and another variant)")
        values[field.name] = coerce(field, value)
    for field in required:
        if field.name not in values:
            raise PayloadError(field.name, "is required")
    return values, extra


_INDEXES: dict[int, tuple[tuple[Field, ...], dict[str, Field], tuple[Field, ...]]] = {}


def _field_index(fields: tuple[Field, ...]) -> tuple[dict[str, Field], tuple[Field, ...]]:
    """The normalised-key index and the required fields of a schema, computed once per schema tuple
    (looked up by identity: hashing every Field of a schema costs more than parsing a small payload)."""
    hit = _INDEXES.get(id(fields))
    if hit is not None and hit[0] is fields:
        return hit[1], hit[2]
    index: dict[str, Field] = {}
    for field in fields:
        for key in field.keys():
            index[key] = field
    required = tuple(f for f in dict.fromkeys(index.values()) if f.required)
    if len(_INDEXES) < 256:
        _INDEXES[id(fields)] = (fields, index, required)
    return index, required


def coerce(field: Field, value: Any) -> Any:
    kind = field.kind
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PayloadError(field.name, f"expected a string, got {type(value).__name__}")
        text = str(value).strip()
        if not text:
            raise PayloadError(field.name, "must not be empty")
        if len(text) > field.max_length:
            raise PayloadError(field.name, f"longer than {field.max_length} characters")
        if field.choices:
            return _choice(field, text)
        return text
    if kind in ("float", "int"):
        number = _number(field, value)
        if kind == "int":
            if number != int(number):
                raise PayloadError(field.name, f"expected a whole number, got {value!r}")
            number = int(number)
        if field.minimum is not None and number < field.minimum:
            raise PayloadError(field.name, f"must be >= {field.minimum:g}, got {number!r}")
        if field.maximum is not None and number > field.maximum:
            raise PayloadError(field.name, f"must be <= {field.maximum:g}, got {number!r}")
        return number
    if kind == "bool":
        return _bool(field, value)
    if kind == "time":
        try:
            return parse_time(value)
        except ValueError as exc:
            raise PayloadError(field.name, str(exc)) from None
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise PayloadError(field.name, f"expected an object, got {type(value).__name__}")
        return dict(value)
    if kind == "list":
        if not isinstance(value, list):
            raise PayloadError(field.name, f"expected a list, got {type(value).__name__}")
        return list(value)
    if kind == "strlist":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise PayloadError(field.name, f"expected a list of strings, got {type(value).__name__}")
        out = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
                raise PayloadError(field.name, f"expected a list of strings, got item {item!r}")
            out.append(str(item).strip())
        return out
    raise PayloadError(field.name, f"unknown field kind {kind}")


def _number(field: Field, value: Any) -> float:
    if isinstance(value, bool):
        raise PayloadError(field.name, f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise PayloadError(field.name, f"expected a number, got {value!r}") from None
    else:
        raise PayloadError(field.name, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise PayloadError(field.name, f"expected a finite number, got {value!r}")
    return number


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bool(field: Field, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PayloadError(field.name, f"expected true or false, got {value!r}")


def _choice(field: Field, text: str) -> str:
    wanted = normalize_key(text)
    for choice in field.choices:
        if normalize_key(choice) == wanted:
            return choice
    raise PayloadError(field.name, f"must be one of {', '.join(field.choices)}; got {text!r}")


def iso_or_none(value: datetime | None) -> str | None:
    from dr_common.timeutil import to_iso

    return to_iso(value) if value is not None else None
