"""Parsing what VENs (or the bridge, batched) send to the VTN: acks, telemetry, status.

Per-VEN bus topics carry one payload whose venId may be left to the topic; batched topics carry
`{"items": [...]}`. A bad item is reported with its reason and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dr_common.payloads import Ack, Telemetry, VenStatus
from dr_common.schema import PayloadError, normalize_key

T = TypeVar("T")

_VEN_KEYS = {"venid", "ven"}


@dataclass
class Parsed(Generic[T]):
    """Items parsed from a message and the errors of the refused ones."""
    items: list[T] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _with_ven_id(raw: object, ven_id: str | None) -> object:
    if ven_id is None or not isinstance(raw, Mapping):
        return raw
    if any(isinstance(key, str) and normalize_key(key) in _VEN_KEYS for key in raw):
        return raw
    return {**raw, "venId": ven_id}


def parse_ack(raw: object, ven_id: str | None = None) -> Ack:
    """An Ack; its venId from the payload, else from the topic."""
    ack = Ack.from_payload(raw)
    if ack.ven_id is None:
        ack.ven_id = ven_id
    return ack


def parse_telemetry(raw: object, ven_id: str | None = None) -> Telemetry:
    """A Telemetry; its venId from the payload, else from the topic."""
    return Telemetry.from_payload(_with_ven_id(raw, ven_id))


def parse_status(raw: object, ven_id: str | None = None) -> VenStatus:
    """A VenStatus; its venId from the payload, else from the topic."""
    return VenStatus.from_payload(_with_ven_id(raw, ven_id))


def parse_batch(message: object, parse: Callable[[object], T]) -> Parsed[T]:
    """`{"items": [...]}` -> parsed items and one error line per bad item."""
    out: Parsed[T] = Parsed()
    items: Any = message.get("items") if isinstance(message, Mapping) else None
    if not isinstance(items, list):
        out.errors.append("field 'items': expected a batch object {\"items\": [...]}")
        return out
    for index, item in enumerate(items):
        try:
            out.items.append(parse(item))
        except PayloadError as exc:
            out.errors.append(f"items[{index}]: {exc}")
    return out
