"""When the participants of an event were notified: dr.vtn's creation time of the event.

dr.vtn publishes an event's state on `dr/event/<eventId>` when the event is created and whenever it changes,
each message with the event's `createdAt` (the time the VTN accepted it, kept across modifications); the
historian records those messages under their topic. The notification time of an event is the earliest
`createdAt` of the messages on its own topic (identity from the topic, not from the payload alone: a message
whose `eventId` names another event is ignored), when it is not after the event's start. Adjustment windows
relative to the notification (ISO-NE) use it; without it they fall back to the event start (see the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from dr_common.timeutil import parse_time
from dr_common.topics import BUS_EVENT_STATUS

UTC = timezone.utc
NOTICE_LOOKBACK = timedelta(days=7)  # a notification is looked for at most this long before the event start
MAX_STATUS_MESSAGES = 1000            # status messages of one event read at the most


class ReadingSource(Protocol):
    """What the notification time is read from (the historian's store)."""

    def readings(self, topic: str, start: datetime, end: datetime) -> list[tuple[datetime, Any]]:
        """Every reading of a topic in [start, end), oldest first, decoded."""


def event_status_topic(event_id: str) -> str:
    """The stored topic of dr.vtn's status messages of one event."""
    return BUS_EVENT_STATUS.format(eventId=event_id)


def _created(ts: datetime, value: Any, event_id: str) -> datetime | None:
    if not isinstance(value, Mapping) or value.get("eventId") != event_id:
        return None
    raw = value.get("createdAt")
    try:
        when = parse_time(raw) if raw else ts
    except (ValueError, TypeError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def notification_time(source: ReadingSource, event_id: str, start: datetime, end: datetime) -> datetime | None:
    """The notification time of the event over [start, end) (see the module docstring), from its status
    messages recorded from NOTICE_LOOKBACK before the start to the end; None when none is recorded."""
    found = [_created(ts, value, event_id)
             for ts, value in source.readings(event_status_topic(event_id), start - NOTICE_LOOKBACK,
                                              max(end, start + timedelta(seconds=1)))[:MAX_STATUS_MESSAGES]]
    times = [t for t in found if t is not None and t <= start]
    return min(times) if times else None
