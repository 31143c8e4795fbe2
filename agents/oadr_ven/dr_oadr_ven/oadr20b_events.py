"""OpenADR 2.0b events (as openleadr parses an `oadrDistributeEvent`) turned into `VtnEvent`s, with the limits
that refuse a hostile or malformed event before anything is handed to the agent.

openleadr hands each event as a dict: `event_descriptor` (event_id, modification_number, market_context,
event_status, priority), `active_period` (dtstart, duration, optional tolerance/startafter), `event_signals`
(signal_name, signal_type, optional measurement, intervals with duration, optional dtstart and
signal_payload) and `targets_by_type`. 2.0b intervals without a dtstart follow each other from the active
period's start.

Accepted signals: `SIMPLE` (signal type `level`, levels 0-3) and `LOAD_DISPATCH` (signal type `delta`, a
power change; negative = shed; in kW unless the signal's measurement says W with an SI scale). Anything else
is refused as a whole: no partial execution of an event this VEN does not understand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dr_oadr_ven.vtnevent import Interval, VtnEvent

SIMPLE_LEVELS = (0, 1, 2, 3)
SIGNAL_TYPES = {"SIMPLE": ("level",), "LOAD_DISPATCH": ("delta",)}
# SI scale code -> power of ten (OpenADR 2.0b siScaleCode)
SI_SCALE = {"p": -12, "n": -9, "micro": -6, "m": -3, "c": -2, "d": -1, "none": 0, "k": 3, "M": 6, "G": 9,
            "T": 12}


class EventRefused(ValueError):
    """An event this VEN will not execute; `field` names what is wrong, `reason` is a short counter key."""

    def __init__(self, field: str, reason: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class EventLimits:
    """What a 2.0b event may ask: kW magnitude, total duration, number of intervals, how far ahead it may start,
    the randomization window, and (when not empty) the market contexts (programs) this VEN is enrolled in."""
    max_abs_kw: float = 1000.0
    max_duration_s: float = 86400.0
    max_intervals: int = 96
    max_lead_s: float = 7 * 86400.0
    max_randomize_s: float = 3600.0
    market_contexts: tuple[str, ...] = ()


def _get(obj: Any, key: str, field: str) -> Any:
    if not isinstance(obj, dict) or key not in obj or obj[key] is None:
        raise EventRefused(field, "missing_field", "is missing")
    return obj[key]


def _aware(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise EventRefused(field, "bad_time", f"is not a date-time ({type(value).__name__})")
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _seconds(value: Any, field: str) -> float:
    if not isinstance(value, timedelta):
        raise EventRefused(field, "bad_duration", f"is not a duration ({type(value).__name__})")
    return value.total_seconds()


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventRefused(field, "bad_value", f"is not a number ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise EventRefused(field, "bad_value", "is not finite")
    return number


def _measurement(signal: dict[str, Any]) -> dict[str, Any] | None:
    """The signal's measurement: openleadr normalizes it to `measurement` for the first signals of an event
    only, later ones keep the EMIX item name (`powerReal`, ...) with `item_units` and `si_scale_code`."""
    measurement = signal.get("measurement")
    if isinstance(measurement, dict):
        return measurement
    for key, value in signal.items():
        if isinstance(value, dict) and ("item_units" in value or "si_scale_code" in value):
            return {"name": key, "unit": value.get("item_units"), "scale": value.get("si_scale_code")}
    return None


def _kw_factor(signal: dict[str, Any], field: str) -> float:
    """Factor from the signal's unit to kW: 1 without a measurement (the program's unit is kW)."""
    measurement = _measurement(signal)
    if measurement is None:
        return 1.0
    unit = measurement.get("unit")
    scale = measurement.get("scale") or "none"
    if unit not in ("W", "w") or scale not in SI_SCALE:
        raise EventRefused(f"{field}.measurement", "bad_unit",
                           f"unit {str(unit)[:20]!r} scale {str(scale)[:20]!r} is not a power")
    return 10.0 ** (SI_SCALE[scale] - 3)


def _start_after_s(active_period: dict[str, Any]) -> float:
    tolerance = active_period.get("tolerance")
    if not isinstance(tolerance, dict):
        return 0.0
    inner = tolerance.get("tolerate", tolerance)
    value = inner.get("startafter") if isinstance(inner, dict) else None
    return _seconds(value, "active_period.tolerance.startafter") if value is not None else 0.0


def _signal_intervals(signal: dict[str, Any], index: int, period_start: datetime,
                      limits: EventLimits) -> list[Interval]:
    field = f"event_signals[{index}]"
    name = _get(signal, "signal_name", f"{field}.signal_name")
    if name not in SIGNAL_TYPES:
        raise EventRefused(f"{field}.signal_name", "unknown_signal", f"signal {str(name)[:40]!r} is not supported")
    signal_type = _get(signal, "signal_type", f"{field}.signal_type")
    if signal_type not in SIGNAL_TYPES[name]:
        raise EventRefused(f"{field}.signal_type", "unknown_signal",
                           f"{name} of type {str(signal_type)[:40]!r} is not supported")
    factor = _kw_factor(signal, field) if name == "LOAD_DISPATCH" else 1.0
    raw = _get(signal, "intervals", f"{field}.intervals")
    if not isinstance(raw, list) or not raw:
        raise EventRefused(f"{field}.intervals", "missing_field", "has no interval")
    if len(raw) > limits.max_intervals:
        raise EventRefused(f"{field}.intervals", "too_many_intervals",
                           f"{len(raw)} intervals (at most {limits.max_intervals})")
    out = []
    cursor = period_start
    for i, item in enumerate(raw):
        ifield = f"{field}.intervals[{i}]"
        if not isinstance(item, dict):
            raise EventRefused(ifield, "missing_field", "is not an interval")
        start = _aware(item["dtstart"], f"{ifield}.dtstart") if item.get("dtstart") else cursor
        duration_s = _seconds(_get(item, "duration", f"{ifield}.duration"), f"{ifield}.duration")
        if duration_s <= 0:
            raise EventRefused(f"{ifield}.duration", "endless", "is not a positive duration")
        value = _number(_get(item, "signal_payload", f"{ifield}.signal_payload"), f"{ifield}.signal_payload")
        if name == "SIMPLE":
            if value not in SIMPLE_LEVELS:
                raise EventRefused(f"{ifield}.signal_payload", "absurd_value", f"SIMPLE level {value:g} is not 0-3")
        else:
            value *= factor
            if abs(value) > limits.max_abs_kw:
                raise EventRefused(f"{ifield}.signal_payload", "absurd_value",
                                   f"{value:g} kW is beyond {limits.max_abs_kw:g} kW")
        out.append(Interval(start=start, duration_s=duration_s, signal=name, value=value))
        cursor = start + timedelta(seconds=duration_s)
    return out


def event_from_oadr20b(event: dict[str, Any], ven_id: str | None, limits: EventLimits,
                       now: datetime | None = None) -> VtnEvent:
    """The VtnEvent of one openleadr event dict, or EventRefused naming the field. A cancelled event becomes a
    cancellation whatever its signals."""
    descriptor = _get(event, "event_descriptor", "event_descriptor")
    event_id = str(_get(descriptor, "event_id", "event_descriptor.event_id"))
    if not event_id or len(event_id) > 128:
        raise EventRefused("event_descriptor.event_id", "bad_id", "is empty or longer than 128 characters")
    modification = descriptor.get("modification_number") or 0
    if isinstance(modification, bool) or not isinstance(modification, int) or modification < 0:
        raise EventRefused("event_descriptor.modification_number", "bad_value", "is not a non-negative integer")
    market_context = descriptor.get("market_context")
    program_id = str(market_context) if market_context is not None else None
    if limits.market_contexts and program_id not in limits.market_contexts:
        raise EventRefused("event_descriptor.market_context", "not_enrolled",
                           f"program {str(program_id)[:80]!r} is not one this VEN is enrolled in")
    ven_targets = (event.get("targets_by_type") or {}).get("ven_id")
    if ven_targets and ven_id is not None and ven_id not in ven_targets:
        raise EventRefused("targets.ven_id", "not_targeted", "the event targets other VENs")
    priority = descriptor.get("priority")
    priority = priority if isinstance(priority, int) and not isinstance(priority, bool) else None
    if descriptor.get("event_status") == "cancelled":
        return VtnEvent(event_id=event_id, modification=modification, program_id=program_id, intervals=(),
                        cancelled=True, priority=priority, protocol="oadr20b")
    active_period = _get(event, "active_period", "active_period")
    period_start = _aware(_get(active_period, "dtstart", "active_period.dtstart"), "active_period.dtstart")
    now = now or datetime.now(timezone.utc)
    if (period_start - now).total_seconds() > limits.max_lead_s:
        raise EventRefused("active_period.dtstart", "too_far", "starts too far ahead")
    signals = _get(event, "event_signals", "event_signals")
    if isinstance(signals, dict):
        signals = signals.get("event_signals", [signals])
    if not isinstance(signals, list) or not signals:
        raise EventRefused("event_signals", "missing_field", "has no signal")
    intervals: list[Interval] = []
    for index, signal in enumerate(signals):
        intervals.extend(_signal_intervals(signal, index, period_start, limits))
    end = max(iv.start + timedelta(seconds=iv.duration_s) for iv in intervals)
    first = min(iv.start for iv in intervals)
    if (end - first).total_seconds() > limits.max_duration_s:
        raise EventRefused("active_period.duration", "endless",
                           f"{(end - first).total_seconds():g} s is longer than {limits.max_duration_s:g} s")
    randomize_s = _start_after_s(active_period)
    if randomize_s < 0 or randomize_s > limits.max_randomize_s:
        raise EventRefused("active_period.tolerance.startafter", "bad_value",
                           f"{randomize_s:g} s is outside 0-{limits.max_randomize_s:g} s")
    intervals.sort(key=lambda iv: (iv.start, iv.signal))
    return VtnEvent(event_id=event_id, modification=modification, program_id=program_id,
                    intervals=tuple(intervals), randomize_start_s=randomize_s, priority=priority,
                    protocol="oadr20b")
