"""Which VEN serves which event, with how many kW: claims, allocation, hand-over and re-allocation.

Plain bookkeeping over participants, the `serving` map and the CommandBook: every method returns the
commands a change calls for; the dispatcher sends them. Overlapping events on one VEN: a VEN serves one
event at a time. When an event activates, a VEN already serving another active event stays with that event
unless the new one has a strictly higher `priority` (larger number wins; on a tie the event already running
keeps it); the loser's participant is marked `superseded` (it never got the VEN) or `released` (it lost it,
and its shortfall is re-allocated to its other VENs). When the event a VEN serves ends, the VEN is handed to
the highest-priority other active event that still needs kW and was superseded on it; otherwise it is restored.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping

from dr_vtn_dispatcher import allocation
from dr_vtn_dispatcher.config import VtnConfig
from dr_vtn_dispatcher.dispatch import CommandBook
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.lifecycle import randomized_offset
from dr_vtn_dispatcher.model import (
    ACTIVE,
    EPS_KW,
    OP_EVENT,
    OP_RESTORE,
    P_ACKED,
    P_DISPATCHED,
    P_DROPPED,
    P_PLANNED,
    P_REJECTED,
    P_RELEASED,
    P_SUPERSEDED,
    CommandRecord,
    Event,
    Participant,
    Ven,
)
from dr_vtn_dispatcher.registry import Registry

_log = logging.getLogger(__name__)

SENT_STATES = (P_DISPATCHED, P_ACKED, P_REJECTED)   # the VEN has been sent this event's command
CLAIM_STATES = (P_PLANNED, P_DISPATCHED, P_ACKED, P_REJECTED)  # the VEN is (to be) serving this event


class Participation:
    """Participants of the live events, the event each VEN serves, and each VEN's current command."""

    def __init__(self, events: Mapping[str, Event], registry: Registry, book: CommandBook, journal: Journal,
                 config: VtnConfig, counters: Counter[str], rng: random.Random) -> None:
        self.events = events
        self.registry = registry
        self.book = book
        self.journal = journal
        self.config = config
        self.counters = counters
        self.rng = rng
        self.participants: dict[str, dict[str, Participant]] = {}
        self.current: dict[tuple[str, str], CommandRecord] = {}  # (event, ven) -> latest event command
        self.serving: dict[str, str] = {}                        # venId -> eventId it serves

    def of(self, event_id: str) -> dict[str, Participant]:
        """The participants of an event by venId (created empty when missing)."""
        return self.participants.setdefault(event_id, {})

    def forget(self, event_id: str) -> None:
        """Drop a finished event's participants and commands from memory (they stay in the store)."""
        for p in self.participants.pop(event_id, {}).values():
            self.current.pop((event_id, p.ven_id), None)
        self.book.forget_event(event_id)

    def offset(self, event: Event) -> float:
        """A randomized start offset for one VEN of `event`."""
        return randomized_offset(self.rng, event.randomize_s, self.config.randomize_granularity_s)

    def targets(self, event: Event, now: float) -> list[Ven]:
        """The registered VENs an event targets that may be dispatched (not offline, unless configured)."""
        matches = event.matcher()
        timeout = self.registry.offline_timeout_s
        return [ven for ven in self.registry.vens.values() if matches(ven)
                and (self.config.dispatch_to_offline or ven.online_state(now, timeout) != "offline")]

    def claim(self, event: Event, p: Participant) -> str | None:
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
                self.deactivate_current(owner.event_id, p.ven_id)
                self.journal.participant(lost)
        p.state = P_PLANNED
        self.serving[p.ven_id] = event.event_id
        return owner.event_id if owner is not None and owner.status == ACTIVE else None

    def allocate(self, event: Event, parts: list[Participant]) -> None:
        """Split the event's kW over `parts` by its program's rule."""
        rule = self.config.program(event.program_id).allocation
        candidates = [allocation.Candidate(p.ven_id, self.registry.vens[p.ven_id].capacity_kw()) for p in parts
                      if p.ven_id in self.registry]
        result = allocation.allocate(rule, event.reduction_kw, candidates)
        for p in parts:
            p.allocated_kw = result.shares.get(p.ven_id, 0.0)
        if result.unallocated_kw > EPS_KW:
            self.counters["unallocatedEvents"] += 1
            _log.warning("event %s: %.3f kW of %.3f kW could not be allocated (not enough capacity)",
                         event.event_id, result.unallocated_kw, event.requested_kw)

    # ------------------------------------------------------------------------------- commands -----
    def event_command(self, event: Event, p: Participant, now: float) -> CommandRecord:
        """The command of `p`'s current share (the known one when already created)."""
        cid = self.book.correlation_id(event.event_id, event.modification_number, OP_EVENT, p.ven_id, p.revision)
        known = self.book.get(cid)
        if known is not None:
            return known
        self.deactivate_current(event.event_id, p.ven_id)
        record = self.book.add(CommandRecord(
            correlation_id=cid, event_id=event.event_id, ven_id=p.ven_id, op=OP_EVENT,
            modification_number=event.modification_number, requested_kw=p.allocated_kw,
            start=event.start + p.offset_s,
            until=event.end, priority=event.priority, test=event.test, created_at=now))
        self.current[(event.event_id, p.ven_id)] = record
        return record

    def restore_command(self, event: Event, ven_id: str, now: float) -> CommandRecord:
        """The restore of a VEN that served `event`."""
        self.deactivate_current(event.event_id, ven_id)
        cid = self.book.correlation_id(event.event_id, event.modification_number, OP_RESTORE, ven_id)
        return self.book.add(CommandRecord(
            correlation_id=cid, event_id=event.event_id, ven_id=ven_id, op=OP_RESTORE,
            modification_number=event.modification_number, requested_kw=0.0, start=None, until=None,
            priority=event.priority, test=event.test, created_at=now))

    def deactivate_current(self, event_id: str, ven_id: str) -> None:
        """Stop retrying the VEN's current command of the event (superseded by a newer one)."""
        record = self.current.pop((event_id, ven_id), None)
        if record is not None and record.active:
            record.active = False
            record.next_retry_at = None
            if record.acked_at is None:
                self.counters["commandsSuperseded"] += 1

    # ------------------------------------------------------------------------------- changes ------
    def activate(self, event: Event, now: float) -> set[str]:
        """Claim the event's targets and allocate its kW; returns the events VENs were taken from."""
        parts = self.of(event.event_id)
        preempted: set[str] = set()
        claimed: list[Participant] = []
        for ven in self.targets(event, now):
            p = parts.get(ven.ven_id) or Participant(event.event_id, ven.ven_id)
            parts[ven.ven_id] = p
            taken_from = self.claim(event, p)
            if taken_from:
                preempted.add(taken_from)
            if p.state == P_PLANNED:
                claimed.append(p)
                p.offset_s = self.offset(event)
        self.allocate(event, claimed)
        return preempted

    def finish(self, event: Event, now: float) -> tuple[list[CommandRecord], list[Participant]]:
        """Release every VEN of an ending event: hand it to a waiting event, or restore it."""
        records: list[CommandRecord] = []
        changed: list[Participant] = []
        for p in list(self.participants.get(event.event_id, {}).values()):
            if p.state in SENT_STATES and self.serving.get(p.ven_id) == event.event_id:
                handed = self._hand_over(p.ven_id, event.event_id, now)
                if handed is not None:
                    records.append(handed[0])
                    changed.append(handed[1])
                    self.deactivate_current(event.event_id, p.ven_id)
                else:
                    self.serving.pop(p.ven_id, None)
                    records.append(self.restore_command(event, p.ven_id, now))
                    p.restore_sent = True
                p.state = P_RELEASED
                changed.append(p)
            elif p.state in CLAIM_STATES:
                if self.serving.get(p.ven_id) == event.event_id:
                    self.serving.pop(p.ven_id, None)
                self.deactivate_current(event.event_id, p.ven_id)
                p.state = P_RELEASED
                changed.append(p)
        return records, changed

    def commitment(self, event_id: str) -> float:
        """kW the event's VENs are committed to (accepted, or asked and not yet answered)."""
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
            need = other.reduction_kw - self.commitment(other.event_id)
            ven = self.registry.get(ven_id)
            capacity = ven.capacity_kw() if ven is not None else None
            kw = need if capacity is None else min(need, capacity)
            if kw <= 1e-3:
                continue
            p = self.participants[other.event_id][ven_id]
            p.allocated_kw = kw
            p.revision += 1
            p.state = P_DISPATCHED
            self.serving[ven_id] = other.event_id
            self.counters["handovers"] += 1
            return self.event_command(other, p, now), p
        return None

    def reallocate(self, event: Event, now: float) -> tuple[list[CommandRecord], list[Participant]]:
        """Spread the event's shortfall (rejections, partial acceptances, lost VENs) over VENs with headroom."""
        shortfall = event.reduction_kw - self.commitment(event.event_id)
        if shortfall <= 1e-3:
            return [], []
        parts = [p for p in self.participants[event.event_id].values()
                 if not p.capped and p.state in (P_PLANNED, P_DISPATCHED, P_ACKED)]
        candidates = [allocation.Candidate(p.ven_id, self.registry.vens[p.ven_id].capacity_kw(), p.allocated_kw)
                      for p in parts if p.ven_id in self.registry]
        rule = self.config.program(event.program_id).allocation
        extra = allocation.reallocate(rule, shortfall, candidates)
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
                records.append(self.event_command(event, p, now))
        if changed:
            self.counters["reallocations"] += 1
            _log.info("event %s: re-allocated %.3f kW over %d VENs (%.3f kW found no headroom)", event.event_id,
                      shortfall - extra.unallocated_kw, len(changed), extra.unallocated_kw)
        return records, changed

    def redispatch(self, event: Event, now: float) -> tuple[list[CommandRecord], set[str]]:
        """After a modification of an active event: restore VENs no longer targeted, claim new ones,
        re-allocate from scratch; returns the commands due now and the events VENs were taken from."""
        parts = self.of(event.event_id)
        targets = {ven.ven_id for ven in self.targets(event, now)}
        records: list[CommandRecord] = []
        preempted: set[str] = set()
        for p in list(parts.values()):
            if p.ven_id in targets or p.state not in (*CLAIM_STATES, P_SUPERSEDED):
                continue
            if p.state in SENT_STATES and self.serving.get(p.ven_id) == event.event_id:
                records.append(self.restore_command(event, p.ven_id, now))
                p.restore_sent = True
            if self.serving.get(p.ven_id) == event.event_id:
                self.serving.pop(p.ven_id, None)
            self.deactivate_current(event.event_id, p.ven_id)
            p.state = P_DROPPED
        for ven_id in sorted(targets):
            p = parts.get(ven_id)
            if p is not None and p.state in CLAIM_STATES:
                continue
            if p is None:
                p = parts[ven_id] = Participant(event.event_id, ven_id)
                p.offset_s = self.offset(event)
            taken_from = self.claim(event, p)
            if taken_from:
                preempted.add(taken_from)
        serving = [p for p in parts.values() if p.state in CLAIM_STATES]
        for p in serving:
            p.capped = False
            p.accepted_kw = None
            p.revision = 0
        self.allocate(event, serving)
        for p in serving:
            if p.state == P_PLANNED and event.start + p.offset_s > now + 1e-6:
                continue
            p.state = P_DISPATCHED
            records.append(self.event_command(event, p, now))
        return records, preempted

    def apply_ack(self, record: CommandRecord, ok: bool,
                  accepted_kw: float | None) -> tuple[Participant | None, bool]:
        """Record a VEN's answer to its current event command: (the participant when it changed, whether the
        event's shortfall must be re-allocated: it rejected or accepted less)."""
        if record.op != OP_EVENT or self.current.get((record.event_id, record.ven_id)) is not record:
            return None, False
        p = self.participants.get(record.event_id, {}).get(record.ven_id)
        if p is None or p.state not in (P_DISPATCHED, P_ACKED):
            return None, False
        if not ok:
            self.counters["rejectedAcks"] += 1
            p.state, p.accepted_kw, p.capped = P_REJECTED, 0.0, True
            return p, True
        accepted = accepted_kw if accepted_kw is not None else record.requested_kw
        p.state, p.accepted_kw = P_ACKED, accepted
        if accepted < record.requested_kw - 1e-3:
            p.capped = True
            return p, True
        return p, False
