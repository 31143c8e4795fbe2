"""Hostile inputs for the inbound-parser fuzz run: valid payloads mutated in every way an attacker or a broken
peer would try (types swapped, numbers non-finite or huge, identifiers with '/', NUL, bidi or newline characters,
long keys, deep nesting, byte-level damage). Deterministic for a given seed."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

HOSTILE_SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 63), 10 ** 400, 1e308, -1e308, 1e-320, 0.5, "", " ", "\t\n",
    "NaN", "nan", "Infinity", "-inf", "1e999", "9" * 5000, "null", "true", "x" * 70_000, "a/b", "a\x00b",
    "a\u202eb", "ven-1\n", "../../etc", "é", "\ud7ff", "%s%s%n", "{}", "[]", "2999-12-31T23:59:59Z",
    "9892-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "1e400", "253402300800000", "-1", "1970-01-01",
    [], {}, [1, 2], {"a": 1}, [[[[[[]]]]]],
]
NON_FINITE = [float("nan"), float("inf"), float("-inf")]
RAW_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 4400, b"\xff\xfe", b'"\\ud800"', b"[" * 5000]


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def mutate_value(rng: random.Random, value: Any) -> Any:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(HOSTILE_SCALARS)
    if roll < 0.55:
        return rng.choice(NON_FINITE)
    if roll < 0.65:
        return _deep(rng.choice([17, 40, 200]))
    if roll < 0.75:
        return {"x" * rng.choice([300, 60_000]): 1}
    if roll < 0.85 and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            scaled: Any = value * 1e300
        except OverflowError:
            scaled = value * 10 ** 300
        return rng.choice([scaled, -value, str(value) if abs(value) < 1e300 else "9" * 400, [value], 10 ** rng.randint(300, 5000)])
    if roll < 0.92 and isinstance(value, str):
        return value + rng.choice(["/", "\x00", "\u202e", "\n", " " * 3, "x" * 300])
    return [value] * rng.randint(0, 3)


def mutate(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of `payload` with one to three fields damaged, removed or duplicated under another spelling,
    and sometimes unknown keys added."""
    out = dict(payload)
    keys = list(out)
    for _ in range(rng.randint(1, 3)):
        if not keys:
            break
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.7:
            out[key] = mutate_value(rng, out.get(key))
        elif action < 0.8:
            out.pop(key, None)
        elif action < 0.9:
            out[key.upper()] = mutate_value(rng, out.get(key))
        else:
            out["_".join(key)] = out.get(key)
    if rng.random() < 0.2:
        out[rng.choice(["extra", "x" * 200, "loads", "__proto__", "venId"])] = mutate_value(rng, 1)
    return out


def encode(rng: random.Random, payload: Any) -> bytes:
    """JSON bytes of `payload`, sometimes damaged at byte level or with non-standard number tokens spliced in."""
    try:
        data = json.dumps(payload, allow_nan=True).encode()
    except (TypeError, ValueError):
        data = b"{}"
    roll = rng.random()
    if roll < 0.1 and len(data) > 2:
        pos = rng.randrange(len(data))
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1:]
    if roll < 0.2:
        return data[:-1] + b', "z": ' + rng.choice(RAW_TOKENS) + b"}"
    if roll < 0.25:
        return data[: rng.randrange(max(1, len(data)))]
    return data


def cases(rng: random.Random, valid: list[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    """`n` mutated payloads drawn from the valid examples."""
    for _ in range(n):
        yield mutate(rng, rng.choice(valid))
