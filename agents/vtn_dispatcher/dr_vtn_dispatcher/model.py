"""The VTN's records: VENs, events, per-event participants and commands.

Times are float seconds since the epoch (UTC) inside the VTN and ISO 8601 strings on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dr_common.payloads import SIGNAL_CAP
from dr_common.timeutil import UTC, to_iso

# Event status (DESIGN.md lifecycle)
FAR = "far"
NEAR = "near"
ACTIVE = "active"
COMPLETED = "completed"
CANCELLED = "cancelled"
OPEN_STATUSES = (FAR, NEAR, ACTIVE)
TERMINAL_STATUSES = (COMPLETED, CANCELLED)
STATUSES = (FAR, NEAR, ACTIVE, COMPLETED, CANCELLED)

# Participant state (one VEN in one event)
P_PLANNED = "planned"          # targeted; its command goes out at its (randomized) start instant
P_DISPATCHED = "dispatched"    # command sent, no ack yet
P_ACKED = "acked"              # ack ok, accepted the allocation (or part of it: see capped)
P_REJECTED = "rejected"        # ack ok=false
P_SUPERSEDED = "superseded"    # serving an overlapping event that takes precedence (see README)
P_RELEASED = "released"        # was serving this event; now restored or handed to another event
P_DROPPED = "dropped"          # no longer targeted after a modification
SERVING_STATES = (P_DISPATCHED, P_ACKED)

OP_EVENT = "event"
OP_RESTORE = "restore"

EPS_KW = 1e-6


def iso(ts: float | None) -> str | None:
    """ISO 8601 (UTC) of epoch seconds, None stays None."""
    return None if ts is None else to_iso(datetime.fromtimestamp(ts, UTC))


def epoch(value: datetime) -> float:
    """Epoch seconds of an aware datetime."""
    return value.timestamp()


@dataclass(slots=True)
class Ven:
    """A registered VEN and its latest known state."""
    ven_id: str
    name: str | None = None
    site: str | None = None
    group: str | None = None
    max_shed_kw: float | None = None
    transport: str = "mqtt"
    registered_at: float = 0.0
    updated_at: float = 0.0
    last_seen: float | None = None
    reported_online: bool | None = None  # explicit status (registration, bridge birth / last will)
    available_kw: float | None = None    # latest availableShedKw from telemetry
    used_kw: float | None = None         # latest telemetry summary
    shed_kw: float | None = None
    telemetry_ts: float | None = None
    telemetry_event_id: str | None = None

    def capacity_kw(self) -> float | None:
        """What the VEN can shed: its reported available capacity, else its registered maximum."""
        return self.available_kw if self.available_kw is not None else self.max_shed_kw

    def online_state(self, now: float, timeout_s: float) -> str:
        """"online", "offline" or "unknown" (never heard from, no status given)."""
        if self.reported_online is False:
            return "offline"
        if self.last_seen is None:
            return "online" if self.reported_online else "unknown"
        return "online" if now - self.last_seen <= timeout_s else "offline"

    def to_dict(self, now: float, timeout_s: float) -> dict[str, Any]:
        """The API form of the VEN at `now`."""
        return {"venId": self.ven_id, "name": self.name, "site": self.site, "group": self.group,
                "maxShedKw": self.max_shed_kw, "transport": self.transport,
                "status": self.online_state(now, timeout_s), "online": self.online_state(now, timeout_s) == "online",
                "lastSeen": iso(self.last_seen), "availableShedKw": self.available_kw,
                "usedPowerKw": self.used_kw, "shedPowerKw": self.shed_kw, "registeredAt": iso(self.registered_at),
                "updatedAt": iso(self.updated_at)}


@dataclass(slots=True)
class Event:
    """A DR event as the VTN keeps it."""
    event_id: str
    start: float
    end: float
    requested_kw: float
    signal: str = "LOAD_DISPATCH"
    level: int | None = None
    program_id: str | None = None
    name: str | None = None
    ven_ids: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    ramp_up_s: float = 0.0
    randomize_s: float = 0.0
    priority: int = 0
    test: bool = False
    status: str = FAR
    modification_number: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None  # when it completed or was cancelled

    @property
    def cap_kw(self) -> float | None:
        """The import cap of an IMPORT_CAPACITY_LIMIT event (kept in requested_kw), else None."""
        return self.requested_kw if self.signal == SIGNAL_CAP else None

    @property
    def reduction_kw(self) -> float:
        """The kW to shed over the VENs: none for a cap (each VEN sheds down to it from its own load)."""
        return 0.0 if self.signal == SIGNAL_CAP else self.requested_kw

    @property
    def all_vens(self) -> bool:
        """True when the event targets every VEN."""
        return not self.ven_ids and not self.groups

    def targets(self, ven: Ven) -> bool:
        """True when `ven` is targeted by the event."""
        return self.matcher()(ven)

    def matcher(self) -> Callable[[Ven], bool]:
        """`targets` for many VENs: the venId and group lists looked up as sets (events list thousands)."""
        if self.all_vens:
            return lambda ven: True
        ids, groups = frozenset(self.ven_ids), frozenset(self.groups)
        return lambda ven: ven.ven_id in ids or (ven.group is not None and ven.group in groups)

    def to_dict(self) -> dict[str, Any]:
        """The API form of the event."""
        return {"eventId": self.event_id, "programId": self.program_id, "name": self.name, "status": self.status,
                "signal": self.signal, "level": self.level, "requestedReductionKw": self.reduction_kw,
                "startTime": iso(self.start), "endTime": iso(self.end), "durationS": round(self.end - self.start, 3),
                "rampUpS": self.ramp_up_s, "randomizeStartS": self.randomize_s, "priority": self.priority,
                "test": self.test, "venIds": list(self.ven_ids), "groups": list(self.groups),
                "allVens": self.all_vens, "modificationNumber": self.modification_number,
                "createdAt": iso(self.created_at), "updatedAt": iso(self.updated_at), "endedAt": iso(self.ended_at),
                "capKw": self.cap_kw}


@dataclass(slots=True)
class Participant:
    """One VEN in one event: its state and share."""
    event_id: str
    ven_id: str
    state: str = P_PLANNED
    allocated_kw: float = 0.0
    accepted_kw: float | None = None
    capped: bool = False        # accepted less than asked (or rejected): no headroom for re-allocation
    offset_s: float = 0.0       # randomized start offset
    revision: int = 0           # bumps when a re-allocation changes this VEN's share
    delivered_kw: float | None = None
    delivered_at: float | None = None
    restore_sent: bool = False


@dataclass(slots=True)
class CommandRecord:
    """One command with its sends and its ack."""
    correlation_id: str
    event_id: str
    ven_id: str
    op: str
    modification_number: int
    requested_kw: float
    start: float | None
    until: float | None
    priority: int = 0
    test: bool = False
    created_at: float = 0.0
    first_sent_at: float | None = None
    last_sent_at: float | None = None
    attempts: int = 0
    next_retry_at: float | None = None
    acked_at: float | None = None
    ack_ok: bool | None = None
    accepted_kw: float | None = None
    error: str | None = None
    response_ms: float | None = None
    active: bool = True  # False once superseded by a newer command to the same VEN, or given up

    @property
    def pending(self) -> bool:
        """True while it is active and not acked (it is retried)."""
        return self.active and self.acked_at is None

    def to_dict(self) -> dict[str, Any]:
        """The API form of the command."""
        return {"correlationId": self.correlation_id, "eventId": self.event_id, "venId": self.ven_id, "op": self.op,
                "modificationNumber": self.modification_number, "requestedReductionKw": self.requested_kw,
                "firstSentAt": iso(self.first_sent_at), "lastSentAt": iso(self.last_sent_at),
                "attempts": self.attempts, "ackedAt": iso(self.acked_at), "ok": self.ack_ok,
                "acceptedReduceKw": self.accepted_kw, "error": self.error, "responseMs": self.response_ms}


def correlation_id(event_id: str, modification: int, op: str, ven_id: str, revision: int = 0) -> str:
    """Deterministic per command: a resend (retry, restart) carries the same id, so VENs apply it once."""
    suffix = f"r{revision}" if op == OP_EVENT else "x"
    return f"{event_id}:m{modification}:{suffix}:{op}:{ven_id}"
