"""How values and timestamps are stored and rendered.

A reading's value is kept in two columns: `value_num` (a double, for numbers: what M&V aggregates in SQL) and
`value_json` (the exact JSON text for everything that a double cannot give back unchanged: ints, bools,
strings, objects, NaN/Infinity). A finite float has only `value_num`. Decoding prefers `value_json`, so every
value comes back as it was stored.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXACT_INT = 2**53


def encode_value(value: Any) -> tuple[float | None, str | None]:
    """(value_num, value_json) for one reading."""
    if isinstance(value, bool):
        return None, "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, json.dumps(value)
    if isinstance(value, int):
        return (float(value) if -_EXACT_INT < value < _EXACT_INT else None), str(value)
    return None, json.dumps(value, separators=(",", ":"), default=str)


def decode_value(value_num: float | None, value_json: str | None) -> Any:
    """The stored value as it was published (value_json wins over value_num)."""
    if value_json is not None:
        return json.loads(value_json)
    return value_num


def to_micros(ts: datetime) -> int:
    """Microseconds since the epoch (naive datetimes are taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch."""
    seconds, rest = divmod(int(micros), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)


def as_utc(ts: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def format_timestamp(ts: datetime) -> str:
    """VOLTTRON's timestamp rendering: `2026-11-22T08:18:25.006435+00:00` (always microseconds, UTC)."""
    return as_utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
