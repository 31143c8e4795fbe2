"""Validation of inbound MQTT payloads against DESIGN.md's schemas, and their dedup keys.

A payload is accepted only when it is a JSON object that the kind's schema accepts and, where the topic names a
venId, the payload's own venId (if any) agrees with it: a VEN cannot ack or report as another. The accepted
payload is rendered in canonical form with the topic's venId filled in.

Fields the schema does not know are bounded, so a sender cannot make the bus carry data of its choosing: at
most EXTRA_FIELDS_MAX of them are kept, and only small scalars (a name of at most EXTRA_KEY_MAX characters
following the identifier rule, a value that is null, a boolean, a finite number or a string of at most
EXTRA_STR_MAX characters); the rest are dropped and counted (`unknownFieldsDropped` in the status). The `json`
kind (any JSON object, for custom routes) is passed as it is, within `max_payload_bytes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dr_common.payloads import Ack, Command, Telemetry, VenStatus
from dr_common.schema import PayloadError, decode_json, is_valid_id
from dr_common.mqtt.config import KIND_ACK, KIND_COMMAND, KIND_JSON, KIND_STATUS, KIND_TELEMETRY

REASON_TOO_LARGE = "too_large"
REASON_INVALID_JSON = "invalid_json"
REASON_SCHEMA = "schema"
REASON_VEN_MISMATCH = "ven_id_mismatch"
REASON_BAD_TOPIC = "bad_topic"

EXTRA_FIELDS_MAX = 8
EXTRA_KEY_MAX = 32
EXTRA_STR_MAX = 64


class Rejected(Exception):
    """An inbound payload that is dropped; `reason` is the counter it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Accepted:
    """A payload fit for the bus, its dedup key, how many unknown fields were dropped from it, and the parsed
    object (`Command`, `Ack`, `Telemetry`, `VenStatus` with the topic's venId; None for the `json` kind) for a
    consumer in the same process."""

    payload: dict[str, Any]
    dedup_key: tuple[str, ...] | None
    dropped: int = 0
    item: Any = None


def _small_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return isinstance(value, str) and len(value) <= EXTRA_STR_MAX


def _merge(extra: dict[str, Any], canonical: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The canonical payload with at most EXTRA_FIELDS_MAX small unknown fields; (payload, dropped)."""
    if not extra:
        return canonical, 0
    kept: dict[str, Any] = {}
    for key, value in extra.items():
        if (len(kept) < EXTRA_FIELDS_MAX and key not in canonical and len(key) <= EXTRA_KEY_MAX
                and is_valid_id(key) and _small_scalar(value)):
            kept[key] = value
    kept.update(canonical)
    return kept, len(extra) - (len(kept) - len(canonical))


def _accepted(extra: dict[str, Any], canonical: dict[str, Any], key: tuple[str, ...] | None,
              item: Any) -> Accepted:
    payload, dropped = _merge(extra, canonical)
    return Accepted(payload, key, dropped, item)


def _raw_str(raw: dict[str, Any], *names: str) -> str:
    """The value of the first present key as text (used for dedup keys; '' when absent)."""
    for name in names:
        if name in raw and raw[name] is not None:
            return str(raw[name])
    return ""


def _check_ven(topic_ven: str, payload_ven: str | None) -> None:
    if payload_ven is not None and payload_ven != topic_ven:
        raise Rejected(REASON_VEN_MISMATCH, f"payload venId {payload_ven!r} on the topic of venId {topic_ven!r}")


def _command(ven_id: str, raw: dict[str, Any]) -> Accepted:
    cmd = Command.from_payload(raw)
    _check_ven(ven_id, cmd.ven_id)
    cmd.ven_id = ven_id
    key = ("command", ven_id, cmd.correlation_id, _raw_str(raw, "issuedAt", "issued_at", "ts", "sentAt"))
    return _accepted(cmd.extra, cmd.to_payload(), key, cmd)


def _ack(ven_id: str, raw: dict[str, Any]) -> Accepted:
    ack = Ack.from_payload(raw)
    _check_ven(ven_id, ack.ven_id)
    ack.ven_id = ven_id
    key = ("ack", ven_id, ack.correlation_id, _raw_str(raw, "ts", "timestamp", "time"))
    return _accepted(ack.extra, ack.to_payload(), key, ack)


def _telemetry(ven_id: str, raw: dict[str, Any]) -> Accepted:
    tel = Telemetry.from_payload(raw)
    _check_ven(ven_id, tel.ven_id)
    tel.ven_id = ven_id
    stamp = _raw_str(raw, "ts", "timestamp", "time")
    key = ("telemetry", ven_id, stamp) if stamp else None
    return _accepted(tel.extra, tel.to_payload(), key, tel)


def _status(ven_id: str, raw: dict[str, Any]) -> Accepted:
    status = VenStatus.from_payload(raw)
    _check_ven(ven_id, status.ven_id)
    status.ven_id = ven_id
    return Accepted(status.to_payload(), None, 0, status)


def _json(ven_id: str, raw: dict[str, Any]) -> Accepted:
    payload_ven = raw.get("venId")
    if ven_id and payload_ven is not None:
        _check_ven(ven_id, str(payload_ven))
    return Accepted(raw, None)


_PARSERS: dict[str, Callable[[str, dict[str, Any]], Accepted]] = {
    KIND_COMMAND: _command, KIND_ACK: _ack, KIND_TELEMETRY: _telemetry, KIND_STATUS: _status, KIND_JSON: _json,
}


def validate(kind: str, ven_id: str, payload: bytes | bytearray | str, max_bytes: int) -> Accepted:
    """Accept one inbound MQTT payload of `kind` from the VEN `ven_id` or raise Rejected."""
    if len(payload) > max_bytes:
        raise Rejected(REASON_TOO_LARGE, f"{len(payload)} bytes > {max_bytes}")
    try:
        raw = decode_json(payload)
    except PayloadError as exc:
        raise Rejected(REASON_INVALID_JSON, exc.reason) from None
    if kind != KIND_JSON and not ven_id:
        raise Rejected(REASON_BAD_TOPIC, "the topic names no venId")
    if ven_id and not is_valid_id(ven_id):
        raise Rejected(REASON_BAD_TOPIC, f"the topic's venId {ven_id[:80]!r} breaks the identifier rule")
    try:
        return _PARSERS[kind](ven_id, raw)
    except PayloadError as exc:
        raise Rejected(REASON_SCHEMA, str(exc)) from None
    except (ValueError, ArithmeticError, OSError, TypeError, RecursionError) as exc:
        # times or durations out of datetime's range and the like, which the schema does not bound
        raise Rejected(REASON_SCHEMA, f"{exc.__class__.__name__}: {exc}") from None
