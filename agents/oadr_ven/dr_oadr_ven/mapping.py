"""VtnEvents -> dr.ven commands (`dr_common.payloads.Command` on dr/cmd/<venId>).

One VTN event is one dr.ven event: its first command carries the first interval's reduction, `startTime` the
first interval's start and `until` the last interval's end (both shifted by the event's random start offset,
drawn once per event), so dr.ven's own timer restores the loads at the event's end whatever happens to the
VTN link. Each later interval, each modification by the VTN and each move of an `IMPORT_CAPACITY_LIMIT`
reduction is a new revision of that command (`modificationNumber` + 1). A cancelled or deleted event is a
`restore`. Signals: `DISPATCH_SETPOINT_RELATIVE` / `LOAD_DISPATCH` (kW change, negative = shed),
`IMPORT_CAPACITY_LIMIT` (the cap goes in `capKw`, and dr.ven follows its load down to it at every control
step; `requestedReductionKw` carries baseline - cap from dr.ven's last telemetry, 0 before any; with a command
schema without `capKw` the reduction is computed here and re-sent as the baseline moves), `SIMPLE` (level 0-3
-> kW by `simpleLevelsKw`).

An event beyond the configured limits (kW, duration, too many intervals, unknown signal value) gets no
command; one that starts further ahead than `limits.maxStartAheadS` waits until it is within that window.
The plans are plain dicts so that the agent's state file keeps them across restarts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from dr_common.payloads import COMMAND_FIELDS, OP_EVENT, OP_RESTORE, Command
from dr_common.schema import is_valid_id
from dr_common.timeutil import parse_time, to_iso
from dr_oadr_ven.config import OadrVenConfig
from dr_oadr_ven.vtnevent import Interval, VtnEvent

CAP_FIELD = any(f.name == "capKw" for f in COMMAND_FIELDS)
ENDED_KEEP_S = 3600.0  # an ended event's plan is kept this long (a late re-read of it sends nothing)
LONGEST_S = 5 * 366 * 86400.0  # an endless interval is taken to end this far ahead (it is refused anyway)
CAPACITY = "IMPORT_CAPACITY_LIMIT"
RELATIVE = ("DISPATCH_SETPOINT_RELATIVE", "LOAD_DISPATCH")

# plan states
ACTIVE = "active"        # commands sent or due
REFUSED = "refused"      # beyond the limits: no command
CANCELLED = "cancelled"  # restored on the VTN's cancel or delete
ENDED = "ended"


def command_event_id(vtn_event_id: str) -> str:
    """dr.ven's eventId for a VTN event id (kept when it follows the identifier rule, else a stable hash)."""
    if is_valid_id(vtn_event_id):
        return vtn_event_id
    return "oadr-" + hashlib.sha256(vtn_event_id.encode()).hexdigest()[:24]


