"""Validation of inbound MQTT payloads against DESIGN.md's schemas, and their dedup keys.

A payload is accepted only when it is a JSON object that the kind's schema accepts and, where the topic names a
venId, the payload's own venId (if any) agrees with it: a VEN cannot ack or report as another. The accepted
payload is rendered in canonical form with the topic's venId filled in; fields the schema does not know are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dr_common.payloads import Ack, Command, Telemetry, VenStatus
from dr_common.schema import PayloadError, decode_json
from dr_mqtt_bridge.config import KIND_ACK, KIND_COMMAND, KIND_JSON, KIND_STATUS, KIND_TELEMETRY

REASON_TOO_LARGE = "too_large"
REASON_INVALID_JSON = "invalid_json"
REASON_SCHEMA = "schema"
REASON_VEN_MISMATCH = "ven_id_mismatch"
REASON_BAD_TOPIC = "bad_topic"


class Rejected(Exception):
    """An inbound payload that is dropped; `reason` is the counter it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Accepted:
    payload: dict[str, Any]
    dedup_key: tuple[str, ...] | None


def _merge(extra: dict[str, Any], canonical: dict[str, Any]) -> dict[str, Any]:
    if not extra:
        return canonical
    out = {k: v for k, v in extra.items() if k not in canonical}
    out.update(canonical)
    return out


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
    return Accepted(_merge(cmd.extra, cmd.to_payload()), key)


def _ack(ven_id: str, raw: dict[str, Any]) -> Accepted:
    ack = Ack.from_payload(raw)
    _check_ven(ven_id, ack.ven_id)
    ack.ven_id = ven_id
    key = ("ack", ven_id, ack.correlation_id, _raw_str(raw, "ts", "timestamp", "time"))
    return Accepted(_merge(ack.extra, ack.to_payload()), key)


def _telemetry(ven_id: str, raw: dict[str, Any]) -> Accepted:
    tel = Telemetry.from_payload(raw)
    _check_ven(ven_id, tel.ven_id)
    stamp = _raw_str(raw, "ts", "timestamp", "time")
    key = ("telemetry", ven_id, stamp) if stamp else None
    return Accepted(_merge(tel.extra, tel.to_payload()), key)


def _status(ven_id: str, raw: dict[str, Any]) -> Accepted:
    status = VenStatus.from_payload(raw)
    _check_ven(ven_id, status.ven_id)
    return Accepted(status.to_payload(), None)


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
    try:
        return _PARSERS[kind](ven_id, raw)
    except PayloadError as exc:
        raise Rejected(REASON_SCHEMA, str(exc)) from None
    except (ValueError, ArithmeticError, OSError, TypeError, RecursionError) as exc:
        # times or durations out of datetime's range and the like, which the schema does not bound
        raise Rejected(REASON_SCHEMA, f"{exc.__class__.__name__}: {exc}") from None
