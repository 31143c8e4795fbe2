"""One event model: an OpenADR 3 event IS a dr.vtn event. This module maps between the two.

OpenADR -> dr.vtn (`to_vtn_plan`):
  intervalPeriod.start (event's, else the first interval's)  -> startTime; `0001-01-01...` means now
  intervals (at most 96), each with its own intervalPeriod or the event's (start where the previous ended,
  the event's duration), following each other    -> one dr.vtn event over their whole span (durationS) whose
                                                    payload steps at each interval's start (a modification)
  `P9999Y` (open-ended) as the last interval's duration -> up to the longest event the VTN accepts
                                                    (maxEventDurationS, over the whole span)
  intervalPeriod.randomizeStart                                -> randomizeStartS
  priority (0 is the highest)                                  -> priority 1000 - p (dr.vtn: larger wins)
  an interval's payload DISPATCH_SETPOINT_RELATIVE v < 0 kW    -> requestedReductionKw -v (negative = shed)
  an interval's payload SIMPLE level 0-3                       -> level (kW from the program's simpleLevelsKw)
  targets: registered venIds                                   -> venIds; any other target -> groups;
           none                                                -> allVens
dr.vtn -> OpenADR (`to_oadr_event`): the same fields back from the live event, so a change made through the
seed API shows in OpenADR; what dr.vtn does not hold (eventName as given, descriptors, targets as written)
comes from the OpenADR side kept in the object book.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from dr_common.timeutil import parse_time, to_iso
from dr_vtn_dispatcher.errors import invalid
from dr_vtn_dispatcher.events import EventManager
from dr_vtn_dispatcher.model import epoch
from dr_vtn_dispatcher.oadr_models import duration_seconds, seconds_duration
from dr_vtn_dispatcher.oadr_objects import DEFAULT_PROGRAM_ID, EVENT, VEN, ObjectBook

SIMPLE = "SIMPLE"
SETPOINT_RELATIVE = "DISPATCH_SETPOINT_RELATIVE"
IMPORT_CAPACITY_LIMIT = "IMPORT_CAPACITY_LIMIT"
PRIORITY_MAX = 1000
NOW_PREFIX = "0001-01-01"
EXTRA_KEYS = ("eventName", "targets", "reportDescriptors", "payloadDescriptors", "priority")
MAX_INTERVALS = 96          # intervals of one event (a day of 15-minute steps)
STEP_TOLERANCE_S = 0.001    # intervals meeting within a millisecond follow each other
IntervalStep = tuple[float, float, dict[str, Any]]


def _start(text: str, now: float) -> str:
    if text.startswith(NOW_PREFIX):
        return to_iso(datetime.fromtimestamp(now, UTC))
    try:
        parsed = parse_time(text)
    except ValueError:
        raise invalid("intervalPeriod.start", "is not an RFC 3339 date-time") from None
    return to_iso(parsed)


def _changes(interval: Mapping[str, Any], index: int) -> dict[str, Any]:
    """What one interval asks of dr.vtn: `{"requestedReductionKw": kW}` or `{"level": 0-3}`."""
    field = f"intervals.{index}.payloads"
    for payload in interval.get("payloads", []):
        kind, values = payload["type"], payload["values"]
        if kind not in (SIMPLE, SETPOINT_RELATIVE, IMPORT_CAPACITY_LIMIT):
            continue
        value = values[0] if values else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(field, f"{kind} needs one number in values")
        if kind == SIMPLE:
            if not isinstance(value, int) or not 0 <= value <= 3:
                raise invalid(field, "a SIMPLE level is 0, 1, 2 or 3")
            return {"level": value}
        if kind == SETPOINT_RELATIVE:
            if value >= 0:
                raise invalid(field, "DISPATCH_SETPOINT_RELATIVE must be negative (kW shed)")
            return {"requestedReductionKw": -float(value)}
        if value < 0:
            raise invalid(field, "IMPORT_CAPACITY_LIMIT is a kW cap of zero or more")
        return {"capKw": float(value)}
    raise invalid(field, f"needs a {SIMPLE}, {SETPOINT_RELATIVE} or {IMPORT_CAPACITY_LIMIT} payload")


def _seconds(text: str, field: str, open_ended_s: float | None) -> float:
    seconds = duration_seconds(text, field)
    if seconds is None:
        if open_ended_s is None:
            raise invalid(field, "P9999Y (open-ended) is accepted for the last interval only")
        return open_ended_s
    if seconds <= 0:
        raise invalid(field, "must be longer than zero")
    return seconds


def interval_steps(body: Mapping[str, Any], now: float, max_duration_s: float) -> list[IntervalStep]:
    """The steps of an OpenADR event: one per interval, in order, each `(start, end, changes)` in epoch seconds.

    An interval's own intervalPeriod overrides the event's; without one it starts where the previous interval
    ended (the first at the event's start) and lasts the event's duration. Intervals follow each other: a gap
    or an overlap is refused naming the interval. `P9999Y` on the last interval runs to the longest event the
    VTN accepts; the whole span is at most `max_duration_s`."""
    intervals = list(body.get("intervals") or [])
    if not intervals:
        raise invalid("intervals", "needs at least one interval")
    if len(intervals) > MAX_INTERVALS:
        raise invalid("intervals", f"{len(intervals)} intervals; this VTN accepts at most {MAX_INTERVALS}")
    period = dict(body.get("intervalPeriod") or {})
    steps: list[IntervalStep] = []
    first_start: float | None = None
    cursor: float | None = None
    for index, interval in enumerate(intervals):
        own = dict(interval.get("intervalPeriod") or {})
        start_text = own.get("start") or (period.get("start") if index == 0 else None)
        if start_text:
            field = f"intervals.{index}.intervalPeriod.start" if own.get("start") else "intervalPeriod.start"
            start = epoch(parse_time(_start(start_text, now)))
            if cursor is not None and abs(start - cursor) > STEP_TOLERANCE_S:
                gap = "leaves a gap after" if start > cursor else "overlaps"
                raise invalid(field, f"{gap} interval {index - 1}; intervals must follow each other")
        elif cursor is None:
            raise invalid("intervalPeriod.start", "is required (on the event or its first interval)")
        else:
            start = cursor
        if first_start is None:
            first_start = start
        duration = own.get("duration") or period.get("duration") or body.get("duration")
        field = f"intervals.{index}.intervalPeriod.duration" if own.get("duration") else "intervalPeriod.duration"
        if not duration:
            raise invalid(field, "is required (on the event or its interval)")
        last = index == len(intervals) - 1
        length = _seconds(duration, field, max(0.0, first_start + max_duration_s - start) if last else None)
        cursor = start + length
        if cursor - first_start > max_duration_s + 1e-6:
            raise invalid("intervals", f"intervals span {cursor - first_start:g} s; this VTN accepts events of at "
                                       f"most {max_duration_s:g} s (maxEventDurationS)")
        steps.append((start, cursor, _changes(interval, index)))
    return steps


def to_vtn_plan(body: Mapping[str, Any], event_id: str, now: float, max_duration_s: float,
                is_ven: Callable[[str], bool]) -> tuple[dict[str, Any], list[IntervalStep]]:
    """The dr.vtn event request of a validated OpenADR eventRequest (over the whole span, asking what the
    interval under way at `now` asks, else the first) and its steps (each interval's payload from its start)."""
    steps = interval_steps(body, now, max_duration_s)
    period = dict(body.get("intervalPeriod") or {})
    first = dict(body["intervals"][0].get("intervalPeriod") or {})
    start, end = steps[0][0], steps[-1][1]
    out: dict[str, Any] = {"eventId": event_id, "programId": body["programID"],
                           "startTime": to_iso(datetime.fromtimestamp(start, UTC)), "durationS": round(end - start, 6)}
    randomize = period.get("randomizeStart") or first.get("randomizeStart")
    if randomize:
        out["randomizeStartS"] = duration_seconds(randomize, "intervalPeriod.randomizeStart") or 0.0
    if body.get("priority") is not None:
        out["priority"] = PRIORITY_MAX - body["priority"]
    if body.get("eventName"):
        out["name"] = body["eventName"]
    due = [changes for at, _, changes in steps if at <= now + 1e-6]
    out.update(due[-1] if due else steps[0][2])     # what the event asks now (an update may come mid-event)
    targets = list(dict.fromkeys(body.get("targets") or []))
    vens = [t for t in targets if is_ven(t)]
    groups = [t for t in targets if not is_ven(t)]
    if vens:
        out["venIds"] = vens
    if groups:
        out["groups"] = groups
    if not targets:
        out["allVens"] = True
    return out, steps


def to_vtn_request(body: Mapping[str, Any], event_id: str, now: float, max_duration_s: float,
                   is_ven: Callable[[str], bool]) -> dict[str, Any]:
    """The dr.vtn event request of a validated OpenADR eventRequest (see `to_vtn_plan`)."""
    return to_vtn_plan(body, event_id, now, max_duration_s, is_ven)[0]


def served_intervals(body: Mapping[str, Any], steps: list[IntervalStep]) -> list[dict[str, Any]]:
    """The intervals of a several-interval event as the VTN serves them: each with its own resolved period."""
    return [{"id": interval["id"], "payloads": interval["payloads"],
             "intervalPeriod": {"start": to_iso(datetime.fromtimestamp(start, UTC)),
                                "duration": seconds_duration(end - start)}}
            for interval, (start, end, _) in zip(body["intervals"], steps)]


def extras_of(body: Mapping[str, Any], steps: list[IntervalStep] | None = None) -> dict[str, Any]:
    """What the object book keeps of an OpenADR event beside dr.vtn's record; an event of several intervals
    keeps them (resolved) and its steps (`_steps`: `[start, changes]`, what `resume_steps` re-arms)."""
    out = {key: body[key] for key in EXTRA_KEYS if body.get(key) is not None}
    if steps is not None and len(steps) > 1:
        out["intervals"] = served_intervals(body, steps)
        out["_steps"] = [[start, changes] for start, _, changes in steps]
    return out


def step_changes(steps: list[IntervalStep]) -> list[tuple[float, dict[str, Any]]]:
    """The `(instant, changes)` list dr.vtn's EventManager applies (`EventManager.set_steps`)."""
    return [(start, dict(changes)) for start, _, changes in steps]


def resume_steps(book: ObjectBook, manager: EventManager) -> int:
    """After a start: hand every live event's kept steps back to dr.vtn, and deregister OpenADR VENs whose VEN
    object is gone (`Registry.keep_oadr`); returns how many events have steps."""
    manager.registry.keep_oadr({str(ven.body.get("venName")) for ven in book.all(VEN)})
    count = 0
    for extras in book.all(EVENT):
        kept = extras.body.get("_steps")
        if kept and extras.object_id in manager.events:
            manager.set_steps(extras.object_id, [(float(at), dict(changes)) for at, changes in kept])
            count += 1
    return count


def event_targets(event: Mapping[str, Any], extras: Mapping[str, Any]) -> list[str]:
    """The targets of an event as OpenADR names them (as written, else its venIds and groups)."""
    if extras.get("targets"):
        return list(extras["targets"])
    return list(event.get("venIds") or []) + list(event.get("groups") or [])


def to_oadr_event(event: Mapping[str, Any], extras: Mapping[str, Any], programs: Callable[[str], bool]) -> \
        dict[str, Any]:
    """The OpenADR event of a dr.vtn event (its API form) and its kept OpenADR side."""
    program_id = event.get("programId")
    if not program_id or not programs(program_id):
        program_id = DEFAULT_PROGRAM_ID
    if event.get("capKw") is not None:
        payload = {"type": IMPORT_CAPACITY_LIMIT, "values": [float(event["capKw"])]}
    elif event.get("level") is not None and event.get("signal") != "LOAD_DISPATCH":
        payload = {"type": SIMPLE, "values": [event["level"]]}
    else:
        payload = {"type": SETPOINT_RELATIVE, "values": [-float(event["requestedReductionKw"])]}
    period: dict[str, Any] = {"start": event["startTime"], "duration": seconds_duration(event["durationS"])}
    if event.get("randomizeStartS"):
        period["randomizeStart"] = seconds_duration(event["randomizeStartS"])
    out: dict[str, Any] = {
        "id": event["eventId"], "createdDateTime": event["createdAt"], "modificationDateTime": event["updatedAt"],
        "objectType": "EVENT", "programID": program_id, "eventName": event.get("name") or extras.get("eventName"),
        "priority": max(0, PRIORITY_MAX - int(event.get("priority") or 0)) if event.get("priority") else
        extras.get("priority"),
        "targets": event_targets(event, extras) or None,
        "intervalPeriod": period, "intervals": [{"id": 0, "payloads": [payload]}]}
    if extras.get("intervals"):
        out["intervals"] = extras["intervals"]
        period["duration"] = extras["intervals"][0]["intervalPeriod"]["duration"]
    for key in ("reportDescriptors", "payloadDescriptors"):
        if extras.get(key) is not None:
            out[key] = extras[key]
    return out