class Refusal(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CommandPlanner:
    """Turns VtnEvents into command payloads over time. `plans` is the persisted map eventId -> plan dict."""

    def __init__(self, config: OadrVenConfig, plans: MutableMapping[str, dict[str, Any]],
                 on_refused: Callable[[str, Refusal], None], rng: random.Random | None = None) -> None:
        self._config = config
        self.plans = plans
        self._on_refused = on_refused
        self._rng = rng or random.Random()
        self._events: dict[str, VtnEvent] = {}

    # --- the VTN's side -------------------------------------------------------------------------------
    def accept(self, event: VtnEvent, now: datetime, baseline_kw: float | None) -> list[dict[str, Any]]:
        """A new or changed event; the commands to publish now."""
        if event.cancelled:
            return self.cancel(event.event_id, now)
        plan = self.plans.get(event.event_id)
        if plan is not None and event.modification <= plan["modification"]:
            self._events.setdefault(event.event_id, event)
            return []
        try:
            self._check(event)
        except Refusal as refusal:
            out = self._restore(plan, now) if plan is not None and plan["state"] == ACTIVE else []
            self.plans[event.event_id] = {**(plan or self._new_plan(event)), "modification": event.modification,
                                          "state": REFUSED, "refusal": str(refusal)[:300]}
            self._on_refused(event.event_id, refusal)
            return out
        if plan is None:
            plan = self._new_plan(event)
        signature = _signature(event)
        if plan["state"] == ACTIVE and plan.get("signature") == signature:
            plan["modification"] = event.modification  # a change of the VTN's record only: nothing to send
            self._events[event.event_id] = event
            return []
        plan.update(modification=event.modification, state=ACTIVE, refusal=None, sentIndex=None,
                    signature=signature, learnedAt=to_iso(now),
                    startTime=to_iso(event.intervals[0].start + timedelta(seconds=plan["offsetS"])),
                    until=to_iso(self._end(event) + timedelta(seconds=plan["offsetS"])))
        self.plans[event.event_id] = plan
        self._events[event.event_id] = event
        return self._due(event.event_id, now, baseline_kw)

    def cancel(self, event_id: str, now: datetime) -> list[dict[str, Any]]:
        """The VTN cancelled or deleted the event: restore when a command for it was sent."""
        plan = self.plans.get(event_id)
        self._events.pop(event_id, None)
        if plan is None or plan["state"] != ACTIVE:
            return []
        out = self._restore(plan, now)
        plan["state"] = CANCELLED
        return out

    def reconcile(self, seen: set[str], now: datetime, listed_at: datetime | None = None) -> list[dict[str, Any]]:
        """After a complete listing of the VTN's events (read from `listed_at` on): the active events it no
        longer shows were deleted. An event learned of after the listing began (by a notification that overtook
        the poll) is not judged by it."""
        out: list[dict[str, Any]] = []
        for event_id, plan in list(self.plans.items()):
            if plan["state"] != ACTIVE or event_id in seen or parse_time(plan["until"]) <= now:
                continue
            if listed_at is not None and parse_time(plan.get("learnedAt") or plan["startTime"]) >= listed_at:
                continue
            out += self.cancel(event_id, now)
        return out

    # --- time -------------------------------------------------------------------------------------------
    def tick(self, now: datetime, baseline_kw: float | None) -> list[dict[str, Any]]:
        """Interval steps, capacity re-evaluations and deferred starts due now."""
        out: list[dict[str, Any]] = []
        for event_id, plan in list(self.plans.items()):
            if plan["state"] == ACTIVE and parse_time(plan["until"]) <= now:
                plan["state"] = ENDED
            if plan["state"] != ACTIVE:
                if now - parse_time(plan["until"]) > timedelta(seconds=ENDED_KEEP_S) and \
                        len(self.plans) > self._config.limits.max_events:
                    del self.plans[event_id]
                continue
            if event_id in self._events:
                out += self._due(event_id, now, baseline_kw)
        return out

    def active(self) -> list[str]:
        return [k for k, p in self.plans.items() if p["state"] == ACTIVE]

    # --- internals ----------------------------------------------------------------------------------
    def _new_plan(self, event: VtnEvent) -> dict[str, Any]:
        spread = event.randomize_start_s
        return {"eventId": event.event_id, "cmdEventId": command_event_id(event.event_id),
                "modification": event.modification, "revision": 0, "sentIndex": None, "sentKw": None,
                "offsetS": self._rng.uniform(-spread, spread) if spread else 0.0, "state": ACTIVE,
                "startTime": to_iso(event.intervals[0].start), "until": to_iso(self._end(event)),
                "programId": event.program_id, "refusal": None}

    @staticmethod
    def _end(event: VtnEvent) -> datetime:
        return max(i.start + timedelta(seconds=min(i.duration_s, LONGEST_S)) for i in event.intervals)

    def _check(self, event: VtnEvent) -> None:
        limits = self._config.limits
        if len(event.intervals) > limits.max_intervals:
            raise Refusal("intervals", f"{len(event.intervals)} intervals, more than limits.maxIntervals "
                                       f"{limits.max_intervals}")
        span = max(i.start.timestamp() + i.duration_s for i in event.intervals) - \
            min(i.start.timestamp() for i in event.intervals)
        if not span <= limits.max_duration_s:
            raise Refusal("intervalPeriod.duration", f"the event lasts {span:g} s, longer than "
                                                     f"limits.maxDurationS {limits.max_duration_s:g}")
        for index, interval in enumerate(event.intervals):
            self._static_kw(interval, index)

    def _static_kw(self, interval: Interval, index: int) -> float | None:
        """The reduction an interval asks for (None: depends on the baseline), or Refusal."""
        field, value, limits = f"intervals.{index}.payloads", interval.value, self._config.limits
        if interval.signal in RELATIVE:
            kw = max(0.0, -value)
        elif interval.signal == "SIMPLE":
            if value not in (0, 1, 2, 3):
                raise Refusal(field, f"SIMPLE level {value:g} is not 0, 1, 2 or 3")
            kw = self._config.simple_levels_kw[int(value)]
        elif interval.signal == CAPACITY:
            if not 0 <= value <= limits.max_kw * 1000:
                raise Refusal(field, f"IMPORT_CAPACITY_LIMIT {value:g} kW is not a usable cap")
            return None
        else:
            raise Refusal(field, f"signal {interval.signal!r} is not acted on")
        if kw > limits.max_kw:
            raise Refusal(field, f"{kw:g} kW is more than limits.maxKw {limits.max_kw:g}")
        return kw

    def _current(self, event: VtnEvent, offset_s: float, now: datetime) -> int | None:
        """Index of the interval in force at `now` (0 before the first; None in a gap after the first)."""
        shift = timedelta(seconds=offset_s)
        if now < event.intervals[0].start + shift:
            return 0
        current = None
        for index, interval in enumerate(event.intervals):
            length = timedelta(seconds=min(interval.duration_s, LONGEST_S))
            if interval.start + shift <= now < interval.start + shift + length:
                current = index
        return current

    def _due(self, event_id: str, now: datetime, baseline_kw: float | None) -> list[dict[str, Any]]:
        plan, event = self.plans[event_id], self._events[event_id]
        start = parse_time(plan["startTime"])
        if (start - now).total_seconds() > self._config.limits.max_start_ahead_s:
            return []
        index = self._current(event, plan["offsetS"], now)
        cap = None
        if index is None:
            kw = 0.0
        else:
            interval = event.intervals[index]
            kw = self._static_kw(interval, index)
            if kw is None:
                cap = interval.value
                if baseline_kw is None and not CAP_FIELD:
                    return []
                kw = 0.0 if baseline_kw is None else min(max(0.0, baseline_kw - cap), self._config.limits.max_kw)
        # with capKw dr.ven follows its load down to the cap itself; without it, the reduction is re-sent here
        moved = not CAP_FIELD and plan["sentKw"] is not None and cap is not None and \
            abs(kw - plan["sentKw"]) >= max(self._config.capacity_reeval_kw, 1e-9)
        if plan["sentIndex"] == index and plan["sentKw"] is not None and not moved:
            return []
        plan["revision"] += 1
        plan["sentIndex"], plan["sentKw"] = index, kw
        payload: dict[str, Any] = {
            "op": OP_EVENT, "correlationId": f"oadr:{plan['cmdEventId']}:{plan['revision']}",
            "venId": self._config.ven_id, "eventId": plan["cmdEventId"], "requestedReductionKw": round(kw, 6),
            "startTime": plan["startTime"], "until": plan["until"], "modificationNumber": plan["revision"]}
        if event.priority is not None:
            payload["priority"] = max(0, 1000 - event.priority)
        if cap is not None and CAP_FIELD:
            payload["capKw"] = cap
        return [Command.from_payload(payload).to_payload()]

    def _restore(self, plan: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
        plan["revision"] += 1
        return [Command(op=OP_RESTORE, correlation_id=f"oadr:{plan['cmdEventId']}:{plan['revision']}:restore",
                        ven_id=self._config.ven_id, event_id=plan["cmdEventId"],
                        modification_number=plan["revision"]).to_payload()]


def _signature(event: VtnEvent) -> list[Any]:
    """What a command is made of: a modification that leaves it unchanged sends nothing."""
    return [event.priority, event.randomize_start_s] + \
        [[to_iso(i.start), i.duration_s if i.duration_s != float("inf") else -1, i.signal, i.value]
         for i in event.intervals]
