"""Dispatch: rounds at each (randomized) start instant, hand-off to the bus and the bridge, retries with
backoff, resends to VENs coming back online, and ack matching.

A round sends one bus message per local VEN (`transport: bus`) and batches of at most `batchSize` commands
for the bridge. The round's commands and participant states are staged in the `Journal` (written by the
flush), so no database work competes with the fan-out. Event notices go out through the `Sender`.
An ack counts only when it comes from the VEN its command was for (the intake binds each ack to the VEN the
transport authenticated); any other is counted as a mismatch and logged at most once per VEN per minute.

With a sender that can hold a round (dr.vtn's command link), an event's first round is prepared `prepareLeadS`
ahead of its start (`prepare`): claimed, allocated, rendered and handed to the link as of the start instant,
which keeps it back and writes it at that instant (`release_held`; `active` is published then). Anything else
sent meanwhile releases it first, so nothing overtakes it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from dr_common.payloads import TRANSPORT_BUS, TRANSPORT_OADR, Ack
from dr_common.rejects import RateLimitedLog
from dr_vtn_dispatcher.config import VtnConfig
from dr_vtn_dispatcher.dispatch import CommandBook, Sender, publish_event
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.lifecycle import Scheduler, TimerHandle
from dr_vtn_dispatcher.model import (
    ACTIVE,
    COMPLETED,
    OP_EVENT,
    OP_RESTORE,
    P_DISPATCHED,
    P_PLANNED,
    CommandRecord,
    Event,
    Participant,
)
from dr_vtn_dispatcher.participation import Participation
from dr_vtn_dispatcher.registry import Registry
from dr_vtn_dispatcher.store import AckRow

_log = logging.getLogger(__name__)
_mismatch_log = logging.getLogger(__name__ + ".acks")

MISMATCH_LOG_INTERVAL_S = 60.0
SETTLE_S = 2.0  # at most this long after a round, its acks coming in keep deferrable work waiting (`settling`)


class Dispatcher:
    """Rounds, retries and acks of the live events' commands."""

    def __init__(self, events: Mapping[str, Event], registry: Registry, participation: Participation,
                 book: CommandBook, journal: Journal, scheduler: Scheduler, sender: Sender, config: VtnConfig,
                 counters: Counter[str]) -> None:
        self.events = events
        self.registry = registry
        self.parts = participation
        self.book = book
        self.journal = journal
        self.clock = scheduler
        self.sender = sender
        self.config = config
        self.counters = counters
        self.running = False
        self.last_round: dict[str, Any] = {}  # timings of the latest dispatch round (health)
        self._activation_started: tuple[float, float] | None = None  # (perf_counter, thread_time)
        self._round_timers: dict[str, dict[float, TimerHandle]] = {}
        self._retry_timer: TimerHandle | None = None
        self._retry_at: float | None = None
        self._mismatch_log = RateLimitedLog(_mismatch_log, MISMATCH_LOG_INTERVAL_S, clock=scheduler.now)
        self._held: tuple[str, TimerHandle] | None = None  # (eventId, release timer) of a round prepared ahead
        self._preparing = False
        self._settling: tuple[float, set[str]] | None = None  # the latest round: its instant, its unacked ids

    def settling(self) -> bool:
        """True while the latest round's acks are coming in: from its hand-off (a round prepared ahead: from its
        preparation) until all are in, at most SETTLE_S after the round's instant. The agent holds the timer
        flush and the bus echo meanwhile, so they do not compete with the acks for the CPU."""
        if self._settling is None:
            return False
        at, waiting = self._settling
        if not waiting or self.clock.now() - at >= SETTLE_S:
            self._settling = None
            return False
        return True

    @property
    def lead_s(self) -> float:
        """How far ahead of its start an event's first round is prepared (0: at the start, as with the bus)."""
        return self.config.prepare_lead_s if getattr(self.sender, "can_hold", False) else 0.0

    def prepare(self, event: Event) -> bool:
        """Activate `event` ahead of its start, its first round held by the sender until the start instant;
        False (nothing done) when the sender cannot hold a round now."""
        if self._held is not None or not self.sender.hold():  # type: ignore[attr-defined]
            return False
        self._preparing = True
        try:
            self.activate(event, at=event.start)
        finally:
            self._preparing = False
        at = getattr(self.clock, "call_at_precise", self.clock.call_at)
        self._held = (event.event_id, at(event.start, self.release_held))
        return True

    def release_held(self) -> None:
        """Send the round prepared ahead and publish its event `active` (at the start instant, or at once
        when something else is sent before)."""
        held, self._held = self._held, None
        if held is None:
            return
        event_id, timer = held
        timer.cancel()
        event = self.events.get(event_id)
        if event is not None:  # how far from the start instant the round went out (negative: released early)
            self.last_round["releasedAfterStartMs"] = round((self.clock.now() - event.start) * 1000.0, 3)
        self.sender.release()  # type: ignore[attr-defined]
        self.counters["roundsPreparedAhead"] += 1
        if event is not None and event.status == ACTIVE:
            publish_event(self.sender, event, self.counters)

    def stop(self) -> None:
        """Send a held round, cancel every round and retry timer."""
        self.release_held()
        for rounds in self._round_timers.values():
            for handle in rounds.values():
                handle.cancel()
        self._round_timers.clear()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._retry_timer = None
        self._retry_at = None
        self.running = False

    # ------------------------------------------------------------------------------- events -------
    def activate(self, event: Event, at: float | None = None) -> None:
        """The event starts: claim and allocate its VENs, send the first round, publish `active`. With `at`
        (`prepare`), all of it as of that instant, and `active` is published when the round is released."""
        self._activation_started = (time.perf_counter(), time.thread_time())
        now = self.clock.now() if at is None else at
        event.status = ACTIVE
        event.updated_at = now
        preempted = self.parts.activate(event, now)
        self.counters["eventsActivated"] += 1
        self.dispatch_due(event, extra_participants=list(self.parts.of(event.event_id).values()),
                          extra_events=[event], now=now)
        if at is None:
            publish_event(self.sender, event, self.counters)
        for other in sorted(preempted):
            self.reallocate(other)

    def finish(self, event: Event, status: str) -> None:
        """Complete or cancel: stop its rounds and pending commands, hand each VEN over or restore it."""
        now = self.clock.now()
        event.status = status
        event.ended_at = now
        event.updated_at = now
        for handle in self._round_timers.pop(event.event_id, {}).values():
            handle.cancel()
        records, changed = self.parts.finish(event, now)
        self.counters["eventsCompleted" if status == COMPLETED else "eventsCancelled"] += 1
        self.send(records, participants=changed, events=[event])
        publish_event(self.sender, event, self.counters)

    def redispatch(self, event: Event) -> None:
        """After a modification of an active event: send every VEN its new command (new modificationNumber)."""
        records, preempted = self.parts.redispatch(event, self.clock.now())
        self.send(records, participants=list(self.parts.of(event.event_id).values()), events=[event])
        self.dispatch_due(event)
        for other in sorted(preempted):
            self.reallocate(other)

    def _cap_of(self, event_id: str) -> float | None:
        """The import cap an event's commands carry (None but for an IMPORT_CAPACITY_LIMIT event)."""
        event = self.events.get(event_id)
        return event.cap_kw if event is not None else None

    def reallocate(self, event_id: str) -> None:
        """Spread an active event's shortfall over its VENs with headroom and send the new commands."""
        event = self.events.get(event_id)
        if event is None or event.status != ACTIVE:
            return
        records, changed = self.parts.reallocate(event, self.clock.now())
        self.send(records, participants=changed)

    def dispatch_due(self, event: Event, extra_participants: Iterable[Participant] = (),
                     extra_events: Iterable[Event] = (), now: float | None = None) -> None:
        """Send the commands of planned VENs whose (randomized) start has come (as of `now`, default the
        clock's); arm one timer per later start instant."""
        now = self.clock.now() if now is None else now
        parts = self.parts.participants.get(event.event_id, {})
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
            records.append(self.parts.event_command(event, p, now))
        self.send(records, participants=[*due, *extra_participants], events=extra_events, now=now)

    def _on_round(self, event_id: str, offset: float) -> None:
        self._round_timers.get(event_id, {}).pop(offset, None)
        event = self.events.get(event_id)
        if event is None or event.status != ACTIVE:
            return
        try:
            self.dispatch_due(event)
        except Exception:  # one failing round must not stop the agent; its commands stay planned
            self.counters["timerErrors"] += 1
            _log.exception("dispatch round of event %s failed", event_id)

    # ------------------------------------------------------------------------------- sending ------
    def send(self, records: list[CommandRecord], participants: Iterable[Participant] = (),
             events: Iterable[Event] = (), now: float | None = None) -> None:
        """Hand a round of commands over (bus per local VEN, batches of at most `batchSize` for the bridge, each
        rendered just before it is sent); the events are written at once, the commands and participants with
        the next flush (`flushIntervalS`), so no database work competes with the fan-out.

        Correlation ids are deterministic, so if the process dies between hand-off and write the resend
        after restart is the same command, applied once by the VEN."""
        if self._held is not None and not self._preparing:
            self.release_held()   # the held round goes first
        began, began_cpu = self._activation_started or (time.perf_counter(), time.thread_time())
        self._activation_started = None
        now = self.clock.now() if now is None else now
        size = self.config.batch_size
        first_batch: float | None = None
        local_count = remote_count = 0
        on_bus: list[CommandRecord] = []
        bridged: list[CommandRecord] = []
        transport = self.registry.transport
        for record in records:
            kind = transport(record.ven_id)
            if kind == TRANSPORT_OADR:   # an OpenADR VEN reads its event over OpenADR: nothing to send or retry
                record.active = False
                self.counters["oadrVenCommandsNotSent"] += 1
                continue
            (on_bus if kind == TRANSPORT_BUS else bridged).append(record)
        groups = ([on_bus] if on_bus else []) + [bridged[i:i + size] for i in range(0, len(bridged), size)]
        for group in groups:
            local, remote = self.book.render_round(group, now, transport, self._cap_of)
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
            self.journal.save(events=events)
        self.journal.stage(commands=records, participants=participants)
        if local_count or remote_count:
            self._settling = (now, {r.correlation_id for r in records if r.pending})
            self.last_round = {"local": local_count, "remote": remote_count,
                               "handOffMs": round((handed - began) * 1000, 3),
                               "handOffCpuMs": round((handed_cpu - began_cpu) * 1000, 3),
                               "firstBatchMs": (None if first_batch is None
                                                else round((first_batch - began) * 1000, 3))}
            self.arm_retry()

    def arm_retry(self) -> None:
        """Arm the retry timer at the earliest pending retry instant."""
        when = self.book.next_retry()
        if when is not None and self._retry_at is not None and abs(when - self._retry_at) < 1e-6:
            return
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
            self._retry_at = None
        if when is not None and self.running:
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
        self.arm_retry()

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
            self.journal.save(commands=given_up)  # written again by the next flush, after any flush in flight
        if resend:
            _log.info("retrying %d unacked commands", len(resend))
            self.send(resend)

    def resend_on_online(self, ven_ids: list[str]) -> None:
        """VENs came back online: resend their pending commands that were already sent once."""
        if not ven_ids:
            return
        back = set(ven_ids)
        resend = [r for r in self.book.records.values() if r.ven_id in back and r.pending and r.attempts > 0]
        if resend:
            self.counters["retries"] += len(resend)
            self.send(resend)

    # ------------------------------------------------------------------------------- acks ---------
    def on_acks(self, acks: list[Ack]) -> None:
        """Match acks to their commands. Each ack's venId is the VEN that sent it (bound by the intake):
        acks of unregistered VENs are refused, acks for another VEN's command are counted as mismatches."""
        now = self.clock.now()
        rows: list[AckRow] = []
        touched: list[CommandRecord] = []
        parts: list[Participant] = []
        to_reallocate: set[str] = set()
        for ack in acks:
            ven = self.registry.get(ack.ven_id) if ack.ven_id is not None else None
            if ven is None:
                self.counters["unknownVenAcks"] += 1
                continue
            self.counters["acks"] += 1
            self.registry.seen(ven, now)
            record = self.book.get(ack.correlation_id)
            if record is not None and record.ven_id != ven.ven_id:
                self.counters["ackVenMismatch"] += 1
                self._mismatch_log.warning(ven.ven_id, "VEN %s acked a command that is not its own (%s): ignored",
                                           ven.ven_id, ack.correlation_id[:200])
                outcome, record = "mismatch", None
            elif record is None:
                outcome = "unknown"
                self.counters["unknownAcks"] += 1
            elif record.acked_at is not None:
                outcome = "duplicate"
                self.counters["duplicateAcks"] += 1
            else:
                outcome = "recorded"
                record.acked_at = now
                if self._settling is not None:
                    self._settling[1].discard(record.correlation_id)
                record.ack_ok = ack.ok
                record.accepted_kw = ack.accepted_reduce_kw
                record.error = ack.error
                record.next_retry_at = None
                if record.first_sent_at is not None:
                    record.response_ms = round((now - record.first_sent_at) * 1000.0, 3)
                touched.append(record)
                p, realloc = self.parts.apply_ack(record, ack.ok, ack.accepted_reduce_kw)
                if p is not None:
                    parts.append(p)
                if realloc:
                    to_reallocate.add(record.event_id)
            rows.append(AckRow(received_at=now, correlation_id=ack.correlation_id, ven_id=ven.ven_id,
                               event_id=ack.event_id or (record.event_id if record else None),
                               op=record.op if record else ack.op, ok=ack.ok, target_kw=ack.target_kw,
                               accepted_kw=ack.accepted_reduce_kw, error=ack.error,
                               ack_ts=ack.ts.timestamp() if ack.ts else None,
                               response_ms=record.response_ms if record is not None and outcome == "recorded"
                               else None, outcome=outcome))
        self.journal.stage(commands=touched, participants=parts, acks=rows)
        for event_id in sorted(to_reallocate):
            self.reallocate(event_id)
