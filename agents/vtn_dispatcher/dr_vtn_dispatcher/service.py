"""The VTN: registry, event lifecycle, allocation, dispatch with retries, ack tracking, metrics.

Plain Python, no platform import: the agent gives it a Store, a Scheduler (clock + timers) and a Sender
(the bus), and calls it from its RPCs and subscriptions. Every method runs on one thread of control.

Overlapping events on one VEN: a VEN serves one event at a time. When an event activates, a VEN already
serving another active event stays with that event unless the new one has a strictly higher `priority`
(larger number wins; on a tie the event already running keeps it); the loser's participant is marked
`superseded` (it never got the VEN) or `released` (it lost it, and its shortfall is re-allocated to its
other VENs). When the event a VEN serves ends, the VEN is handed to the highest-priority other active event
that still needs kW and was superseded on it; otherwise it is restored.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dr_common.payloads import (
    EVENT_FIELDS,
    SIGNAL_LOAD_DISPATCH,
    TRANSPORT_BUS,
    VEN_FIELDS,
    Ack,
    EventRequest,
    Telemetry,
    VenRegistration,
    VenStatus,
    check_ven_id,
)
from dr_common.schema import PayloadError, parse_fields
from dr_vtn_dispatcher import allocation, inbound
from dr_vtn_dispatcher.config import VtnConfig
from dr_vtn_dispatcher.dispatch import CommandBook, Sender
from dr_vtn_dispatcher.errors import ApiError, conflict, invalid, not_found
from dr_vtn_dispatcher.lifecycle import Scheduler, TimerHandle, next_instant, randomized_offset, status_at, transitions
from dr_vtn_dispatcher.metrics import event_metrics
from dr_vtn_dispatcher.model import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    EPS_KW,
    NEAR,
    OP_EVENT,
    OP_RESTORE,
    OPEN_STATUSES,
    P_ACKED,
    P_DISPATCHED,
    P_DROPPED,
    P_PLANNED,
    P_REJECTED,
    P_RELEASED,
    P_SUPERSEDED,
    STATUSES,
    TERMINAL_STATUSES,
    CommandRecord,
    Event,
    Participant,
    Ven,
    correlation_id,
    epoch,
)
from dr_vtn_dispatcher.store import AckRow, Store, TelemetryRow

_log = logging.getLogger(__name__)

SENT_STATES = (P_DISPATCHED, P_ACKED, P_REJECTED)   # the VEN has been sent this event's command
CLAIM_STATES = (P_PLANNED, P_DISPATCHED, P_ACKED, P_REJECTED)  # the VEN is (to be) serving this event
_UPDATE_FIELDS = tuple(dataclasses.replace(f, required=False) for f in EVENT_FIELDS)
_VEN_UPDATE_FIELDS = tuple(dataclasses.replace(f, required=False) for f in VEN_FIELDS)


def _in_line(fn: Callable[[], None]) -> None:
    fn()


class VtnService:
    def __init__(self, store: Store, scheduler: Scheduler, sender: Sender, config: VtnConfig,
                 rng: random.Random | None = None,
                 offload: Callable[[Callable[[], None]], Any] | None = None) -> None:
        """`offload(fn)` runs the flush's database write and returns when it is done; the agent runs it in a
        thread of its own (one, so writes stay in order) so the event loop goes on meanwhile. Default: in line."""
        self.store = store
        self._offload = offload or _in_line
        self.clock = scheduler
        self.sender = sender
        self.config = config
        self.rng = rng or random.Random()
        self.vens: dict[str, Ven] = {}
        self.events: dict[str, Event] = {}               # open events and recently finished ones
        self.participants: dict[str, dict[str, Participant]] = {}
        self.book = CommandBook(config.retry_delay)
        self.current: dict[tuple[str, str], CommandRecord] = {}  # (event, ven) -> latest event command
        self.serving: dict[str, str] = {}                # venId -> eventId it serves
        self.counters: Counter[str] = Counter()
        self._lifecycle_timers: dict[str, TimerHandle] = {}
        self._round_timers: dict[str, dict[float, TimerHandle]] = {}
        self._retry_timer: TimerHandle | None = None
        self._retry_at: float | None = None
        self._flush_timer: TimerHandle | None = None
        self._dirty_vens: dict[str, Ven] = {}
        self._dirty_participants: dict[tuple[str, str], Participant] = {}
        self._dirty_commands: dict[str, CommandRecord] = {}
        self._ack_buffer: list[AckRow] = []
        self._telemetry_buffer: list[TelemetryRow] = []
        self.started = False
        self.last_round: dict[str, Any] = {}  # timings of the latest dispatch round (health)
        self._activation_started: tuple[float, float] | None = None  # (perf_counter, thread_time)

    # ============================================================================ start / stop ====
    def start(self) -> None:
        """Load the registry and the live events from the store, finish what ended while down, resume
        dispatch and retries, and arm every timer."""
        now = self.clock.now()
        self.vens = {ven.ven_id: ven for ven in self.store.load_vens()}
        events = self.store.load_live_events(ended_since=now - self.config.restore_retry_window_s)
        ids = [event.event_id for event in events]
        for event in events:
            self.events[event.event_id] = event
            self.participants[event.event_id] = {}
        for p in self.store.load_participants(ids):
            self.participants.setdefault(p.event_id, {})[p.ven_id] = p
        for record in sorted(self.store.load_commands(ids), key=lambda c: (c.modification_number, c.created_at)):
            self.book.add(record)
            if record.op == OP_EVENT and record.active:
                self.current[(record.event_id, record.ven_id)] = record
        for event in sorted(events, key=lambda e: (e.start, e.event_id)):
            if event.status == ACTIVE:
                for p in self.participants[event.event_id].values():
                    if p.state in CLAIM_STATES:
                        self.serving[p.ven_id] = event.event_id
        self.started = True
        for event in sorted(events, key=lambda e: (e.start, e.event_id)):
            if event.status in OPEN_STATUSES:
                was_active = event.status == ACTIVE
                self._advance(event)
                if was_active and event.status == ACTIVE:
                    self._dispatch_due(event)
        self._arm_retry()
        self._arm_flush()
        _log.info("dr.vtn resumed: %d VENs, %d live events, %d pending commands", len(self.vens),
                  len(self.events), self.book.pending_count())

    def stop(self) -> None:
        for handle in self._lifecycle_timers.values():
            handle.cancel()
        for rounds in self._round_timers.values():
            for handle in rounds.values():
                handle.cancel()
        self._lifecycle_timers.clear()
        self._round_timers.clear()
        for handle in (self._retry_timer, self._flush_timer):
            if handle is not None:
                handle.cancel()
        self._retry_timer = self._flush_timer = None
        self._retry_at = None
        self.flush()
        self.started = False

    # ============================================================================ VEN registry ====
    def register_ven(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Register a VEN, or update it when its venId is known. Returns the VEN with `created`."""
        try:
            reg = VenRegistration.from_payload(payload)
            values, _ = parse_fields(_VEN_UPDATE_FIELDS, payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        now = self.clock.now()
        known = self.vens.get(reg.ven_id)
        ven = dataclasses.replace(known) if known else Ven(ven_id=reg.ven_id, registered_at=now)
        ven.name, ven.site, ven.group, ven.max_shed_kw = reg.name, reg.site, reg.group, reg.max_shed_kw
        ven.transport = reg.transport
        ven.updated_at = now
        self._apply_status_field(ven, values.get("status"), now)
        self.store.save(vens=[ven])
        self.vens[ven.ven_id] = ven
        self._dirty_vens[ven.ven_id] = ven  # written again by the next flush, after any flush in flight
        return {**ven.to_dict(now, self.config.offline_timeout_s), "created": known is None}

    def update_ven(self, ven_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        known = self._ven(ven_id)
        try:
            values, _ = parse_fields(_VEN_UPDATE_FIELDS, payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        if values.get("venId", ven_id) != ven_id:
            raise invalid("venId", f"cannot be changed (is {ven_id!r})")
        now = self.clock.now()
        ven = dataclasses.replace(known)
        for key, attr in (("name", "name"), ("site", "site"), ("group", "group"), ("maxShedKw", "max_shed_kw"),
                          ("transport", "transport")):
            if key in values:
                setattr(ven, attr, values[key])
        self._apply_status_field(ven, values.get("status"), now)
        ven.updated_at = now
        self.store.save(vens=[ven])
        self.vens[ven_id] = ven
        self._dirty_vens[ven_id] = ven  # written again by the next flush, after any flush in flight
        return ven.to_dict(now, self.config.offline_timeout_s)

    @staticmethod
    def _apply_status_field(ven: Ven, status: str | None, now: float) -> None:
        if status == "online":
            ven.reported_online, ven.last_seen = True, now
        elif status == "offline":
            ven.reported_online = False

    def list_vens(self, status: str | None = None, group: str | None = None, site: str | None = None,
                  transport: str | None = None) -> list[dict[str, Any]]:
        if status is not None and status not in ("online", "offline", "unknown"):
            raise invalid("status", f"must be online, offline or unknown; got {status!r}")
        now = self.clock.now()
        timeout = self.config.offline_timeout_s
        out = []
        for ven in sorted(self.vens.values(), key=lambda v: v.ven_id):
            if group is not None and ven.group != group or site is not None and ven.site != site:
                continue
            if transport is not None and ven.transport != transport:
                continue
            if status is not None and ven.online_state(now, timeout) != status:
                continue
            out.append(ven.to_dict(now, timeout))
        return out

    def get_ven(self, ven_id: str) -> dict[str, Any]:
        ven = self._ven(ven_id)
        data = ven.to_dict(self.clock.now(), self.config.offline_timeout_s)
        data["servingEventId"] = self.serving.get(ven_id)
        return data

    def _ven(self, ven_id: Any) -> Ven:
        if not isinstance(ven_id, str):
            raise invalid("venId", f"expected a string, got {type(ven_id).__name__}")
        ven = self.vens.get(ven_id)
        if ven is None:
            raise not_found("venId", f"no VEN {ven_id!r} is registered")
        return ven

    # ============================================================================ events: API ====
    def create_event(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        try:
            req = EventRequest.from_payload(payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        now = self.clock.now()
        event_id = req.event_id or f"evt-{uuid.uuid4().hex[:12]}"
        if event_id in self.events or self.store.get_event(event_id) is not None:
            raise conflict("eventId", f"event {event_id!r} already exists")
        event = self._event_from_request(req, event_id, now)
        self._validate_event(event, now)
        self.store.save(events=[event])
        self.events[event_id] = event
        self.participants[event_id] = {}
        self.counters["eventsCreated"] += 1
        self._publish(event)
        self._advance(event)
        return event.to_dict()

    def update_event(self, event_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Change an open event; bumps its modificationNumber and re-dispatches an active one."""
        event = self._live_event(event_id)
        if event.status in TERMINAL_STATUSES:
            raise conflict("eventId", f"event {event_id!r} is {event.status}")
        try:
            changes, _ = parse_fields(_UPDATE_FIELDS, payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        if changes.get("eventId", event_id) != event_id:
            raise invalid("eventId", "cannot be changed")
        changes.pop("eventId", None)
        changes.pop("status", None)
        if not changes:
            raise invalid("<payload>", "nothing to change")
        merged = self._request_dict(event)
        if "durationS" in changes and "endTime" not in changes:
            merged.pop("endTime", None)
        if "level" in changes and "requestedReductionKw" not in changes:
            merged.pop("requestedReductionKw", None)
        if "requestedReductionKw" in changes and "level" not in changes:
            merged.pop("level", None)
        if changes.get("allVens"):
            merged.pop("venIds", None)
            merged.pop("groups", None)
        if "venIds" in changes or "groups" in changes:
            merged.pop("allVens", None)
        merged.update(changes)
        try:
            req = EventRequest.from_payload(merged)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        now = self.clock.now()
        updated = self._event_from_request(req, event_id, now)
        if event.status == ACTIVE and abs(updated.start - event.start) > 1e-6:
            raise conflict("startTime", "cannot change once the event is active")
        self._validate_event(updated, now)
        updated.status, updated.created_at = event.status, event.created_at
        updated.modification_number = event.modification_number + 1
        self.store.save(events=[updated])
        for attr in ("start", "end", "requested_kw", "signal", "level", "program_id", "name", "ven_ids", "groups",
                     "ramp_up_s", "randomize_s", "priority", "test", "modification_number", "updated_at"):
            setattr(event, attr, getattr(updated, attr))
        self.counters["eventsModified"] += 1
        if event.status == ACTIVE and now < event.end:
            self._redispatch(event)
        self._publish(event)
        self._advance(event)
        return event.to_dict()

    def stop_event(self, event_id: str) -> dict[str, Any]:
        """End an event now: an active one completes (restores go out), one not yet active is cancelled."""
        event = self._live_event(event_id)
        if event.status in TERMINAL_STATUSES:
            raise conflict("eventId", f"event {event_id!r} is already {event.status}")
        self._finish(event, COMPLETED if event.status == ACTIVE else CANCELLED)
        return event.to_dict()

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel an event; VENs already dispatched are restored."""
        event = self._live_event(event_id)
        if event.status in TERMINAL_STATUSES:
            raise conflict("eventId", f"event {event_id!r} is already {event.status}")
        self._finish(event, CANCELLED)
        return event.to_dict()

    def get_event(self, event_id: str) -> dict[str, Any]:
        return self._any_event(event_id).to_dict()

    def list_events(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        if status is not None and status not in STATUSES:
            raise invalid("status", f"must be one of {', '.join(STATUSES)}; got {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise invalid("limit", "must be a whole number from 1 to 10000")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise invalid("offset", "must be a whole number >= 0")
        return [self.events.get(e.event_id, e).to_dict() for e in self.store.list_events(status, limit, offset)]

    def event_metrics(self, event_id: str) -> dict[str, Any]:
        now = self.clock.now()
        if isinstance(event_id, str) and event_id in self.events:
            event = self.events[event_id]
            participants: Iterable[Participant] = self.participants.get(event_id, {}).values()
            commands: Iterable[CommandRecord] = self.book.for_event(event_id)
        else:
            event = self._any_event(event_id)
            participants = self.store.load_participants([event_id])
            commands = self.store.load_commands([event_id])
        return event_metrics(event, participants, commands, self.vens, now, self.config.offline_timeout_s)

    def health(self) -> dict[str, Any]:
        now = self.clock.now()
        open_events = [e for e in self.events.values() if e.status in OPEN_STATUSES]
        online = sum(1 for v in self.vens.values() if v.online_state(now, self.config.offline_timeout_s) == "online")
        return {"status": "ok" if self.started else "stopped", "database": self.store.dialect,
                "vens": len(self.vens), "vensOnline": online, "openEvents": len(open_events),
                "activeEvents": sum(1 for e in open_events if e.status == ACTIVE),
                "pendingCommands": self.book.pending_count(), "lastRound": dict(self.last_round),
                "counters": dict(self.counters)}

    # ------------------------------------------------------------------------------ helpers ----
    def _live_event(self, event_id: Any) -> Event:
        if not isinstance(event_id, str):
            raise invalid("eventId", f"expected a string, got {type(event_id).__name__}")
        event = self.events.get(event_id)
        if event is None:
            stored = self.store.get_event(event_id)
            if stored is None:
                raise not_found("eventId", f"no event {event_id!r}")
            raise conflict("eventId", f"event {event_id!r} is {stored.status}")
        return event

    def _any_event(self, event_id: Any) -> Event:
        if not isinstance(event_id, str):
            raise invalid("eventId", f"expected a string, got {type(event_id).__name__}")
        event = self.events.get(event_id) or self.store.get_event(event_id)
        if event is None:
            raise not_found("eventId", f"no event {event_id!r}")
        return event

    def _event_from_request(self, req: EventRequest, event_id: str, now: float) -> Event:
        if req.requested_reduction_kw is not None:
            requested = req.requested_reduction_kw
        else:
            levels = self.config.program(req.program_id).simple_levels_kw
            requested = levels[req.level or 0]
        return Event(event_id=event_id, start=epoch(req.start_time), end=epoch(req.end_time), requested_kw=requested,
                     signal=req.signal, level=req.level, program_id=req.program_id, name=req.name,
                     ven_ids=list(dict.fromkeys(req.ven_ids)), groups=list(dict.fromkeys(req.groups)),
                     ramp_up_s=req.ramp_up_s, randomize_s=req.randomize_start_s, priority=req.priority,
                     test=req.test, created_at=now, updated_at=now)

    def _validate_event(self, event: Event, now: float) -> None:
        unknown = [ven_id for ven_id in event.ven_ids if ven_id not in self.vens]
        if unknown:
            raise invalid("venIds", f"unknown VEN(s): {', '.join(unknown[:10])}")
        if event.end <= now:
            raise invalid("endTime", "is in the past")
        if event.randomize_s >= event.end - event.start:
            raise invalid("randomizeStartS", "must be shorter than the event")

    @staticmethod
    def _request_dict(event: Event) -> dict[str, Any]:
        data = event.to_dict()
        out = {key: data[key] for key in ("eventId", "programId", "name", "startTime", "endTime", "rampUpS",
                                          "randomizeStartS", "priority", "test") if data[key] is not None}
        if event.signal == SIGNAL_LOAD_DISPATCH:
            out["requestedReductionKw"] = event.requested_kw
        else:
            out["level"] = event.level
        if event.ven_ids:
            out["venIds"] = list(event.ven_ids)
        if event.groups:
            out["groups"] = list(event.groups)
        return out

    def _publish(self, event: Event) -> None:
        try:
            self.sender.publish_event(event.to_dict())
        except Exception:  # a notice that fails to go out must not stop the lifecycle
            self.counters["publishErrors"] += 1
            _log.exception("publishing the status of event %s failed", event.event_id)

    # ============================================================================ lifecycle ====
    def _advance(self, event: Event) -> None:
        """Apply every transition due at now, in order, then arm the timer of the next one."""
        now = self.clock.now()
        for status in transitions(event, status_at(event, now)):
            if status == NEAR:
                event.status = NEAR
                event.updated_at = now
                self.store.save(events=[event])
                self._publish(event)
            elif status == ACTIVE:
                self._activate(event)
            elif status == COMPLETED:
                self._finish(event, COMPLETED)
        self._arm_lifecycle(event)

    def _arm_lifecycle(self, event: Event) -> None:
        old = self._lifecycle_timers.pop(event.event_id, None)
        if old is not None:
            old.cancel()
        if event.status in TERMINAL_STATUSES:
            return
        when = next_instant(event, self.clock.now())
        if when is not None:
            event_id = event.event_id
            self._lifecycle_timers[event_id] = self.clock.call_at(when, lambda: self._on_lifecycle(event_id))

    def _on_lifecycle(self, event_id: str) -> None:
        self._lifecycle_timers.pop(event_id, None)
        event = self.events.get(event_id)
        if event is None or event.status in TERMINAL_STATUSES:
            return
        try:
            self._advance(event)
        except Exception:  # the agent must outlive one failing transition; the log names it
            self.counters["timerErrors"] += 1
            _log.exception("lifecycle transition of event %s failed", event_id)
            self._arm_lifecycle(event)

    def _targets(self, event: Event) -> list[Ven]:
        now = self.clock.now()
        timeout = self.config.offline_timeout_s
        targets = event.matcher()
        return [ven for ven in self.vens.values() if targets(ven)
                and (self.config.dispatch_to_offline or ven.online_state(now, timeout) != "offline")]

    def _claim(self, event: Event, p: Participant) -> str | None:
        """Give the VEN to `event` unless it serves an event that takes precedence (then `superseded`).
        Returns the id of an event the VEN was taken from."""
        owner_id = self.serving.get(p.ven_id)
        owner = self.events.get(owner_id) if owner_id and owner_id != event.event_id else None
        if owner is not None and owner.status == ACTIVE:
            if event.priority <= owner.priority:
                p.state = P_SUPERSEDED
                return None
            lost = self.participants[owner.event_id].get(p.ven_id)
            if lost is not None:
                lost.state = P_RELEASED
                self._deactivate_current(owner.event_id, p.ven_id)
                self._dirty_participants[(owner.event_id, p.ven_id)] = lost
        p.state = P_PLANNED
        self.serving[p.ven_id] = event.event_id
        return owner.event_id if owner is not None and owner.status == ACTIVE else None

    def _activate(self, event: Event) -> None:
        self._activation_started = (time.perf_counter(), time.thread_time())
        now = self.clock.now()
        event.status = ACTIVE
        event.updated_at = now
        parts = self.participants.setdefault(event.event_id, {})
        preempted: set[str] = set()
        claimed: list[Participant] = []
        for ven in self._targets(event):
            p = parts.get(ven.ven_id) or Participant(event.event_id, ven.ven_id)
            parts[ven.ven_id] = p
            taken_from = self._claim(event, p)
            if taken_from:
                preempted.add(taken_from)
            if p.state == P_PLANNED:
                claimed.append(p)
                p.offset_s = randomized_offset(self.rng, event.randomize_s, self.config.randomize_granularity_s)
        self._allocate(event, claimed)
        self.counters["eventsActivated"] += 1
        self._dispatch_due(event, extra_participants=list(parts.values()), extra_events=[event])
        self._publish(event)
        for other in sorted(preempted):
            self._reallocate(other)

    def _allocate(self, event: Event, parts: list[Participant]) -> None:
        rule = self.config.program(event.program_id).allocation
        candidates = [allocation.Candidate(p.ven_id, self.vens[p.ven_id].capacity_kw()) for p in parts
                      if p.ven_id in self.vens]
        result = allocation.allocate(rule, event.requested_kw, candidates)
        for p in parts:
            p.allocated_kw = result.shares.get(p.ven_id, 0.0)
        if result.unallocated_kw > EPS_KW:
            self.counters["unallocatedEvents"] += 1
            _log.warning("event %s: %.3f kW of %.3f kW could not be allocated (not enough capacity)",
                         event.event_id, result.unallocated_kw, event.requested_kw)

    def _dispatch_due(self, event: Event, extra_participants: Iterable[Participant] = (),
                      extra_events: Iterable[Event] = ()) -> None:
        """Send the commands of planned VENs whose (randomized) start has come; arm one timer per later
        start instant."""
        now = self.clock.now()
        parts = self.participants.get(event.event_id, {})
        due: list[Participant] = []
        later: set[float] = set()
        for p in parts.values():
            if p.state != P_PLANNED:
                continue
            if event.start + p.offset_s <= now + 1e-6:
                due.append(p)
            else:
                later.add(p.offset_s)
        rounds = self._round_timers.setdefault(event.event_id, {})
        event_id = event.event_id
        for offset in sorted(later):
            if offset not in rounds:
                rounds[offset] = self.clock.call_at(event.start + offset,
                                                    lambda o=offset: self._on_round(event_id, o))
        records = []
        for p in due:
            p.state = P_DISPATCHED
            records.append(self._event_command(event, p, now))
        self._send(records, participants=[*due, *extra_participants], events=extra_events)

    def _on_round(self, event_id: str, offset: float) -> None:
        self._round_timers.get(event_id, {}).pop(offset, None)
        event = self.events.get(event_id)
        if event is None or event.status != ACTIVE:
            return
        try:
            self._dispatch_due(event)
        except Exception:  # one failing round must not stop the agent; its commands stay planned
            self.counters["timerErrors"] += 1
            _log.exception("dispatch round of event %s failed", event_id)

    def _event_command(self, event: Event, p: Participant, now: float) -> CommandRecord:
        cid = correlation_id(event.event_id, event.modification_number, OP_EVENT, p.ven_id, p.revision)
        known = self.book.get(cid)
        if known is not None:
            return known
        self._deactivate_current(event.event_id, p.ven_id)
        record = self.book.add(CommandRecord(
            correlation_id=cid, event_id=event.event_id, ven_id=p.ven_id, op=OP_EVENT,
            modification_number=event.modification_number, requested_kw=p.allocated_kw,
            start=event.start + p.offset_s,
            until=event.end, priority=event.priority, test=event.test, created_at=now))
        self.current[(event.event_id, p.ven_id)] = record
        return record

    def _restore_command(self, event: Event, ven_id: str, now: float) -> CommandRecord:
        self._deactivate_current(event.event_id, ven_id)
        cid = correlation_id(event.event_id, event.modification_number, OP_RESTORE, ven_id)
        return self.book.add(CommandRecord(
            correlation_id=cid, event_id=event.event_id, ven_id=ven_id, op=OP_RESTORE,
            modification_number=event.modification_number, requested_kw=0.0, start=None, until=None,
            priority=event.priority, test=event.test, created_at=now))

    def _deactivate_current(self, event_id: str, ven_id: str) -> None:
        record = self.current.pop((event_id, ven_id), None)
        if record is not None and record.active:
            record.active = False
            record.next_retry_at = None
            if record.acked_at is None:
                self.counters["commandsSuperseded"] += 1

    def _finish(self, event: Event, status: str) -> None:
        """Complete or cancel: stop pending commands, hand each VEN over or restore it."""
        now = self.clock.now()
        event.status = status
        event.ended_at = now
        event.updated_at = now
        for handle in self._round_timers.pop(event.event_id, {}).values():
            handle.cancel()
        timer = self._lifecycle_timers.pop(event.event_id, None)
        if timer is not None:
            timer.cancel()
        records: list[CommandRecord] = []
        changed: list[Participant] = []
        for p in list(self.participants.get(event.event_id, {}).values()):
            if p.state in SENT_STATES and self.serving.get(p.ven_id) == event.event_id:
                handed = self._hand_over(p.ven_id, event.event_id, now)
                if handed is not None:
                    records.append(handed[0])
                    changed.append(handed[1])
                    self._deactivate_current(event.event_id, p.ven_id)
                else:
                    self.serving.pop(p.ven_id, None)
                    records.append(self._restore_command(event, p.ven_id, now))
                    p.restore_sent = True
                p.state = P_RELEASED
                changed.append(p)
            elif p.state in CLAIM_STATES:
                if self.serving.get(p.ven_id) == event.event_id:
                    self.serving.pop(p.ven_id, None)
                self._deactivate_current(event.event_id, p.ven_id)
                p.state = P_RELEASED
                changed.append(p)
        self.counters["eventsCompleted" if status == COMPLETED else "eventsCancelled"] += 1
        self._send(records, participants=changed, events=[event])
        self._publish(event)

    def _commitment(self, event_id: str) -> float:
        total = 0.0
        for p in self.participants.get(event_id, {}).values():
            if p.state == P_ACKED:
                total += min(p.accepted_kw if p.accepted_kw is not None else p.allocated_kw, p.allocated_kw)
            elif p.state in (P_PLANNED, P_DISPATCHED):
                total += p.allocated_kw
        return total

    def _hand_over(self, ven_id: str, from_event: str, now: float) -> tuple[CommandRecord, Participant] | None:
        waiting = [e for e in self.events.values()
                   if e.status == ACTIVE and e.event_id != from_event
                   and self.participants.get(e.event_id, {}).get(ven_id) is not None
                   and self.participants[e.event_id][ven_id].state == P_SUPERSEDED]
        for other in sorted(waiting, key=lambda e: (-e.priority, e.start, e.event_id)):
            need = other.requested_kw - self._commitment(other.event_id)
            capacity = self.vens[ven_id].capacity_kw() if ven_id in self.vens else None
            kw = need if capacity is None else min(need, capacity)
            if kw <= 1e-3:
                continue
            p = self.participants[other.event_id][ven_id]
            p.allocated_kw = kw
            p.revision += 1
            p.state = P_DISPATCHED
            self.serving[ven_id] = other.event_id
            self.counters["handovers"] += 1
            return self._event_command(other, p, now), p
        return None

    def _reallocate(self, event_id: str) -> None:
        """Spread the event's shortfall (rejections, partial acceptances, lost VENs) over VENs with headroom."""
        event = self.events.get(event_id)
        if event is None or event.status != ACTIVE:
            return
        shortfall = event.requested_kw - self._commitment(event_id)
        if shortfall <= 1e-3:
            return
        parts = [p for p in self.participants[event_id].values()
                 if not p.capped and p.state in (P_PLANNED, P_DISPATCHED, P_ACKED)]
        candidates = [allocation.Candidate(p.ven_id, self.vens[p.ven_id].capacity_kw(), p.allocated_kw)
                      for p in parts if p.ven_id in self.vens]
        rule = self.config.program(event.program_id).allocation
        extra = allocation.reallocate(rule, shortfall, candidates)
        now = self.clock.now()
        records: list[CommandRecord] = []
        changed: list[Participant] = []
        for p in parts:
            add = extra.shares.get(p.ven_id, 0.0)
            if add <= 1e-6:
                continue
            p.allocated_kw += add
            changed.append(p)
            if p.state != P_PLANNED:
                p.revision += 1
                p.state = P_DISPATCHED
                records.append(self._event_command(event, p, now))
        if changed:
            self.counters["reallocations"] += 1
            _log.info("event %s: re-allocated %.3f kW over %d VENs (%.3f kW found no headroom)", event_id,
                      shortfall - extra.unallocated_kw, len(changed), extra.unallocated_kw)
        self._send(records, participants=changed)

    def _redispatch(self, event: Event) -> None:
        """After a modification of an active event: restore VENs no longer targeted, claim new ones,
        re-allocate from scratch and send every VEN its new command (new modificationNumber)."""
        now = self.clock.now()
        parts = self.participants.setdefault(event.event_id, {})
        targets = {ven.ven_id for ven in self._targets(event)}
        records: list[CommandRecord] = []
        preempted: set[str] = set()
        for p in list(parts.values()):
            if p.ven_id in targets or p.state not in (*CLAIM_STATES, P_SUPERSEDED):
                continue
            if p.state in SENT_STATES and self.serving.get(p.ven_id) == event.event_id:
                records.append(self._restore_command(event, p.ven_id, now))
                p.restore_sent = True
            if self.serving.get(p.ven_id) == event.event_id:
                self.serving.pop(p.ven_id, None)
            self._deactivate_current(event.event_id, p.ven_id)
            p.state = P_DROPPED
        for ven_id in sorted(targets):
            p = parts.get(ven_id)
            if p is not None and p.state in CLAIM_STATES:
                continue
            if p is None:
                p = parts[ven_id] = Participant(event.event_id, ven_id)
                p.offset_s = randomized_offset(self.rng, event.randomize_s, self.config.randomize_granularity_s)
            taken_from = self._claim(event, p)
            if taken_from:
                preempted.add(taken_from)
        serving = [p for p in parts.values() if p.state in CLAIM_STATES]
        for p in serving:
            p.capped = False
            p.accepted_kw = None
            p.revision = 0
        self._allocate(event, serving)
        for p in serving:
            if p.state == P_PLANNED and event.start + p.offset_s > now + 1e-6:
                continue
            p.state = P_DISPATCHED
            records.append(self._event_command(event, p, now))
        self._send(records, participants=list(parts.values()), events=[event])
        self._dispatch_due(event)
        for other in sorted(preempted):
            self._reallocate(other)

    # ============================================================================ sending ====
    def _transport(self, ven_id: str) -> str:
        ven = self.vens.get(ven_id)
        return ven.transport if ven is not None else "mqtt"

    def _send(self, records: list[CommandRecord], participants: Iterable[Participant] = (),
              events: Iterable[Event] = ()) -> None:
        """Hand a round of commands over (bus per local VEN, batches of at most `batchSize` for the bridge, each
        rendered just before it is sent); the events are written
        at once, the commands and participants with the next flush (`flushIntervalS`), so no database work
        competes with the fan-out.

        Correlation ids are deterministic, so if the process dies between hand-off and write the resend
        after restart is the same command, applied once by the VEN."""
        began, began_cpu = self._activation_started or (time.perf_counter(), time.thread_time())
        self._activation_started = None
        now = self.clock.now()
        size = self.config.batch_size
        first_batch: float | None = None
        local_count = remote_count = 0
        on_bus: list[CommandRecord] = []
        bridged: list[CommandRecord] = []
        for record in records:
            (on_bus if self._transport(record.ven_id) == TRANSPORT_BUS else bridged).append(record)
        groups = ([on_bus] if on_bus else []) + [bridged[i:i + size] for i in range(0, len(bridged), size)]
        for group in groups:
            local, remote = self.book.render_round(group, now, self._transport)
            for ven_id, payload in local:
                try:
                    self.sender.send_local(ven_id, payload)
                    self.counters["localCommandsSent"] += 1
                except Exception:  # a failed hand-off is retried by the retry timer
                    self.counters["sendErrors"] += 1
                    _log.exception("sending command %s to local VEN %s failed", payload.get("correlationId"),
                                   ven_id)
            if remote:
                try:
                    self.sender.send_batch(remote)
                    self.counters["batchesSent"] += 1
                    self.counters["remoteCommandsSent"] += len(remote)
                except Exception:  # a failed hand-off is retried by the retry timer
                    self.counters["sendErrors"] += 1
                    _log.exception("handing a batch of %d commands to the bridge failed", len(remote))
                if first_batch is None:
                    first_batch = time.perf_counter()
            local_count += len(local)
            remote_count += len(remote)
        handed, handed_cpu = time.perf_counter(), time.thread_time()
        events = list(events)
        if events:
            self.store.save(events=events)
        self._stage(commands=records, participants=participants)
        if local_count or remote_count:
            self.last_round = {"local": local_count, "remote": remote_count,
                               "handOffMs": round((handed - began) * 1000, 3),
                               "handOffCpuMs": round((handed_cpu - began_cpu) * 1000, 3),
                               "firstBatchMs": (None if first_batch is None
                                                else round((first_batch - began) * 1000, 3))}
            self._arm_retry()

    def _arm_retry(self) -> None:
        when = self.book.next_retry()
        if when is not None and self._retry_at is not None and abs(when - self._retry_at) < 1e-6:
            return
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
            self._retry_at = None
        if when is not None and self.started:
            self._retry_at = when
            self._retry_timer = self.clock.call_at(when, self._on_retry)

    def _on_retry(self) -> None:
        self._retry_timer = None
        self._retry_at = None
        try:
            self._retry_due()
        except Exception:  # keep retrying later rather than stop
            self.counters["timerErrors"] += 1
            _log.exception("retry round failed")
        self._arm_retry()

    def _retry_due(self) -> None:
        now = self.clock.now()
        resend: list[CommandRecord] = []
        given_up: list[CommandRecord] = []
        for record in self.book.due(now):
            event = self.events.get(record.event_id)
            if record.op == OP_EVENT:
                alive = event is not None and event.status == ACTIVE and now < event.end
            else:
                alive = event is not None and event.ended_at is not None \
                    and now <= event.ended_at + self.config.restore_retry_window_s
            if alive:
                resend.append(record)
            else:
                record.active = False
                record.next_retry_at = None
                given_up.append(record)
                if record.op == OP_RESTORE:
                    self.counters["restoresUnacked"] += 1
                    _log.warning("VEN %s never acked restore %s", record.ven_id, record.correlation_id)
        self.counters["retries"] += len(resend)
        if given_up:
            self.store.save(commands=given_up)
            self._stage(commands=given_up)  # written again by the next flush, after any flush in flight
        if resend:
            _log.info("retrying %d unacked commands", len(resend))
            self._send(resend)

    # ============================================================================ inbound ====
    def on_acks(self, acks: list[Ack]) -> None:
        now = self.clock.now()
        rows: list[AckRow] = []
        touched: list[CommandRecord] = []
        parts: list[Participant] = []
        to_reallocate: set[str] = set()
        for ack in acks:
            self.counters["acks"] += 1
            record = self.book.get(ack.correlation_id)
            ven_id = ack.ven_id or (record.ven_id if record else None)
            if ven_id is not None and ven_id in self.vens:
                self._seen(self.vens[ven_id], now)
            if record is None:
                outcome = "unknown"
                self.counters["unknownAcks"] += 1
            elif record.acked_at is not None:
                outcome = "duplicate"
                self.counters["duplicateAcks"] += 1
            else:
                outcome = "recorded"
                record.acked_at = now
                record.ack_ok = ack.ok
                record.accepted_kw = ack.accepted_reduce_kw
                record.error = ack.error
                record.next_retry_at = None
                if record.first_sent_at is not None:
                    record.response_ms = round((now - record.first_sent_at) * 1000.0, 3)
                touched.append(record)
                p = self._apply_ack(record, ack, to_reallocate)
                if p is not None:
                    parts.append(p)
            rows.append(AckRow(received_at=now, correlation_id=ack.correlation_id, ven_id=ven_id,
                               event_id=ack.event_id or (record.event_id if record else None),
                               op=record.op if record else ack.op, ok=ack.ok, target_kw=ack.target_kw,
                               accepted_kw=ack.accepted_reduce_kw, error=ack.error,
                               ack_ts=ack.ts.timestamp() if ack.ts else None,
                               response_ms=record.response_ms if record is not None and outcome == "recorded"
                               else None, outcome=outcome))
        self._stage(commands=touched, participants=parts, acks=rows)
        for event_id in sorted(to_reallocate):
            self._reallocate(event_id)

    def _apply_ack(self, record: CommandRecord, ack: Ack, to_reallocate: set[str]) -> Participant | None:
        if record.op != OP_EVENT or self.current.get((record.event_id, record.ven_id)) is not record:
            return None
        p = self.participants.get(record.event_id, {}).get(record.ven_id)
        if p is None or p.state not in (P_DISPATCHED, P_ACKED):
            return None
        if not ack.ok:
            self.counters["rejectedAcks"] += 1
            p.state, p.accepted_kw, p.capped = P_REJECTED, 0.0, True
            to_reallocate.add(record.event_id)
            return p
        accepted = ack.accepted_reduce_kw if ack.accepted_reduce_kw is not None else record.requested_kw
        p.state, p.accepted_kw = P_ACKED, accepted
        if accepted < record.requested_kw - 1e-3:
            p.capped = True
            to_reallocate.add(record.event_id)
        return p

    def on_telemetry(self, items: list[Telemetry]) -> None:
        now = self.clock.now()
        for t in items:
            self.counters["telemetry"] += 1
            ts = t.ts.timestamp()
            ven = self.vens.get(t.ven_id)
            if ven is None:
                self.counters["unknownVenTelemetry"] += 1
            else:
                self._seen(ven, now)
                ven.used_kw, ven.shed_kw, ven.telemetry_ts = t.used_power_kw, t.shed_power_kw, ts
                ven.telemetry_event_id = t.event_id
                if t.available_shed_kw is not None:
                    ven.available_kw = t.available_shed_kw
                owner = self.serving.get(t.ven_id)
                if owner is not None and t.event_id in (None, owner):
                    p = self.participants.get(owner, {}).get(t.ven_id)
                    if p is not None:
                        p.delivered_kw, p.delivered_at = t.shed_power_kw, ts
                        self._dirty_participants[(owner, t.ven_id)] = p
            self._telemetry_buffer.append(TelemetryRow(
                ven_id=t.ven_id, ts=ts, received_at=now, event_id=t.event_id, used_kw=t.used_power_kw,
                shed_kw=t.shed_power_kw, requested_kw=t.requested_reduction_kw, baseline_kw=t.baseline_power_kw,
                available_kw=t.available_shed_kw))

    def on_status(self, items: list[VenStatus]) -> None:
        now = self.clock.now()
        resend: list[CommandRecord] = []
        for status in items:
            ven = self.vens.get(status.ven_id)
            if ven is None:
                self.counters["unknownVenStatus"] += 1
                continue
            was_online = ven.online_state(now, self.config.offline_timeout_s) == "online"
            ven.reported_online = status.online
            if status.online:
                ven.last_seen = now
                if not was_online:
                    resend.extend(r for r in self.book.records.values() if r.ven_id == ven.ven_id and r.pending
                                  and r.attempts > 0)
            self._dirty_vens[ven.ven_id] = ven
        if resend:
            self.counters["retries"] += len(resend)
            self._send(resend)

    def _seen(self, ven: Ven, now: float) -> None:
        ven.last_seen = now
        if ven.reported_online is False:
            ven.reported_online = True
        self._dirty_vens[ven.ven_id] = ven

    # ============================================================================ flushing ====
    def _arm_flush(self) -> None:
        if self.started:
            self._flush_timer = self.clock.call_at(self.clock.now() + self.config.flush_interval_s, self._on_flush)

    def _on_flush(self) -> None:
        try:
            self.flush()
            self._prune()
        except Exception:  # the buffer is kept and written on the next flush
            self.counters["storeErrors"] += 1
            _log.exception("writing telemetry and VEN state failed")
        self._arm_flush()

    def _stage(self, *, commands: Iterable[CommandRecord] = (), participants: Iterable[Participant] = (),
                acks: Iterable[AckRow] = ()) -> None:
        """Keep records for the next flush (the latest state of each is what gets written)."""
        for record in commands:
            self._dirty_commands[record.correlation_id] = record
        for p in participants:
            self._dirty_participants[(p.event_id, p.ven_id)] = p
        self._ack_buffer.extend(acks)

    def flush(self) -> None:
        """Write buffered telemetry, acks, last-seen times, command and participant states in one transaction."""
        if not (self._telemetry_buffer or self._dirty_vens or self._dirty_participants or self._dirty_commands
                or self._ack_buffer):
            return
        telemetry, vens, parts = self._telemetry_buffer, self._dirty_vens, self._dirty_participants
        commands, acks = self._dirty_commands, self._ack_buffer
        self._telemetry_buffer, self._dirty_vens, self._dirty_participants = [], {}, {}
        self._dirty_commands, self._ack_buffer = {}, []
        try:
            writes = self.store.prepare(vens=list(vens.values()), participants=list(parts.values()),
                                        commands=list(commands.values()), acks=acks, telemetry=telemetry)
            self._offload(lambda: self.store.write(writes))
        except Exception:
            self._telemetry_buffer = telemetry + self._telemetry_buffer
            self._ack_buffer = acks + self._ack_buffer
            self._dirty_vens = {**vens, **self._dirty_vens}
            self._dirty_participants = {**parts, **self._dirty_participants}
            self._dirty_commands = {**commands, **self._dirty_commands}
            raise

    def _prune(self) -> None:
        """Forget finished events once their restore window is over (they stay in the store)."""
        horizon = self.clock.now() - self.config.restore_retry_window_s
        for event_id in [e.event_id for e in self.events.values()
                         if e.status in TERMINAL_STATUSES and e.ended_at is not None and e.ended_at < horizon]:
            del self.events[event_id]
            for p in self.participants.pop(event_id, {}).values():
                self.current.pop((event_id, p.ven_id), None)
            self.book.forget_event(event_id)

    # ============================================================================ raw ingest ====
    def ingest(self, kind: str, message: object, ven_id: str | None = None) -> list[str]:
        """Parse one bus message (`kind` ack / telemetry / status; `ven_id` from a per-VEN topic, None for
        a batch) and apply it. Returns the errors of the items that were refused."""
        parsers: dict[str, Callable[..., Any]] = {"ack": inbound.parse_ack, "telemetry": inbound.parse_telemetry,
                                                  "status": inbound.parse_status}
        appliers: dict[str, Callable[[list[Any]], None]] = {"ack": self.on_acks, "telemetry": self.on_telemetry,
                                                             "status": self.on_status}
        parse = parsers[kind]
        if ven_id is not None:
            try:
                check_ven_id(ven_id)
                parsed = inbound.Parsed(items=[parse(message, ven_id)])
            except PayloadError as exc:
                parsed = inbound.Parsed(errors=[str(exc)])
        else:
            parsed = inbound.parse_batch(message, parse)
        if parsed.errors:
            self.counters["badMessages"] += len(parsed.errors)
        if parsed.items:
            appliers[kind](parsed.items)
        return parsed.errors
