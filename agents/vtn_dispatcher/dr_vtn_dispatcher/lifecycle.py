"""The event lifecycle: far -> near (inside the ramp-up) -> active -> completed, or cancelled.

Transitions happen on timers armed at the exact instants (start - rampUp, start, end) through an injected
`Scheduler`, never by polling. `ManualScheduler` is a deterministic scheduler for tests and benches: time
only moves when told to, and due callbacks run in time order at their own instants.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dr_vtn_dispatcher.model import ACTIVE, CANCELLED, COMPLETED, FAR, NEAR, Event


class TimerHandle(Protocol):
    """What `call_at` returns: a timer that can be cancelled."""

    def cancel(self) -> None:
        """Do not run the callback."""


class Scheduler(Protocol):
    """A clock and one-shot timers. Callbacks run on the caller's thread of control (the gevent hub)."""

    def now(self) -> float:
        """Seconds since the epoch."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` at `when`."""


def status_at(event: Event, now: float) -> str:
    """The status an open event has at `now` (a cancelled or completed event keeps its status)."""
    if event.status in (CANCELLED, COMPLETED):
        return event.status
    if now >= event.end:
        return COMPLETED
    if now >= event.start:
        return ACTIVE
    if event.ramp_up_s > 0 and now >= event.start - event.ramp_up_s:
        return NEAR
    return FAR


_ORDER = {FAR: 0, NEAR: 1, ACTIVE: 2, COMPLETED: 3}


def transitions(event: Event, target: str) -> list[str]:
    """The statuses an open event passes through from its current status to `target`, in order
    (near only when the event has a ramp-up)."""
    current = event.status
    if current not in _ORDER or target not in _ORDER or _ORDER[target] <= _ORDER[current]:
        return []
    return [status for status in (NEAR, ACTIVE, COMPLETED)
            if _ORDER[current] < _ORDER[status] <= _ORDER[target] and (status != NEAR or event.ramp_up_s > 0)]


def next_instant(event: Event, now: float) -> float | None:
    """When the event's next transition is due, or None for a finished event."""
    status = status_at(event, now)
    if status == FAR:
        return event.start - event.ramp_up_s if event.ramp_up_s > 0 else event.start
    if status == NEAR:
        return event.start
    if status == ACTIVE:
        return event.end
    return None


Step = tuple[float, dict[str, Any]]   # (instant, the event fields that change then)


def split_steps(steps: list[Step], now: float) -> tuple[dict[str, Any] | None, list[Step]]:
    """The changes of the latest step due at `now` (None when none is), and the steps still to come, in order."""
    ordered = sorted(steps, key=lambda step: step[0])
    due = [changes for at, changes in ordered if at <= now + 1e-6]
    return (due[-1] if due else None), [step for step in ordered if step[0] > now + 1e-6]


def randomized_offset(rng: random.Random, randomize_s: float, granularity_s: float) -> float:
    """A start offset in [0, randomize_s], a multiple of `granularity_s` (VENs sharing an instant share a
    dispatch round)."""
    if randomize_s <= 0:
        return 0.0
    steps = int(randomize_s / granularity_s + 1e-9)
    return min(randomize_s, round(rng.randint(0, steps) * granularity_s, 6))


@dataclass(order=True)
class _Entry:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A scheduler whose clock moves only by `advance`/`advance_to`; for tests and benches."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._heap: list[_Entry] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The manual clock's reading."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Entry:
        """Run `callback` when the clock passes `when`."""
        entry = _Entry(when, next(self._seq), callback)
        heapq.heappush(self._heap, entry)
        return entry

    def pending(self) -> list[float]:
        """Instants of the timers not yet run or cancelled."""
        return sorted(entry.when for entry in self._heap if not entry.cancelled)

    def advance_to(self, when: float) -> None:
        """Run every callback due up to `when`, each at its own instant, then set the clock to `when`."""
        while self._heap and self._heap[0].when <= when:
            entry = heapq.heappop(self._heap)
            if entry.cancelled:
                continue
            self._now = max(self._now, entry.when)
            entry.callback()
        self._now = max(self._now, when)

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` ahead, running what comes due."""
        self.advance_to(self._now + seconds)
