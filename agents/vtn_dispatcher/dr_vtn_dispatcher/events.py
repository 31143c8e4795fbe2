"""Events: validation (payload, targets, the VTN's bounds), the lifecycle timers, modification, stop and cancel.

One timer per event, armed for its next instant (start - rampUp, start, end), never polling. Activation and
the end hand over to the `Dispatcher`; every status change is published through the `Sender`.

Bounds (config): an event lasts at most `maxEventDurationS`, asks at most `maxRequestedKw` (a SIMPLE level
maps to its kW, bounded the same), starts at most `maxStartAheadS` from now. A request outside them is
refused with the field named, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from dr_common.payloads import EVENT_FIELDS, SIGNAL_CAP, SIGNAL_LOAD_DISPATCH, EventRequest
from dr_common.schema import PayloadError, parse_fields
from dr_vtn_dispatcher.config import VtnConfig
from dr_vtn_dispatcher.dispatch import Sender, publish_event
from dr_vtn_dispatcher.dispatcher import Dispatcher
from dr_vtn_dispatcher.errors import ApiError, conflict, invalid, not_found
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.lifecycle import Scheduler, Step, TimerHandle, next_instant, split_steps, status_at, transitions
from dr_vtn_dispatcher.metrics import event_metrics
from dr_vtn_dispatcher.model import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    NEAR,
    STATUSES,
    TERMINAL_STATUSES,
    CommandRecord,
    Event,
    Participant,
    epoch,
)
from dr_vtn_dispatcher.participation import Participation
from dr_vtn_dispatcher.registry import Registry, checked_id
from dr_vtn_dispatcher.store import Store

_log = logging.getLogger(__name__)

_UPDATE_FIELDS = tuple(dataclasses.replace(f, required=False) for f in EVENT_FIELDS)
OFFSET_MAX = 1_000_000_000  # paging further than this is refused (the database's integers end at 2**63)
ASK_KEYS = ("requestedReductionKw", "level", "capKw")   # what an event asks: one of them
STEP_KEYS = (*ASK_KEYS, "signal")                         # what a step changes
_EVENT_ATTRS = ("start", "end", "requested_kw", "signal", "level", "program_id", "name", "ven_ids", "groups",
                "ramp_up_s", "randomize_s", "priority", "test", "modification_number", "updated_at")


class EventManager:
    """The live events (open, and finished ones inside their restore window) and their lifecycle."""

    def __init__(self, events: dict[str, Event], registry: Registry, participation: Participation,
                 dispatcher: Dispatcher, store: Store, journal: Journal, scheduler: Scheduler, sender: Sender,
                 config: VtnConfig, counters: Counter[str]) -> None:
        self.events = events
        self.registry = registry
        self.parts = participation
        self.dispatcher = dispatcher
        self.store = store
        self.journal = journal
        self.clock = scheduler
        self.sender = sender
        self.config = config
        self.counters = counters
        self._timers: dict[str, TimerHandle] = {}
        self.steps: dict[str, list[Step]] = {}         # future payload steps of live events, by eventId
        self._step_timers: dict[str, TimerHandle] = {}

    def stop(self) -> None:
        """Cancel every lifecycle and step timer."""
        for handle in [*self._timers.values(), *self._step_timers.values()]:
            handle.cancel()
        self._timers.clear()
        self._step_timers.clear()

    # ------------------------------------------------------------------------------- API ----------
    def create(self, payload: Mapping[str, Any], steps: list[Step] | None = None) -> dict[str, Any]:
        """Validate and store a new event, publish it and arm its lifecycle. `steps` (`[(instant, changes)]`,
        the first being `payload` itself) change its requested kW or level at their instants (`set_steps`)."""
        try:
            req = EventRequest.from_payload(payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        now = self.clock.now()
        event_id = req.event_id or f"evt-{uuid.uuid4().hex[:12]}"
        if event_id in self.events or self.store.get_event(event_id) is not None:
            raise conflict("eventId", f"event {event_id!r} already exists")
        event = self._event_from_request(req, event_id, now)
        self._validate(event, now)
        self._check_steps(event, payload, steps or [], now)
        self.journal.save(events=[event])
        self.events[event_id] = event
        self.parts.of(event_id)
        self.counters["eventsCreated"] += 1
        publish_event(self.sender, event, self.counters)
        self.advance(event)
        if steps:
            self.set_steps(event_id, steps)
        return event.to_dict()

    def update(self, event_id: str, payload: Mapping[str, Any], steps: list[Step] | None = None) -> dict[str, Any]:
        """Change an open event; bumps its modificationNumber and re-dispatches an active one. `steps`, when
        given, replace the event's steps; without them the steps stay."""
        event = self._live(event_id)
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
        if any(key in changes for key in ASK_KEYS):   # what the event asks is replaced, not combined
            for key in ASK_KEYS:
                if key not in changes:
                    merged.pop(key, None)
        if changes.get("allVens"):
            merged.pop("venIds", None)
            merged.pop("groups", None)
        if "venIds" in changes or "groups" in changes or "allVens" in changes:
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
        self._validate(updated, now)
        if steps is not None:
            self._check_steps(updated, merged, steps, now)
        updated.status, updated.created_at = event.status, event.created_at
        updated.modification_number = event.modification_number + 1
        self.journal.save(events=[updated])
        for attr in _EVENT_ATTRS:
            setattr(event, attr, getattr(updated, attr))
        self.counters["eventsModified"] += 1
        if event.status == ACTIVE and now < event.end:
            self.dispatcher.redispatch(event)
        publish_event(self.sender, event, self.counters)
        self.advance(event)
        if steps is not None:
            self.set_steps(event_id, steps)
        return event.to_dict()

    def stop_event(self, event_id: str) -> dict[str, Any]:
        """End an event now: an active one completes (restores go out), one not yet active is cancelled."""
        event = self._live(event_id)
        if event.status in TERMINAL_STATUSES:
            raise conflict("eventId", f"event {event_id!r} is already {event.status}")
        self.finish(event, COMPLETED if event.status == ACTIVE else CANCELLED)
        return event.to_dict()

    def cancel(self, event_id: str) -> dict[str, Any]:
        """Cancel an event; VENs already dispatched are restored."""
        event = self._live(event_id)
        if event.status in TERMINAL_STATUSES:
            raise conflict("eventId", f"event {event_id!r} is already {event.status}")
        self.finish(event, CANCELLED)
        return event.to_dict()

    def get(self, event_id: str) -> dict[str, Any]:
        """One event, live or from the store."""
        return self._any(event_id).to_dict()

    def list(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Events from the store, latest start first (live ones with their current state)."""
        if status is not None and status not in STATUSES:
            raise invalid("status", f"must be one of {', '.join(STATUSES)}; got {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise invalid("limit", "must be a whole number from 1 to 10000")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= OFFSET_MAX:
            raise invalid("offset", f"must be a whole number from 0 to {OFFSET_MAX}")
        return [self.events.get(e.event_id, e).to_dict() for e in self.store.list_events(status, limit, offset)]

    def metrics(self, event_id: str) -> dict[str, Any]:
        """Per-event metrics with per-VEN detail."""
        now = self.clock.now()
        checked_id(event_id, "eventId")
        if event_id in self.events:
            event = self.events[event_id]
            participants: Iterable[Participant] = self.parts.participants.get(event_id, {}).values()
            commands: Iterable[CommandRecord] = self.parts.book.for_event(event_id)
        else:
            event = self._any(event_id)
            participants = self.store.load_participants([event_id])
            commands = self.store.load_commands([event_id])
        return event_metrics(event, participants, commands, self.registry.vens, now,
                             self.registry.offline_timeout_s)

    # ------------------------------------------------------------------------------- helpers ------
    def _live(self, event_id: Any) -> Event:
        event = self.events.get(checked_id(event_id, "eventId"))
        if event is None:
            stored = self.store.get_event(event_id)
            if stored is None:
                raise not_found("eventId", f"no event {event_id!r}")
            raise conflict("eventId", f"event {event_id!r} is {stored.status}")
        return event

    def _any(self, event_id: Any) -> Event:
        event = self.events.get(checked_id(event_id, "eventId")) or self.store.get_event(event_id)
        if event is None:
            raise not_found("eventId", f"no event {event_id!r}")
        return event

    def _event_from_request(self, req: EventRequest, event_id: str, now: float) -> Event:
        if req.cap_kw is not None:
            requested = req.cap_kw            # an IMPORT_CAPACITY_LIMIT event keeps its cap here (Event.cap_kw)
        elif req.requested_reduction_kw is not None:
            requested = req.requested_reduction_kw
        else:
            levels = self.config.program(req.program_id).simple_levels_kw
            requested = levels[req.level or 0]
        return Event(event_id=event_id, start=epoch(req.start_time), end=epoch(req.end_time), requested_kw=requested,
                     signal=req.signal, level=req.level, program_id=req.program_id, name=req.name,
                     ven_ids=list(dict.fromkeys(req.ven_ids)), groups=list(dict.fromkeys(req.groups)),
                     ramp_up_s=req.ramp_up_s, randomize_s=req.randomize_start_s, priority=req.priority,
                     test=req.test, created_at=now, updated_at=now)

    def _validate(self, event: Event, now: float) -> None:
        unknown = [ven_id for ven_id in event.ven_ids if ven_id not in self.registry]
        if unknown:
            raise invalid("venIds", f"unknown VEN(s): {', '.join(unknown[:10])}")
        if event.end <= now:
            raise invalid("endTime", "is in the past")
        if event.randomize_s >= event.end - event.start:
            raise invalid("randomizeStartS", "must be shorter than the event")
        config = self.config
        if event.end - event.start > config.max_event_duration_s + 1e-6:
            raise invalid("durationS", f"{event.end - event.start:g} s is longer than this VTN accepts "
                                       f"(maxEventDurationS {config.max_event_duration_s:g} s)")
        if event.reduction_kw > config.max_requested_kw + 1e-9:
            field = "requestedReductionKw" if event.signal == SIGNAL_LOAD_DISPATCH else "level"
            raise invalid(field, f"{event.reduction_kw:g} kW is more than this VTN accepts "
                                 f"(maxRequestedKw {config.max_requested_kw:g} kW)")
        if event.start - now > config.max_start_ahead_s + 1e-6:
            raise invalid("startTime", f"is {event.start - now:g} s ahead; this VTN accepts at most "
                                       f"{config.max_start_ahead_s:g} s (maxStartAheadS)")

    @staticmethod
    def _request_dict(event: Event) -> dict[str, Any]:
        data = event.to_dict()
        out = {key: data[key] for key in ("eventId", "programId", "name", "startTime", "endTime", "rampUpS",
                                          "randomizeStartS", "priority", "test") if data[key] is not None}
        if event.signal == SIGNAL_CAP:
            out["capKw"] = event.requested_kw
        elif event.signal == SIGNAL_LOAD_DISPATCH:
            out["requestedReductionKw"] = event.requested_kw
        else:
            out["level"] = event.level
        if event.ven_ids:
            out["venIds"] = list(event.ven_ids)
        if event.groups:
            out["groups"] = list(event.groups)
        if event.all_vens:
            out["allVens"] = True
        return out

    # ------------------------------------------------------------------------------- steps --------
    def _check_steps(self, event: Event, payload: Mapping[str, Any], steps: list[Step], now: float) -> None:
        """Refuse steps outside the event or asking more than the VTN accepts, naming the interval."""
        base = {key: value for key, value in payload.items() if key not in STEP_KEYS}
        for index, (at, changes) in enumerate(steps):
            field = f"intervals.{index}.payloads"
            if not event.start - 1e-6 <= at < event.end:
                raise invalid(f"intervals.{index}.intervalPeriod", "starts outside the event")
            try:
                step = self._event_from_request(EventRequest.from_payload({**base, **changes}), event.event_id, now)
            except PayloadError as exc:
                raise invalid(field, f"{exc.field}: {exc.reason}") from None
            if step.reduction_kw > self.config.max_requested_kw + 1e-9:
                raise invalid(field, f"{step.reduction_kw:g} kW is more than this VTN accepts "
                                     f"(maxRequestedKw {self.config.max_requested_kw:g} kW)")

    def set_steps(self, event_id: str, steps: list[Step]) -> None:
        """Step an open event's requested kW or level at each instant of `steps` (`[(instant, changes)]`,
        `changes` holding `requestedReductionKw` or `level`): a modification each (a new modificationNumber,
        new commands to the serving VENs, as `update`). A step already due is applied now when the event does
        not ask for it yet (a start after a restart); later ones are armed, one timer at a time."""
        timer = self._step_timers.pop(event_id, None)
        if timer is not None:
            timer.cancel()
        self.steps.pop(event_id, None)
        event = self.events.get(event_id)
        if event is None or event.status in TERMINAL_STATUSES:
            return
        due, later = split_steps(steps, self.clock.now())
        if due is not None and not _asks(event, due):
            self._apply_step(event_id, due)
        if later:
            self.steps[event_id] = later
            self._step_timers[event_id] = self.clock.call_at(later[0][0], lambda: self._on_step(event_id))

    def _on_step(self, event_id: str) -> None:
        self._step_timers.pop(event_id, None)
        self.set_steps(event_id, self.steps.pop(event_id, []))

    def _apply_step(self, event_id: str, changes: Mapping[str, Any]) -> None:
        try:
            self.update(event_id, changes)
            self.counters["eventSteps"] += 1
        except ApiError as exc:  # e.g. the VEN a seed-API change targeted is gone: the event goes on unchanged
            self.counters["eventStepErrors"] += 1
            _log.warning("step of event %s refused: %s (%s)", event_id, exc.message, exc.field)
        except Exception:  # the agent must outlive one failing step; the log names it
            self.counters["eventStepErrors"] += 1
            _log.exception("step of event %s failed", event_id)

    # ------------------------------------------------------------------------------- lifecycle ----
    def advance(self, event: Event) -> None:
        """Apply every transition due at now, in order, then arm the timer of the next one."""
        now = self.clock.now()
        for status in transitions(event, status_at(event, now)):
            if status == NEAR:
                event.status = NEAR
                event.updated_at = now
                self.journal.save(events=[event])
                publish_event(self.sender, event, self.counters)
            elif status == ACTIVE:
                self.dispatcher.activate(event)
            elif status == COMPLETED:
                self.finish(event, COMPLETED)
        self._arm(event)

    def _arm(self, event: Event) -> None:
        old = self._timers.pop(event.event_id, None)
        if old is not None:
            old.cancel()
        if event.status in TERMINAL_STATUSES:
            return
        now = self.clock.now()
        when = next_instant(event, now)
        if when is not None:
            event_id = event.event_id
            lead = self.dispatcher.lead_s
            if lead > 0 and when == event.start and event.status != ACTIVE and when - lead > now:
                self._timers[event_id] = self.clock.call_at(when - lead, lambda: self._on_prepare(event_id))
                return
            self._timers[event_id] = self.clock.call_at(when, lambda: self._on_timer(event_id))

    def _on_prepare(self, event_id: str) -> None:
        """`prepareLeadS` before an event's start: its first round is prepared and held until the start."""
        event = self._timer_fired(event_id)
        if event is None:
            return
        try:
            if transitions(event, ACTIVE) == [ACTIVE]:
                self.dispatcher.prepare(event)
        except Exception:  # the agent must outlive it; the start instant activates the event as usual
            self.counters["timerErrors"] += 1
            _log.exception("preparing the start of event %s failed", event_id)
        self._arm(event)

    def _timer_fired(self, event_id: str) -> Event | None:
        """The event whose timer fired (its timer forgotten), or None when it is gone or has ended."""
        self._timers.pop(event_id, None)
        event = self.events.get(event_id)
        return None if event is None or event.status in TERMINAL_STATUSES else event

    def _on_timer(self, event_id: str) -> None:
        event = self._timer_fired(event_id)
        if event is None:
            return
        try:
            self.advance(event)
        except Exception:  # the agent must outlive one failing transition; the log names it
            self.counters["timerErrors"] += 1
            _log.exception("lifecycle transition of event %s failed", event_id)
            self._arm(event)

    def finish(self, event: Event, status: str) -> None:
        """Complete or cancel an event: its timer stops, its VENs are handed over or restored."""
        for timers in (self._timers, self._step_timers):
            timer = timers.pop(event.event_id, None)
            if timer is not None:
                timer.cancel()
        self.steps.pop(event.event_id, None)
        self.dispatcher.finish(event, status)

    def prune(self) -> None:
        """Forget finished events once their restore window is over (they stay in the store)."""
        horizon = self.clock.now() - self.config.restore_retry_window_s
        for event_id in [e.event_id for e in self.events.values()
                         if e.status in TERMINAL_STATUSES and e.ended_at is not None and e.ended_at < horizon]:
            del self.events[event_id]
            self.parts.forget(event_id)


def _asks(event: Event, changes: Mapping[str, Any]) -> bool:
    """True when the event already asks what `changes` (a step) asks."""
    if "level" in changes:
        return event.signal not in (SIGNAL_LOAD_DISPATCH, SIGNAL_CAP) and event.level == changes["level"]
    if "capKw" in changes:
        return event.signal == SIGNAL_CAP and abs(event.requested_kw - changes["capKw"]) < 1e-9
    return event.signal == SIGNAL_LOAD_DISPATCH and abs(event.requested_kw - changes["requestedReductionKw"]) < 1e-9
