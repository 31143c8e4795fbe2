"""OpenADR 3.1 event objects -> `VtnEvent`s.

Interval times follow the User Guide (7.3, 7.4): the event's `intervalPeriod` gives the default start and
duration; an interval without its own start follows the previous one; an interval's own `intervalPeriod`
overrides the default. A start of `0001-01-01...` means now (the event's modification time stands for now, so
a re-read of the same event gives the same times). The event's `modificationDateTime` (in milliseconds) is the
modification number: it grows with every change the VTN makes. Only the payload types of `vtnevent.SIGNALS`
are read; an interval with none of them is refused (`EventRefused`), like an interval without a number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dr_common.timeutil import UTC, parse_time
from dr_oadr_ven.vtnevent import SIGNALS, Interval, ReportRequest, VtnEvent

NOW_PREFIX = "0001-01-01"
ENDLESS_S = float("inf")
_DURATION_RE = re.compile(
    r"\A(?P<sign>-)?P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?\Z")
_UNIT_S = {"y": 365 * 86400.0, "mo": 30 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "mi": 60.0,
           "s": 1.0}
MAX_TEXT = 64


class EventRefused(ValueError):
    """An event this VEN will not act on; `field` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def duration_s(text: object, field: str) -> float:
    """Seconds of an ISO 8601 duration (`PT15M`, `P1D`); `P9999Y` (open-ended) is infinite; -1 means unset."""
    if text in (-1, "-1"):
        return -1.0
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "-P") or text.strip().endswith("T"):
        raise EventRefused(field, f"is not an ISO 8601 duration: {str(text)[:MAX_TEXT]!r}")
    if match.group("y") and float(match.group("y")) >= 9999:
        return ENDLESS_S
    seconds = sum(float(match.group(k)) * f for k, f in _UNIT_S.items() if match.group(k))
    return -seconds if match.group("sign") else seconds


def _time(text: object, now: datetime, field: str) -> datetime:
    if isinstance(text, str) and text.startswith(NOW_PREFIX):
        return now
    try:
        return parse_time(text)
    except ValueError:
        raise EventRefused(field, f"is not an RFC 3339 date-time: {str(text)[:MAX_TEXT]!r}") from None


def modification_of(obj: Mapping[str, Any]) -> int:
    """The modification number of an OpenADR object: its modificationDateTime in ms (0 when absent)."""
    text = obj.get("modificationDateTime") or obj.get("createdDateTime")
    try:
        return int(parse_time(text).timestamp() * 1000) if text else 0
    except ValueError:
        return 0


def _signal(interval: Mapping[str, Any], index: int) -> tuple[str, float]:
    for payload in interval.get("payloads") or []:
        if not isinstance(payload, Mapping) or payload.get("type") not in SIGNALS:
            continue
        values = payload.get("values") or []
        value = values[0] if values else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise EventRefused(f"intervals.{index}.payloads", f"{payload['type']} needs one number in values")
        return str(payload["type"]), float(value)
    kinds = [str(p.get("type"))[:MAX_TEXT] for p in interval.get("payloads") or [] if isinstance(p, Mapping)]
    raise EventRefused(f"intervals.{index}.payloads", f"no payload this VEN acts on ({', '.join(SIGNALS)}); "
                                                      f"got {kinds or 'none'}")


def _intervals(event: Mapping[str, Any], now: datetime) -> tuple[tuple[Interval, ...], float]:
    default = event.get("intervalPeriod") or {}
    if not isinstance(default, Mapping):
        raise EventRefused("intervalPeriod", "must be an object")
    raw = event.get("intervals")
    if not isinstance(raw, list) or not raw:
        raise EventRefused("intervals", "must be a non-empty list")
    randomize = duration_s(default.get("randomizeStart") or "PT0S", "intervalPeriod.randomizeStart")
    out: list[Interval] = []
    follow: datetime | None = None
    for index, interval in enumerate(raw):
        if not isinstance(interval, Mapping):
            raise EventRefused(f"intervals.{index}", "must be an object")
        own = interval.get("intervalPeriod") or {}
        period = {**default, **own} if isinstance(own, Mapping) else dict(default)
        if own.get("start") if isinstance(own, Mapping) else None:
            start = _time(own["start"], now, f"intervals.{index}.intervalPeriod.start")
        elif follow is not None:
            start = follow
        elif period.get("start"):
            start = _time(period["start"], now, "intervalPeriod.start")
        else:
            raise EventRefused("intervalPeriod.start", "is required (on the event or its first interval)")
        seconds = duration_s(period.get("duration") or event.get("duration") or "-1", "intervalPeriod.duration")
        if seconds <= 0:
            raise EventRefused(f"intervals.{index}.intervalPeriod.duration", "must be a positive duration")
        signal, value = _signal(interval, index)
        out.append(Interval(start=start, duration_s=seconds, signal=signal, value=value))
        follow = start + timedelta(seconds=seconds) if seconds != ENDLESS_S else None
        if follow is None and index < len(raw) - 1:
            raise EventRefused(f"intervals.{index}.intervalPeriod.duration", "is endless but intervals follow")
    return tuple(out), randomize


def _reports(event: Mapping[str, Any], intervals: tuple[Interval, ...], default_s: float) -> \
        tuple[ReportRequest, ...]:
    out = []
    for descriptor in event.get("reportDescriptors") or []:
        if not isinstance(descriptor, Mapping) or not isinstance(descriptor.get("payloadType"), str):
            continue
        frequency = descriptor.get("frequency")
        interval_s = default_s
        if isinstance(frequency, int) and not isinstance(frequency, bool) and frequency > 0 and intervals \
                and intervals[0].duration_s != ENDLESS_S:
            interval_s = frequency * intervals[0].duration_s
        out.append(ReportRequest(payload_type=descriptor["payloadType"][:MAX_TEXT], interval_s=interval_s))
    return tuple(out)


def to_vtn_event(event: Mapping[str, Any], default_report_s: float = 60.0) -> VtnEvent:
    """The VtnEvent of an OpenADR 3.1 event object, or EventRefused naming the field."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise EventRefused("id", "is missing")
    modification = modification_of(event)
    now = datetime.fromtimestamp(modification / 1000, UTC) if modification else datetime.now(UTC)
    try:
        intervals, randomize = _intervals(event, now)
    except OverflowError:
        raise EventRefused("intervalPeriod.duration", "puts the event past the year 9999") from None
    priority = event.get("priority")
    return VtnEvent(event_id=event_id[:128], modification=modification,
                    program_id=str(event.get("programID"))[:128] if event.get("programID") else None,
                    intervals=intervals, randomize_start_s=abs(randomize),
                    priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
                    report_requests=_reports(event, intervals, default_report_s), protocol="oadr31")
