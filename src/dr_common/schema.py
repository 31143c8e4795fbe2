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
import re
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

# One rule for every identifier (venId, eventId, programId, group, ...): 1-64 ASCII letters, digits or
# _ . : - starting with a letter or digit. No '/', no control or bidi characters, no trailing newline.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
ID_RULE = "must be 1-64 letters, digits or _ . : - (starting with a letter or digit)"

# Keys longer than this are never a field name: they are normalised without the cache, so a flood of
# long made-up keys cannot hold memory.
CACHED_KEY_MAX = 64
# Keys longer than this are refused outright.
KEY_MAX = 256
# Decimal digits accepted in a JSON integer (1e308 has 309): more is refused before Python parses it.
INT_DIGITS_MAX = 309


def is_valid_id(value: object) -> bool:
    """True when `value` is a string that follows the identifier rule."""
    return isinstance(value, str) and ID_RE.match(value) is not None


def check_id(value: object, field_name: str) -> str:
    """`value` when it follows the identifier rule, else PayloadError naming `field_name`."""
    if not is_valid_id(value):
        shown = value[:80] if isinstance(value, str) else value
        raise PayloadError(field_name, f"{ID_RULE}; got {shown!r}")
    return value  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def _normalize_cached(key: str) -> str:
    return key.lower().translate(_KEY_NOISE)


def normalize_key(key: str) -> str:
    """A key with case, '_', '-' and spaces ignored (short keys cached, long ones not)."""
    if len(key) <= CACHED_KEY_MAX:
        return _normalize_cached(key)
    return key.lower().translate(_KEY_NOISE)


@dataclass(frozen=True)
class Field:
    """One field of a schema. `kind` is one of str, id, float, int, bool, time, dict, list, strlist, idlist
    (`id` and `idlist` follow the identifier rule, ID_RE)."""

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


def _no_constant(name: str) -> Any:
    raise PayloadError("<payload>", f"not valid JSON ({name} is not a number JSON allows)")


def _strict_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError("<payload>", f"not valid JSON (number {text[:40]} is out of range)")
    return value


def _strict_int(text: str) -> int:
    if len(text.lstrip("-")) > INT_DIGITS_MAX:
        raise PayloadError("<payload>", f"not valid JSON (an integer of {len(text)} digits is out of range)")
    return int(text)


def loads_strict(text: str | bytes | bytearray) -> Any:
    """json.loads that refuses NaN, Infinity, numbers beyond float range and integers of more than
    INT_DIGITS_MAX digits (raising PayloadError); other JSON errors raise as json.loads raises them."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_strict_float, parse_int=_strict_int)


def decode_json(raw: bytes | str) -> dict[str, Any]:
    """Decode a JSON object from bytes or text; anything else (including NaN, Infinity and numbers out of
    range) raises PayloadError('<payload>')."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        value = loads_strict(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        if isinstance(exc, PayloadError):
            raise
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
        if len(key) > KEY_MAX:
            raise PayloadError("<payload>", f"a key is longer than {KEY_MAX} characters")
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


LIST_MAX = 100_000  # items in one list field

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


def _shown(value: object) -> str:
    """A bounded rendering of a refused value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(field: Field, value: str | int | float) -> str:
    """`str(value)`, refusing integers too long to be any field's text (str() of a 5,000-digit int raises)."""
    if isinstance(value, int) and value.bit_length() > 256:
        raise PayloadError(field.name, "expected a string, got an integer of more than 77 digits")
    return str(value)


