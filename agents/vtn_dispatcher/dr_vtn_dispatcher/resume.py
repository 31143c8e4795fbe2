"""dr.vtn's start: the live events, their participants and commands read back from the store, then each open
event brought up to date (what ended while dr.vtn was down is finished; an active one's due commands go out)."""

from __future__ import annotations

from dr_vtn_dispatcher.dispatch import CommandBook
from dr_vtn_dispatcher.dispatcher import Dispatcher
from dr_vtn_dispatcher.events import EventManager
from dr_vtn_dispatcher.model import ACTIVE, OP_EVENT, OPEN_STATUSES, Event
from dr_vtn_dispatcher.participation import CLAIM_STATES, Participation
from dr_vtn_dispatcher.store import Store


def load_live(store: Store, events: dict[str, Event], parts: Participation, book: CommandBook,
              ended_since: float) -> list[Event]:
    """Read the live events (and those ended since `ended_since`), their participants and commands into the
    rooms; the VENs an active event holds are marked as serving it. Returns the events read."""
    loaded = store.load_live_events(ended_since=ended_since)
    ids = [event.event_id for event in loaded]
    for event in loaded:
        events[event.event_id] = event
        parts.participants[event.event_id] = {}
    for p in store.load_participants(ids):
        parts.of(p.event_id)[p.ven_id] = p
    for record in sorted(store.load_commands(ids), key=lambda c: (c.modification_number, c.created_at)):
        book.add(record)
        if record.op == OP_EVENT and record.active:
            parts.current[(record.event_id, record.ven_id)] = record
    for event in sorted(loaded, key=lambda e: (e.start, e.event_id)):
        if event.status == ACTIVE:
            for p in parts.participants[event.event_id].values():
                if p.state in CLAIM_STATES:
                    parts.serving[p.ven_id] = event.event_id
    return loaded


def resume_live(events: list[Event], manager: EventManager, dispatcher: Dispatcher) -> None:
    """Bring each open event up to date, in start order; an event active before and after sends what is due."""
    for event in sorted(events, key=lambda e: (e.start, e.event_id)):
        if event.status in OPEN_STATUSES:
            was_active = event.status == ACTIVE
            manager.advance(event)
            if was_active and event.status == ACTIVE:
                dispatcher.dispatch_due(event)
