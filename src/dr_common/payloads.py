"""Payload schemas of DESIGN.md: commands, acks, telemetry (MQTT and bus), VEN registrations and events.

Each class parses tolerantly with `from_payload` (field-name variants, numbers as strings, ISO times with
or without zone) and renders the canonical camelCase form with `to_payload`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dr_common.schema import ID_RE, Field, PayloadError, check_id, iso_or_none, parse_fields
from dr_common.timeutil import to_iso, utcnow

OP_EVENT = "event"
OP_SHED_PANEL = "shedPanel"
OP_RESTORE = "restore"
OP_PING = "ping"
OPS = (OP_EVENT, OP_SHED_PANEL, OP_RESTORE, OP_PING)
_OP_WORDS = {"stop": OP_RESTORE, "end": OP_RESTORE, "cancel": OP_RESTORE, "shed": OP_SHED_PANEL,
             "shedpanel": OP_SHED_PANEL, "event": OP_EVENT, "restore": OP_RESTORE, "ping": OP_PING}

VEN_ID_RE = ID_RE  # one rule for every identifier (dr_common.schema.ID_RE); ID_PATTERN for JSON Schema

KW_MAX = 1_000_000.0  # a sanity bound for any power figure (kW)


def _kw(name: str, *aliases: str, required: bool = False, minimum: float | None = 0.0) -> Field:
    return Field(name, "float", required=required, aliases=aliases, minimum=minimum, maximum=KW_MAX)


def check_ven_id(value: str, field_name: str = "venId") -> str:
    return check_id(value, field_name)


# --- commands: ven/cmd/<venId> and dr/cmd/<venId> -------------------------------------------------
COMMAND_FIELDS = (
    Field("op", "str", required=True, aliases=("operation", "command", "cmd", "type", "action")),
    Field("correlationId", "str", aliases=("correlation", "cid", "requestId", "msgId", "commandId")),
    Field("venId", "id", aliases=("ven",)),
    Field("eventId", "id", aliases=("event",)),
    _kw("requestedReductionKw", "requestedReduction", "reductionKw", "reduceKw", "shedKw", "targetKw", "kw"),
    Field("startTime", "time", aliases=("start", "startAt", "dtstart")),
    Field("until", "time", aliases=("endTime", "end", "endAt", "untilTime", "stopTime")),
    Field("durationS", "float", aliases=("duration", "durationSeconds"), minimum=0.0, maximum=366 * 86400.0),
    Field("modificationNumber", "int", aliases=("modification", "modNumber"), minimum=0),
    Field("priority", "int", minimum=0),
    Field("test", "bool", aliases=("testEvent",)),
    Field("circuits", "strlist", aliases=("panels", "loads")),
    Field("issuedAt", "time", aliases=("ts", "sentAt", "timestamp")),
    _kw("capKw", "importCapKw", "capacityLimitKw"),   # optional: import at most this (OpenADR IMPORT_CAPACITY_LIMIT)
)


@dataclass
class Command:
    op: str
    correlation_id: str
    ven_id: str | None = None
    event_id: str | None = None
    requested_reduction_kw: float = 0.0
    start_time: datetime | None = None
    until: datetime | None = None
    modification_number: int = 0
    priority: int = 0
    test: bool = False
    circuits: list[str] = field(default_factory=list)
    issued_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cap_kw: float | None = None   # the VEN sheds from its baseline down to this import

    @classmethod
    def from_payload(cls, raw: object) -> "Command":
        values, extra = parse_fields(COMMAND_FIELDS, raw)
        op = _OP_WORDS.get(values["op"].lower().replace("_", "").replace("-", ""))
        if op is None:
            raise PayloadError("op", f"must be one of {', '.join(OPS)}; got {values['op']!r}")
        if values.get("venId") is not None:
            check_ven_id(values["venId"])
        start = values.get("startTime")
        until = values.get("until")
        if until is None and "durationS" in values:
            try:
                until = (start or utcnow()) + _seconds(values["durationS"])
            except OverflowError:
                raise PayloadError("durationS", "puts the end of the command past the year 9999") from None
        if op in (OP_EVENT, OP_SHED_PANEL):
            if "requestedReductionKw" not in values and "capKw" not in values:
                raise PayloadError("requestedReductionKw", f"is required for op {op} (or give capKw)")
            if until is None:
                raise PayloadError("until", f"is required for op {op} (or give durationS)")
        if start is not None and until is not None and until <= start:
            raise PayloadError("until", "must be after startTime")
        correlation = values.get("correlationId") or _derived_correlation(op, values)
        return cls(op=op, correlation_id=correlation, ven_id=values.get("venId"), event_id=values.get("eventId"),
                   requested_reduction_kw=values.get("requestedReductionKw", 0.0), start_time=start, until=until,
                   modification_number=values.get("modificationNumber", 0), priority=values.get("priority", 0),
                   test=values.get("test", False), circuits=values.get("circuits", []),
                   issued_at=values.get("issuedAt"), extra=extra, cap_kw=values.get("capKw"))

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "correlationId": self.correlation_id}
        if self.cap_kw is not None:
            out["capKw"] = self.cap_kw
        if self.ven_id is not None:
            out["venId"] = self.ven_id
        if self.event_id is not None:
            out["eventId"] = self.event_id
        if self.op in (OP_EVENT, OP_SHED_PANEL):
            out["requestedReductionKw"] = self.requested_reduction_kw
        if self.start_time is not None:
            out["startTime"] = to_iso(self.start_time)
        if self.until is not None:
            out["until"] = to_iso(self.until)
        if self.modification_number:
            out["modificationNumber"] = self.modification_number
        if self.priority:
            out["priority"] = self.priority
        if self.test:
            out["test"] = True
        if self.circuits:
            out["circuits"] = list(self.circuits)
        if self.issued_at is not None:
            out["issuedAt"] = to_iso(self.issued_at)
        return out


def _seconds(value: float):
    from datetime import timedelta

    return timedelta(seconds=value)


def _derived_correlation(op: str, values: Mapping[str, Any]) -> str:
    """A command without correlationId still gets a stable one, so a repeat is recognised as a repeat."""
    parts = [op, values.get("eventId") or "-", str(values.get("modificationNumber", 0))]
    return ":".join(parts)


# --- acks: ven/ack/<venId> and dr/ack/<venId> -----------------------------------------------------
ACK_FIELDS = (
    Field("correlationId", "str", required=True, aliases=("correlation", "cid", "requestId", "commandId")),
    Field("op", "str", aliases=("operation", "command", "cmd")),
    Field("ok", "bool", required=True, aliases=("success", "accepted")),
    Field("data", "dict"),
    Field("error", "str", aliases=("message", "reason"), max_length=2000),
    Field("venId", "id", aliases=("ven",)),
    Field("eventId", "id", aliases=("event",)),
    Field("ts", "time", aliases=("timestamp", "time")),
)
ACK_DATA_FIELDS = (
    _kw("targetKw", "target"),
    _kw("acceptedReduceKw", "acceptedReductionKw", "acceptedKw", "accepted"),
    Field("until", "time", aliases=("endTime", "end")),
    Field("optOut", "bool", aliases=("optedOut",)),
    Field("overrides", "strlist"),
    Field("detail", "str", max_length=2000),
)


@dataclass
class Ack:
    correlation_id: str
    ok: bool
    op: str | None = None
    ven_id: str | None = None
    event_id: str | None = None
    target_kw: float | None = None
    accepted_reduce_kw: float | None = None
    until: datetime | None = None
    error: str | None = None
    ts: datetime | None = None
    opt_out: bool = False  # the VEN has opted out of this event (data.optOut)
    overrides: list[str] = field(default_factory=list)  # loads the site owner has taken out (data.overrides)
    detail: str | None = None  # a human note, e.g. why acceptedReduceKw is below targetKw (data.detail)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, raw: object) -> "Ack":
        values, extra = parse_fields(ACK_FIELDS, raw)
        data_raw = dict(values.get("data") or {})
        # tolerate the data fields at top level too
        for key in list(extra):
            data_raw.setdefault(key, extra[key])
        data, data_extra = parse_fields(ACK_DATA_FIELDS, data_raw)
        extra = {k: v for k, v in extra.items() if k in data_extra}
        if not values["ok"] and "error" not in values:
            raise PayloadError("error", "is required when ok is false")
        if values.get("venId") is not None:
            check_ven_id(values["venId"])
        return cls(correlation_id=values["correlationId"], ok=values["ok"], op=values.get("op"),
                   ven_id=values.get("venId"), event_id=values.get("eventId"), target_kw=data.get("targetKw"),
                   accepted_reduce_kw=data.get("acceptedReduceKw"), until=data.get("until"),
                   error=values.get("error"), ts=values.get("ts"), opt_out=data.get("optOut", False),
                   overrides=data.get("overrides", []), detail=data.get("detail"), extra=extra)

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"correlationId": self.correlation_id, "op": self.op, "ok": self.ok,
                               "ts": to_iso(self.ts or utcnow())}
        if self.ven_id is not None:
            out["venId"] = self.ven_id
        if self.event_id is not None:
            out["eventId"] = self.event_id
        if self.ok:
            out["data"] = {"targetKw": self.target_kw, "acceptedReduceKw": self.accepted_reduce_kw,
                           "until": iso_or_none(self.until)}
            if self.opt_out:
                out["data"]["optOut"] = True
            if self.overrides:
                out["data"]["overrides"] = list(self.overrides)
            if self.detail:
                out["data"]["detail"] = self.detail
        else:
            out["error"] = self.error
        return out


# --- telemetry: ven/telemetry/<venId>, oadr/meter/<venId>, dr/telemetry/<venId> -------------------
TELEMETRY_FIELDS = (
    Field("venId", "id", required=True, aliases=("ven",)),
    Field("ts", "time", aliases=("timestamp", "time")),
    _kw("usedPowerKw", "usedKw", "powerKw", "loadKw", "meterKw", required=True, minimum=-KW_MAX),
    _kw("shedPowerKw", "shedKw", "reductionKw", minimum=-KW_MAX),
    _kw("requestedReductionKw", "requestedKw", "targetKw"),
    Field("eventId", "id", aliases=("event",)),
    _kw("baselinePowerKw", "baselineKw", "baseline", minimum=-KW_MAX),
    _kw("availableShedKw", "availableKw", "capacityKw"),
    Field("loads", "dict"),
    Field("optOut", "bool", aliases=("optedOut",)),
)


@dataclass
class Telemetry:
    ven_id: str
    used_power_kw: float
    ts: datetime = field(default_factory=utcnow)
    shed_power_kw: float = 0.0
    requested_reduction_kw: float = 0.0
    event_id: str | None = None
    baseline_power_kw: float | None = None
    available_shed_kw: float | None = None
    loads: dict[str, Any] = field(default_factory=dict)
    opt_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, raw: object) -> "Telemetry":
        values, extra = parse_fields(TELEMETRY_FIELDS, raw)
        check_ven_id(values["venId"])
        return cls(ven_id=values["venId"], used_power_kw=values["usedPowerKw"], ts=values.get("ts") or utcnow(),
                   shed_power_kw=values.get("shedPowerKw", 0.0),
                   requested_reduction_kw=values.get("requestedReductionKw", 0.0), event_id=values.get("eventId"),
                   baseline_power_kw=values.get("baselinePowerKw"), available_shed_kw=values.get("availableShedKw"),
                   loads=values.get("loads", {}), opt_out=values.get("optOut", False), extra=extra)

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"venId": self.ven_id, "ts": to_iso(self.ts), "usedPowerKw": self.used_power_kw,
                               "shedPowerKw": self.shed_power_kw, "requestedReductionKw": self.requested_reduction_kw,
                               "eventId": self.event_id, "baselinePowerKw": self.baseline_power_kw}
        if self.available_shed_kw is not None:
            out["availableShedKw"] = self.available_shed_kw
        if self.loads:
            out["loads"] = self.loads
        if self.opt_out:
            out["optOut"] = True
        return out


# --- VEN status (MQTT last will / birth) ----------------------------------------------------------
STATUS_FIELDS = (
    Field("venId", "id", required=True, aliases=("ven",)),
    Field("online", "bool", required=True, aliases=("connected", "up")),
    Field("ts", "time", aliases=("timestamp", "time")),
)


@dataclass
class VenStatus:
    ven_id: str
    online: bool
    ts: datetime = field(default_factory=utcnow)

    @classmethod
    def from_payload(cls, raw: object) -> "VenStatus":
        values, _ = parse_fields(STATUS_FIELDS, raw)
        check_ven_id(values["venId"])
        return cls(ven_id=values["venId"], online=values["online"], ts=values.get("ts") or utcnow())

    def to_payload(self) -> dict[str, Any]:
        return {"venId": self.ven_id, "online": self.online, "ts": to_iso(self.ts)}


# --- REST / RPC: VEN registration -----------------------------------------------------------------
TRANSPORT_BUS = "bus"
TRANSPORT_MQTT = "mqtt"
TRANSPORT_OADR = "oadr"   # an OpenADR 3 VEN: reads its events over OpenADR, reports over it; dr.vtn sends it nothing

VEN_FIELDS = (
    Field("venId", "id", required=True, aliases=("id", "ven", "thingName")),
    Field("name", "str", max_length=200),
    Field("site", "str", max_length=200),
    Field("group", "id", aliases=("groupId",)),
    _kw("maxShedKw", "maximumShedKw", "maxShedCapacityKw", "capacityKw", "maxCapacityKw"),
    Field("transport", "str", choices=(TRANSPORT_BUS, TRANSPORT_MQTT, TRANSPORT_OADR)),
    Field("status", "str", choices=("online", "offline")),
)


@dataclass
class VenRegistration:
    ven_id: str
    name: str | None = None
    site: str | None = None
    group: str | None = None
    max_shed_kw: float | None = None
    transport: str = TRANSPORT_MQTT

    @classmethod
    def from_payload(cls, raw: object) -> "VenRegistration":
        values, _ = parse_fields(VEN_FIELDS, raw)
        check_ven_id(values["venId"])
        return cls(ven_id=values["venId"], name=values.get("name"), site=values.get("site"),
                   group=values.get("group"), max_shed_kw=values.get("maxShedKw"),
                   transport=values.get("transport", TRANSPORT_MQTT))

    def to_payload(self) -> dict[str, Any]:
        return {"venId": self.ven_id, "name": self.name, "site": self.site, "group": self.group,
                "maxShedKw": self.max_shed_kw, "transport": self.transport}


# --- REST / RPC: DR events ------------------------------------------------------------------------
SIGNAL_LOAD_DISPATCH = "LOAD_DISPATCH"
SIGNAL_SIMPLE = "SIMPLE"
SIGNAL_CAP = "IMPORT_CAPACITY_LIMIT"   # each targeted VEN imports at most capKw (OpenADR IMPORT_CAPACITY_LIMIT)

EVENT_FIELDS = (
    Field("eventId", "id", aliases=("id", "event")),
    Field("programId", "id", aliases=("program",)),
    Field("name", "str", max_length=200),
    Field("startTime", "time", required=True, aliases=("start", "dtstart", "startAt")),
    Field("endTime", "time", aliases=("end", "until", "endAt")),
    Field("durationS", "float", aliases=("duration", "durationSeconds"), minimum=1.0, maximum=7 * 86400.0),
    _kw("requestedReductionKw", "requestedReduction", "reductionKw", "targetKw", "kw"),
    Field("level", "int", aliases=("simpleLevel", "signalLevel"), minimum=0, maximum=3),
    _kw("capKw", "importCapKw", "capacityLimitKw"),
    Field("venIds", "idlist", aliases=("vens", "targetVens", "targetVenIds")),
    Field("groups", "idlist", aliases=("targetGroups", "groupIds")),
    Field("allVens", "bool", aliases=("all", "targetAll")),
    Field("rampUpS", "float", aliases=("rampUp", "rampUpSeconds", "nearS"), minimum=0.0, maximum=86400.0),
    Field("randomizeStartS", "float", aliases=("randomizeStart", "randomization"), minimum=0.0, maximum=3600.0),
    Field("priority", "int", minimum=0, maximum=1000),
    Field("test", "bool", aliases=("testEvent",)),
    Field("status", "str"),
)


@dataclass
class EventRequest:
    start_time: datetime
    end_time: datetime
    requested_reduction_kw: float | None = None
    level: int | None = None
    event_id: str | None = None
    program_id: str | None = None
    name: str | None = None
    ven_ids: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    ramp_up_s: float = 0.0
    randomize_start_s: float = 0.0
    priority: int = 0
    test: bool = False
    cap_kw: float | None = None

    @property
    def signal(self) -> str:
        if self.cap_kw is not None:
            return SIGNAL_CAP
        return SIGNAL_LOAD_DISPATCH if self.requested_reduction_kw is not None else SIGNAL_SIMPLE

    @property
    def all_vens(self) -> bool:
        return not self.ven_ids and not self.groups

    @classmethod
    def from_payload(cls, raw: object) -> "EventRequest":
        values, _ = parse_fields(EVENT_FIELDS, raw)
        start = values["startTime"]
        end = values.get("endTime")
        if end is None:
            if "durationS" not in values:
                raise PayloadError("endTime", "is required (or give durationS)")
            end = start + _seconds(values["durationS"])
        elif "durationS" in values and abs((end - start).total_seconds() - values["durationS"]) > 1e-3:
            raise PayloadError("durationS", "disagrees with endTime - startTime")
        if end <= start:
            raise PayloadError("endTime", "must be after startTime")
        if "requestedReductionKw" not in values and "level" not in values and "capKw" not in values:
            raise PayloadError("requestedReductionKw", "is required (or give a SIMPLE level 0-3, or capKw)")
        if "capKw" in values and ("requestedReductionKw" in values or "level" in values):
            raise PayloadError("capKw", "cannot be combined with requestedReductionKw or level")
        for ven in values.get("venIds", []):
            check_ven_id(ven, "venIds")
        if values.get("allVens") and (values.get("venIds") or values.get("groups")):
            raise PayloadError("allVens", "cannot be combined with venIds or groups")
        if not values.get("allVens") and not values.get("venIds") and not values.get("groups"):
            # targeting nobody never means everyone: a fleet-wide event says allVens: true
            empty = next((name for name in ("venIds", "groups") if name in values), "allVens")
            raise PayloadError(empty, "the event targets no VEN: give venIds, groups, or allVens: true")
        return cls(start_time=start, end_time=end, requested_reduction_kw=values.get("requestedReductionKw"),
                   level=values.get("level"), event_id=values.get("eventId"), program_id=values.get("programId"),
                   name=values.get("name"), ven_ids=values.get("venIds", []), groups=values.get("groups", []),
                   ramp_up_s=values.get("rampUpS", 0.0), randomize_start_s=values.get("randomizeStartS", 0.0),
                   priority=values.get("priority", 0), test=values.get("test", False), cap_kw=values.get("capKw"))

    def to_payload(self) -> dict[str, Any]:
        return {"eventId": self.event_id, "programId": self.program_id, "name": self.name,
                "startTime": to_iso(self.start_time), "endTime": to_iso(self.end_time),
                "requestedReductionKw": self.requested_reduction_kw, "level": self.level, "signal": self.signal,
                "venIds": list(self.ven_ids), "groups": list(self.groups), "allVens": self.all_vens,
                "rampUpS": self.ramp_up_s, "randomizeStartS": self.randomize_start_s, "priority": self.priority,
                "test": self.test, "capKw": self.cap_kw}


# --- dr.mqtt status (BridgeRpc.STATUS; read by dr.web) ---------------------------------------------
@dataclass
class BridgeStatus:
    """The MQTT bridge's `status()` answer: link, outbox, message counts, rejects, hand-off latency."""

    mode: str
    ven_id: str | None
    client_id: str
    broker: str
    tls: bool
    connected: bool
    session_present: bool | None = None
    last_error: str | None = None
    backlog: int = 0
    backlog_limit: int = 0
    oldest_backlog_age_s: float | None = None
    inflight_from_backlog: int = 0
    outbox_shed: int = 0
    outbox_expired: int = 0
    messages_in: int = 0
    messages_accepted: int = 0
    duplicates: int = 0
    messages_out: int = 0
    messages_queued: int = 0
    messages_acked: int = 0
    unacknowledged: int = 0
    bus_published: int = 0
    bus_items: int = 0
    bus_failed: int = 0
    pending_batch_items: int = 0
    bus_queue: int = 0
    inbound_held: int = 0
    unknown_fields_dropped: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    handoff: dict[str, Any] = field(default_factory=dict)
    last_fanout: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    config_error: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"mode": self.mode, "venId": self.ven_id, "clientId": self.client_id, "broker": self.broker,
                "tls": self.tls, "connected": self.connected, "sessionPresent": self.session_present,
                "lastError": self.last_error, "backlog": self.backlog, "backlogLimit": self.backlog_limit,
                "oldestBacklogAgeS": self.oldest_backlog_age_s, "inflightFromBacklog": self.inflight_from_backlog,
                "outboxShed": self.outbox_shed, "outboxExpired": self.outbox_expired,
                "messagesIn": self.messages_in, "messagesAccepted": self.messages_accepted,
                "duplicates": self.duplicates, "messagesOut": self.messages_out,
                "messagesQueued": self.messages_queued, "messagesAcked": self.messages_acked,
                "unacknowledged": self.unacknowledged, "busPublished": self.bus_published,
                "busItems": self.bus_items, "busFailed": self.bus_failed,
                "pendingBatchItems": self.pending_batch_items, "busQueue": self.bus_queue,
                "inboundHeld": self.inbound_held, "unknownFieldsDropped": self.unknown_fields_dropped,
                "rejects": dict(self.rejects), "rejectsTotal": sum(self.rejects.values()),
                "connects": self.connects, "disconnects": self.disconnects,
                "connectFailures": self.connect_failures, "handoff": dict(self.handoff),
                "lastFanout": self.last_fanout, "warnings": list(self.warnings), "configError": self.config_error}

    @classmethod
    def not_running(cls, config_error: str | None) -> dict[str, Any]:
        """The answer of a bridge that has no running link (no or a refused configuration)."""
        return {"connected": False, "configError": config_error, "backlog": 0}
