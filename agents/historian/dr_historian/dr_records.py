"""How DR bus traffic is recorded: which topics, which timestamps, which values.

| bus topic                                  | stored topics                                                          |
|--------------------------------------------|------------------------------------------------------------------------|
| dr/telemetry/<venId>, items of             | dr/telemetry/<venId> (the message), and .../usedPowerKw,               |
|   dr/batch/telemetry {"items": [...]}      |   .../shedPowerKw, .../requestedReductionKw, .../baselinePowerKw,      |
|                                            |   .../availableShedKw, .../eventId (when given), .../optOut            |
| dr/cmd/<venId>, items of                   | dr/cmd/<venId> (the command), and .../requestedReductionKw for         |
|   dr/batch/cmd and dr/sent/cmd             |   event and shedPanel commands; feeds the dr_events index              |
|   {"commands": [...]}                      |                                                                        |
| dr/ack/<venId>, items of dr/batch/ack      | dr/ack/<venId> (the ack), .../ok, .../acceptedReduceKw (when given)    |
| items of dr/batch/status                   | dr/status/<venId> (the item), .../online                               |
| dr/event/<eventId>, any other dr/... topic | the topic itself (the message)                                         |

A reading's time is the message's own time (telemetry and acks: `ts`; commands: `issuedAt`), else the
VOLTTRON header's TimeStamp or Date, else the time of receipt. Items of a batch without a usable venId are
counted as errors and dropped; a per-VEN message whose fields do not parse is still stored as received
(its numeric fields are not) and counted as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dr_common import topics as T
from dr_common.payloads import OP_EVENT, OP_RESTORE, OP_SHED_PANEL, VEN_ID_RE, Ack, Command, Telemetry
from dr_common.batches import batch_items
from dr_common.schema import PayloadError
from dr_common.timeutil import parse_time
from dr_historian.schema import EventEntry, Point

_log = logging.getLogger(__name__)

KW_META = {"units": "kW", "type": "float", "tz": "UTC"}
BOOL_META = {"type": "boolean"}
STR_META = {"type": "string"}
JSON_META = {"type": "json"}

_TELEMETRY_KW = (("usedPowerKw", "used_power_kw"), ("shedPowerKw", "shed_power_kw"),
                 ("requestedReductionKw", "requested_reduction_kw"), ("baselinePowerKw", "baseline_power_kw"),
                 ("availableShedKw", "available_shed_kw"))
_TS_KEYS = {"ts", "timestamp", "time"}
# what parsing a hostile payload may raise: PayloadError (a ValueError), and OverflowError or TypeError from
# numbers no float holds (a 400-digit epoch time)
_UNPARSABLE = (ValueError, TypeError, OverflowError)
_ISSUED_KEYS = {"issuedat", "ts", "sentat", "timestamp"}


@dataclass
class Conversion:
    """The readings of one bus message and the problems found in it."""

    points: list[Point] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, PayloadError) else f"{type(exc).__name__}: value out of range"


def header_time(headers: Mapping[str, Any] | None, now: datetime) -> datetime:
    """The VOLTTRON header's TimeStamp or Date, else `now`."""
    for key in ("TimeStamp", "Date", "timestamp", "date"):
        value = (headers or {}).get(key)
        if value:
            try:
                return parse_time(value)
            except (ValueError, TypeError, OverflowError):
                continue
    return now


def _has_key(payload: Mapping[str, Any], keys: set[str]) -> bool:
    return any(k.lower().replace("_", "") in keys for k in payload)


def _ven(value: object) -> str | None:
    return value if isinstance(value, str) and VEN_ID_RE.match(value) else None


def convert(topic: str, headers: Mapping[str, Any] | None, message: Any, now: datetime) -> Conversion:
    """Readings for one message on a dr/ topic."""
    out = Conversion()
    fallback = header_time(headers, now)
    if topic == T.BUS_TELEMETRY_BATCH:
        for item in _items(message, "items", topic, out):
            _telemetry(item, _ven(item.get("venId") or item.get("ven")), fallback, out, topic)
    elif topic in (T.BUS_CMD_BATCH, T.BUS_CMD_SENT):
        for item in _items(message, "commands", topic, out):
            _command(item, _ven(item.get("venId") or item.get("ven")), fallback, out, topic)
    elif topic == T.BUS_ACK_BATCH:
        for item in _items(message, "items", topic, out):
            _ack(item, _ven(item.get("venId") or item.get("ven")), fallback, out, topic)
    elif topic == T.BUS_STATUS_BATCH:
        for item in _items(message, "items", topic, out):
            _status(item, _ven(item.get("venId") or item.get("ven")), fallback, out, topic)
    elif (ven := T.ven_id_from_topic(topic, T.BUS_TELEMETRY_PREFIX)) is not None:
        _telemetry(message, _ven(ven), fallback, out, topic)
    elif (ven := T.ven_id_from_topic(topic, T.BUS_CMD_PREFIX)) is not None:
        _command(message, _ven(ven), fallback, out, topic)
    elif (ven := T.ven_id_from_topic(topic, T.BUS_ACK_PREFIX)) is not None:
        _ack(message, _ven(ven), fallback, out, topic)
    else:
        out.points.append(Point(topic, fallback, message, JSON_META))
    return out


