"""The write path: records from VOLTTRON's base-historian cache into the store, in one transaction per batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dr_common.topics import BUS_CMD_PREFIX
from dr_historian.dr_records import event_entry
from dr_historian.schema import EventEntry, Point, StoreError
from dr_historian.store import Store
from dr_historian.values import as_utc, encode_value

_log = logging.getLogger(__name__)


@dataclass
class WriteStats:
    """Counts of the write path for health()."""

    batches: int = 0
    readings: int = 0
    failures: int = 0
    unstorable: int = 0  # readings dropped because their value cannot be stored (e.g. a 5,000-digit integer)
    last_error: str | None = None
    last_write_monotonic: float | None = None
    failing_since_monotonic: float | None = None


class Writer:
    """Turns cache records ({'topic', 'timestamp', 'value', 'meta', ...}) into readings and DR event entries."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stats = WriteStats()

    def publish(self, records: Sequence[Mapping[str, Any]]) -> bool:
        """Store a batch; True when it is committed (then the cache may drop it), False when the database failed."""
        points: list[Point] = []
        events: list[EventEntry] = []
        for record in records:
            ts = as_utc(record["timestamp"])
            point = Point(record["topic"], ts, record["value"], record.get("meta") or None)
            points.append(point)
            if point.topic.startswith(BUS_CMD_PREFIX):
                entry = event_entry(point.topic, ts, point.value)
                if entry is not None:
                    events.append(entry)
        try:
            if not self.store.ready:
                self.store.setup()
            written = self._write(points, events)
        except StoreError as exc:
            self.stats.failures += 1
            if self.stats.failing_since_monotonic is None:
                self.stats.failing_since_monotonic = time.monotonic()
                _log.warning("historian database unavailable, %d readings stay in the backup cache: %s",
                             len(points), exc)
            else:
                _log.debug("historian database still unavailable: %s", exc)
            self.stats.last_error = str(exc)
            return False
        if self.stats.failing_since_monotonic is not None:
            _log.info("historian database reachable again after %.1f s",
                      time.monotonic() - self.stats.failing_since_monotonic)
            self.stats.failing_since_monotonic = None
        self.stats.batches += 1
        self.stats.readings += written
        self.stats.last_write_monotonic = time.monotonic()
        return True

    def _write(self, points: list[Point], events: list[EventEntry]) -> int:
        """Write the batch; a value that cannot be stored drops that reading only, never the batch (which
        would otherwise stay in the backup cache and fail again forever)."""
        try:
            return self.store.write(points, events)
        except _UNSTORABLE:
            good = [p for p in points if _storable(p.value)]
        dropped = len(points) - len(good)
        self.stats.unstorable += dropped
        _log.warning("dropped %d reading(s) whose value cannot be stored (%d so far)", dropped,
                     self.stats.unstorable)
        return self.store.write(good, events)


_UNSTORABLE = (ValueError, TypeError, OverflowError, RecursionError)


def _storable(value: Any) -> bool:
    try:
        encode_value(value)
    except _UNSTORABLE:
        return False
    return True
