"""One event model: an OpenADR 3 event IS a dr.vtn event. This module maps between the two.

OpenADR -> dr.vtn (`to_vtn_request`):
  intervalPeriod.start (event's, else the first interval's)  -> startTime; `0001-01-01...` means now
  intervalPeriod.duration (else the event's `duration`)        -> durationS; `P9999Y` (open-ended) means the
                                                                  longest event the VTN accepts (maxEventDurationS)
  intervalPeriod.randomizeStart                                -> randomizeStartS
  priority (0 is the highest)                                  -> priority 1000 - p (dr.vtn: larger wins)
  one interval's payload DISPATCH_SETPOINT_RELATIVE v < 0 kW   -> requestedReductionKw -v (negative = shed)
  one interval's payload SIMPLE level 0-3                      -> level (kW from the program's simpleLevelsKw)
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
from dr_vtn_dispatcher.oadr_models import duration_seconds, seconds_duration
from dr_vtn_dispatcher.oadr_objects import DEFAULT_PROGRAM_ID

SIMPLE = "SIMPLE"
SETPOINT_RELATIVE = "DISPATCH_SETPOINT_RELATIVE"
IMPORT_CAPACITY_LIMIT = "IMPORT_CAPACITY_LIMIT"
PRIORITY_MAX = 1000
NOW_PREFIX = "0001-01-01"
EXTRA_KEYS = ("eventName", "targets", "reportDescriptors", "payloadDescriptors", "priority")


def _start(text: str, now: float) -> str:
    if text.startswith(NOW_PREFIX):
        return to_iso(datetime.fromtimestamp(now, UTC))
    try:
        parsed = parse_time(text)
    except ValueError:
        raise invalid("intervalPeriod.start", "is not an RFC 3339 date-time") from None
    return to_iso(parsed)


def _payload(intervals: list[dict[str, Any]]) -> dict[str, Any]:
    if len(intervals) != 1:
        raise invalid("intervals", "exactly one interval is dispatched by this VTN (several steps are not "
                                   "supported yet)")
    for payload in intervals[0].get("payloads", []):
        kind, values = payload["type"], payload["values"]
        if kind not in (SIMPLE, SETPOINT_RELATIVE, IMPORT_CAPACITY_LIMIT):
            continue
        value = values[0] if values else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid("intervals.0.payloads", f"{kind} needs one number in values")
        if kind == SIMPLE:
            if not isinstance(value, int) or not 0 <= value <= 3:
                raise invalid("intervals.0.payloads", "a SIMPLE level is 0, 1, 2 or 3")
            return {"level": value}
        if kind == SETPOINT_RELATIVE:
            if value >= 0:
                raise invalid("intervals.0.payloads", "DISPATCH_SETPOINT_RELATIVE must be negative (kW shed)")
            return {"requestedReductionKw": -float(value)}
        raise invalid("intervals.0.payloads", "IMPORT_CAPACITY_LIMIT is not dispatched yet")
    raise invalid("intervals.0.payloads", f"needs a {SIMPLE} or {SETPOINT_RELATIVE} payload")


def to_vtn_request(body: Mapping[str, Any], event_id: str, now: float, max_duration_s: float,
                   is_ven: Callable[[str], bool]) -> dict[str, Any]:
    """The dr.vtn event request of a validated OpenADR eventRequest."""
    intervals = list(body.get("intervals") or [])
    period = dict(body.get("intervalPeriod") or {})
    first = dict(intervals[0].get("intervalPeriod") or {}) if intervals else {}
    start = period.get("start") or first.get("start")
    if not start:
        raise invalid("intervalPeriod.start", "is required (on the event or its interval)")
    duration = period.get("duration") or first.get("duration") or body.get("duration")
    if not duration:
        raise invalid("intervalPeriod.duration", "is required (on the event or its interval)")
    seconds = duration_seconds(duration, "intervalPeriod.duration")
    out: dict[str, Any] = {"eventId": event_id, "programId": body["programID"], "startTime": _start(start, now),
                           "durationS": max_duration_s if seconds is None else seconds}
    randomize = period.get("randomizeStart") or first.get("randomizeStart")
    if randomize:
        out["randomizeStartS"] = duration_seconds(randomize, "intervalPeriod.randomizeStart") or 0.0
    if body.get("priority") is not None:
        out["priority"] = PRIORITY_MAX - body["priority"]
    if body.get("eventName"):
        out["name"] = body["eventName"]
    out.update(_payload(intervals))
    targets = list(dict.fromkeys(body.get("targets") or []))
    vens = [t for t in targets if is_ven(t)]
    groups = [t for t in targets if not is_ven(t)]
    if vens:
        out["venIds"] = vens
    if groups:
        out["groups"] = groups
    if not targets:
        out["allVens"] = True
    return out


def extras_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the object book keeps of an OpenADR event beside dr.vtn's record."""
    return {key: body[key] for key in EXTRA_KEYS if body.get(key) is not None}


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
    if event.get("level") is not None and event.get("signal") != "LOAD_DISPATCH":
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
    for key in ("reportDescriptors", "payloadDescriptors"):
        if extras.get(key) is not None:
            out[key] = extras[key]
    return out