def coerce(field: Field, value: Any) -> Any:
    kind = field.kind
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PayloadError(field.name, f"expected a string, got {type(value).__name__}")
        text = _text(field, value).strip()
        if not text:
            raise PayloadError(field.name, "must not be empty")
        if len(text) > field.max_length:
            raise PayloadError(field.name, f"longer than {field.max_length} characters")
        if field.choices:
            return _choice(field, text)
        return text
    if kind == "id":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise PayloadError(field.name, f"expected a string, got {type(value).__name__}")
        text = _text(field, value).strip()
        if not text:
            raise PayloadError(field.name, "must not be empty")
        if len(text) > 64:
            raise PayloadError(field.name, "longer than 64 characters")
        return check_id(text, field.name)
    if kind in ("float", "int"):
        number = _number(field, value)
        if kind == "int":
            if number != int(number):
                raise PayloadError(field.name, f"expected a whole number, got {_shown(value)}")
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
        check_tree(value, field.name)
        return dict(value)
    if kind == "list":
        if not isinstance(value, list):
            raise PayloadError(field.name, f"expected a list, got {type(value).__name__}")
        check_tree(value, field.name)
        return list(value)
    if kind in ("strlist", "idlist"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise PayloadError(field.name, f"expected a list of strings, got {type(value).__name__}")
        out = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or not _text(field, item).strip():
                raise PayloadError(field.name, f"expected a list of strings, got item {_shown(item)}")
            text = str(item).strip()
            if kind == "idlist":
                check_id(text, field.name)
            elif len(text) > field.max_length:
                raise PayloadError(field.name, f"has an item longer than {field.max_length} characters")
            out.append(text)
        if len(out) > LIST_MAX:
            raise PayloadError(field.name, f"has more than {LIST_MAX} items")
        return out
    raise PayloadError(field.name, f"unknown field kind {kind}")


def _number(field: Field, value: Any) -> float:
    if isinstance(value, bool):
        raise PayloadError(field.name, f"expected a number, got {_shown(value)}")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise PayloadError(field.name, "expected a finite number, got an integer out of range") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip()) if len(value) <= 64 else float("nan")
        except ValueError:
            raise PayloadError(field.name, f"expected a number, got {_shown(value)}") from None
    else:
        raise PayloadError(field.name, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise PayloadError(field.name, f"expected a finite number, got {_shown(value)}")
    return number


TREE_DEPTH_MAX = 16
TREE_NODES_MAX = 10_000
TREE_STR_MAX = 4096


def check_tree(value: object, field_name: str) -> None:
    """Refuse a nested value that JSON cannot carry faithfully or that is too large to hold: non-finite
    floats, integers beyond float range, non-string keys, over TREE_DEPTH_MAX levels, over TREE_NODES_MAX
    items, keys or strings over TREE_STR_MAX characters. Raises PayloadError naming `field_name`."""
    stack: list[tuple[object, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > TREE_NODES_MAX:
            raise PayloadError(field_name, f"holds more than {TREE_NODES_MAX} values")
        if depth > TREE_DEPTH_MAX:
            raise PayloadError(field_name, f"is nested deeper than {TREE_DEPTH_MAX} levels")
        if isinstance(item, float):
            if not math.isfinite(item):
                raise PayloadError(field_name, f"holds a non-finite number ({_shown(item)})")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -1e308 <= item <= 1e308:
                raise PayloadError(field_name, "holds an integer out of range")
        elif isinstance(item, str):
            if len(item) > TREE_STR_MAX:
                raise PayloadError(field_name, f"holds a string longer than {TREE_STR_MAX} characters")
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str) or len(key) > KEY_MAX:
                    raise PayloadError(field_name, f"has a key that is not a string of at most {KEY_MAX} characters")
                stack.append((sub, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, depth + 1) for sub in item)
        elif item is not None and not isinstance(item, bool):
            raise PayloadError(field_name, f"holds a {type(item).__name__}, which JSON cannot carry")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bool(field: Field, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PayloadError(field.name, f"expected true or false, got {_shown(value)}")


def _choice(field: Field, text: str) -> str:
    wanted = normalize_key(text)
    for choice in field.choices:
        if normalize_key(choice) == wanted:
            return choice
    raise PayloadError(field.name, f"must be one of {', '.join(field.choices)}; got {text!r}")


def iso_or_none(value: datetime | None) -> str | None:
    from dr_common.timeutil import to_iso

    return to_iso(value) if value is not None else None