def _items(message: Any, key: str, topic: str, out: Conversion) -> list[Mapping[str, Any]]:
    items = batch_items(dict(message) if isinstance(message, Mapping) else message, key)
    if not isinstance(items, list):
        out.errors.append(f"{topic}: expected an object with a list '{key}'")
        return []
    good = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping):
            good.append(item)
        else:
            out.errors.append(f"{topic}: {key}[{index}] is not an object")
    return good


def _telemetry(message: Any, ven: str | None, fallback: datetime, out: Conversion, source: str) -> None:
    if ven is None or not isinstance(message, Mapping):
        out.errors.append(f"{source}: telemetry without a valid venId")
        return
    base = T.bus_telemetry(ven)
    try:
        tel = Telemetry.from_payload(message)
    except _UNPARSABLE as exc:
        out.errors.append(f"{source}: {_why(exc)}")
        out.points.append(Point(base, fallback, dict(message), JSON_META))
        return
    ts = tel.ts if _has_key(message, _TS_KEYS) else fallback
    out.points.append(Point(base, ts, dict(message), JSON_META))
    for name, attr in _TELEMETRY_KW:
        value = getattr(tel, attr)
        if value is not None:
            out.points.append(Point(T.telemetry_field(ven, name), ts, float(value), KW_META))
    if tel.event_id is not None:
        out.points.append(Point(T.telemetry_field(ven, "eventId"), ts, tel.event_id, STR_META))
    out.points.append(Point(T.telemetry_field(ven, "optOut"), ts, bool(tel.opt_out), BOOL_META))


def _command(message: Any, ven: str | None, fallback: datetime, out: Conversion, source: str) -> None:
    if ven is None or not isinstance(message, Mapping):
        out.errors.append(f"{source}: command without a valid venId")
        return
    base = T.bus_cmd(ven)
    try:
        cmd = Command.from_payload(message)
    except _UNPARSABLE as exc:
        out.errors.append(f"{source}: {_why(exc)}")
        out.points.append(Point(base, fallback, dict(message), JSON_META))
        return
    ts = cmd.issued_at if cmd.issued_at is not None and _has_key(message, _ISSUED_KEYS) else fallback
    out.points.append(Point(base, ts, dict(message), JSON_META))
    if cmd.op in (OP_EVENT, OP_SHED_PANEL):
        out.points.append(Point(T.field_topic(base, "requestedReductionKw"), ts, float(cmd.requested_reduction_kw),
                                KW_META))


def _ack(message: Any, ven: str | None, fallback: datetime, out: Conversion, source: str) -> None:
    if ven is None or not isinstance(message, Mapping):
        out.errors.append(f"{source}: ack without a valid venId")
        return
    base = T.bus_ack(ven)
    try:
        ack = Ack.from_payload(message)
    except _UNPARSABLE as exc:
        out.errors.append(f"{source}: {_why(exc)}")
        out.points.append(Point(base, fallback, dict(message), JSON_META))
        return
    ts = ack.ts if ack.ts is not None and _has_key(message, _TS_KEYS) else fallback
    out.points.append(Point(base, ts, dict(message), JSON_META))
    out.points.append(Point(T.field_topic(base, "ok"), ts, bool(ack.ok), BOOL_META))
    if ack.accepted_reduce_kw is not None:
        out.points.append(Point(T.field_topic(base, "acceptedReduceKw"), ts, float(ack.accepted_reduce_kw), KW_META))


def _status(message: Mapping[str, Any], ven: str | None, fallback: datetime, out: Conversion, source: str) -> None:
    online = message.get("online")
    if ven is None or not isinstance(online, bool):
        out.errors.append(f"{source}: status item needs a valid venId and a boolean 'online'")
        return
    ts = fallback
    raw_ts = message.get("ts")
    if raw_ts is not None:
        try:
            ts = parse_time(raw_ts)
        except (ValueError, TypeError, OverflowError):
            out.errors.append(f"{source}: status item of {ven}: bad ts {str(raw_ts)[:40]!r}")
    base = T.hist_status(ven)
    out.points.append(Point(base, ts, dict(message), JSON_META))
    out.points.append(Point(T.field_topic(base, "online"), ts, online, BOOL_META))


def event_entry(topic: str, ts: datetime, value: Any) -> EventEntry | None:
    """The dr_events index entry of a stored command reading (topic dr/cmd/<venId>), or None."""
    ven = T.ven_id_from_topic(topic, T.BUS_CMD_PREFIX)
    if ven is None or not isinstance(value, Mapping):
        return None
    try:
        cmd = Command.from_payload(value)
    except _UNPARSABLE:
        return None
    if not cmd.event_id or cmd.op not in (OP_EVENT, OP_SHED_PANEL, OP_RESTORE):
        return None
    return EventEntry(event_id=cmd.event_id, ven_id=ven, op=cmd.op, issued=ts, start=cmd.start_time, end=cmd.until,
                      requested_kw=cmd.requested_reduction_kw if cmd.op != OP_RESTORE else None,
                      modification_number=cmd.modification_number)
