"""The journal: what the VTN has changed and not yet written, and the flush that writes it.

No database work happens on the dispatch or ack path: rounds, acks and telemetry stage their records here
and the flush timer (`flushIntervalS`) writes them in one transaction. The flush takes its rows on the event
loop and runs the statements through `offload` (the agent gives a writer thread of its own, one, so writes
keep their order). API calls that must be durable before they answer (a new VEN, a new event) write at once
through `save`, and stage the record again so that the next flush, after any flush in flight, has the last word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dr_vtn_dispatcher.model import CommandRecord, Event, Participant, Ven
from dr_vtn_dispatcher.store import AckRow, Store, TelemetryRow

# Rows kept for the next flush at most; beyond, the oldest telemetry rows, then the oldest ack rows, are dropped
# (counted): a database that stays down must not take the VTN's memory with it. Commands, participants and VENs
# are bounded by the live state they mirror.
ROWS_MAX = 200_000
# A timer flush may be put off while `hold()` says a fan-out is on its way (its writes would compete with it for
# the CPU), at most this many times in a row; a flush on demand (stop, reconfiguration) is never put off.
HOLDS_MAX = 3


def _in_line(fn: Callable[[], None]) -> None:
    fn()


class Journal:
    """Pending writes (latest state of each record, plus ack and telemetry rows) and the flush."""

    def __init__(self, store: Store, offload: Callable[[Callable[[], None]], Any] | None = None,
                 rows_max: int = ROWS_MAX) -> None:
        self.store = store
        self._offload = offload or _in_line
        self._rows_max = rows_max
        self.dropped_rows = 0
        self.hold: Callable[[], bool] | None = None
        self.held = 0         # timer flushes put off in a row
        self.holds = 0        # timer flushes put off in all
        self._vens: dict[str, Ven] = {}
        self._participants: dict[tuple[str, str], Participant] = {}
        self._commands: dict[str, CommandRecord] = {}
        self._acks: list[AckRow] = []
        self._telemetry: list[TelemetryRow] = []

    def save(self, *, events: Iterable[Event] = (), vens: Iterable[Ven] = (),
             commands: Iterable[CommandRecord] = ()) -> None:
        """Write now (one transaction); VENs and commands are written again by the next flush."""
        events, vens, commands = list(events), list(vens), list(commands)
        self.store.save(events=events, vens=vens, commands=commands)
        self.stage(vens=vens, commands=commands)

    def stage(self, *, commands: Iterable[CommandRecord] = (), participants: Iterable[Participant] = (),
              acks: Iterable[AckRow] = (), vens: Iterable[Ven] = ()) -> None:
        """Keep records for the next flush (the latest state of each is what gets written)."""
        for record in commands:
            self._commands[record.correlation_id] = record
        for p in participants:
            self._participants[(p.event_id, p.ven_id)] = p
        for ven in vens:
            self._vens[ven.ven_id] = ven
        self._acks.extend(acks)
        self._bound()

    def ven(self, ven: Ven) -> None:
        """A VEN's state changed (last seen, telemetry summary, status)."""
        self._vens[ven.ven_id] = ven

    def forget_ven(self, ven_id: str) -> None:
        """A VEN was deregistered: its pending state is not written."""
        self._vens.pop(ven_id, None)

    def participant(self, p: Participant) -> None:
        """A participant's state changed."""
        self._participants[(p.event_id, p.ven_id)] = p

    def telemetry(self, row: TelemetryRow) -> None:
        """One telemetry summary to keep."""
        self._telemetry.append(row)
        if len(self._telemetry) > self._rows_max:
            self._bound()

    def _bound(self) -> None:
        """Drop the oldest telemetry rows, then the oldest ack rows, beyond `rows_max` (counted). An ack's
        effect is kept all the same: its command's state is a record, written with the commands."""
        over = len(self._telemetry) + len(self._acks) - self._rows_max
        for rows in (self._telemetry, self._acks):
            cut = min(max(over, 0), len(rows))
            if cut:
                del rows[:cut]
                self.dropped_rows += cut
                over -= cut

    @property
    def empty(self) -> bool:
        """True when nothing waits to be written."""
        return not (self._telemetry or self._vens or self._participants or self._commands or self._acks)

    def flush(self, deferrable: bool = False) -> None:
        """Write buffered telemetry, acks, last-seen times, command and participant states in one transaction;
        on failure everything is kept for the next flush and the error is raised. A `deferrable` (timer) flush
        is put off while `hold()` is true, at most HOLDS_MAX times in a row."""
        if self.empty:
            return
        if deferrable and self.hold is not None and self.held < HOLDS_MAX and self.hold():
            self.held += 1
            self.holds += 1
            return
        self.held = 0
        telemetry, vens, parts = self._telemetry, self._vens, self._participants
        commands, acks = self._commands, self._acks
        self._telemetry, self._vens, self._participants = [], {}, {}
        self._commands, self._acks = {}, []
        try:
            writes = self.store.prepare(vens=list(vens.values()), participants=list(parts.values()),
                                        commands=list(commands.values()), acks=acks, telemetry=telemetry)
            self._offload(lambda: self.store.write(writes))
        except Exception:
            self._telemetry = telemetry + self._telemetry
            self._acks = acks + self._acks
            self._vens = {**vens, **self._vens}
            self._participants = {**parts, **self._participants}
            self._commands = {**commands, **self._commands}
            self._bound()
            raise
