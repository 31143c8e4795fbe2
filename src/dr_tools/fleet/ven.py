"""The behaviour of one simulated VEN (the seeds' VEN contract), without any I/O.

Commands (`event`, `shedPanel`, `restore`, `ping`, any field-name variant DESIGN.md allows) are answered with
acks; telemetry carries a plausible load around a per-VEN baseline, the shed while an event is active and the
event's figures. An event ends by itself at its `until`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import datetime

from dr_common.payloads import OP_EVENT, OP_PING, OP_RESTORE, OP_SHED_PANEL, Command
from dr_common.schema import PayloadError, decode_json
from dr_common.timeutil import to_iso, utcnow


@dataclass
class ActiveEvent:
    event_id: str | None
    requested_kw: float
    accepted_kw: float
    until: datetime


class SimVen:
    def __init__(self, ven_id: str, rng: random.Random) -> None:
        self.ven_id = ven_id
        self.baseline_kw = round(rng.uniform(3.0, 12.0), 2)
        self.max_shed_kw = round(self.baseline_kw * rng.uniform(0.3, 0.7), 2)
        self._phase = rng.uniform(0, 2 * math.pi)
        self._rng = rng
        self.event: ActiveEvent | None = None

    def load_kw(self, now: datetime) -> float:
        """Uncontrolled load: the baseline with a slow swing and a little noise."""
        swing = 0.08 * self.baseline_kw * math.sin(now.timestamp() / 900.0 + self._phase)
        return max(0.2, self.baseline_kw + swing + self._rng.gauss(0, 0.03 * self.baseline_kw))

    def _expire(self, now: datetime) -> None:
        if self.event is not None and now >= self.event.until:
            self.event = None

    def handle(self, raw: bytes, now: datetime | None = None) -> tuple[dict, Command | None]:
        """One command payload -> (the ack to publish, the parsed command or None when it was unusable)."""
        now = now or utcnow()
        self._expire(now)
        try:
            cmd = Command.from_payload(decode_json(raw))
        except PayloadError as exc:
            correlation = _correlation_of(raw)
            return {"correlationId": correlation or "unknown", "ok": False, "error": str(exc), "ts": to_iso(now)}, None
        except (ValueError, ArithmeticError) as exc:
            return {"correlationId": _correlation_of(raw) or "unknown", "ok": False,
                    "error": f"{exc.__class__.__name__}: {exc}", "ts": to_iso(now)}, None
        return self._answer(cmd, now), cmd

    def _answer(self, cmd: Command, now: datetime) -> dict:
        ack: dict = {"correlationId": cmd.correlation_id, "op": cmd.op, "ok": True, "ts": to_iso(now)}
        if cmd.event_id:
            ack["eventId"] = cmd.event_id
        if cmd.ven_id is not None and cmd.ven_id != self.ven_id:
            ack.update(ok=False, error=f"command for {cmd.ven_id} reached {self.ven_id}")
            return ack
        if cmd.op in (OP_EVENT, OP_SHED_PANEL):
            assert cmd.until is not None  # Command.from_payload requires it for these ops
            if cmd.until <= now:
                ack.update(ok=False, error="the event has already ended")
                return ack
            accepted = round(min(cmd.requested_reduction_kw, self.max_shed_kw), 3)
            self.event = ActiveEvent(cmd.event_id, cmd.requested_reduction_kw, accepted, cmd.until)
            ack["data"] = {"targetKw": round(max(0.0, self.load_kw(now) - accepted), 3),
                           "acceptedReduceKw": accepted, "until": to_iso(cmd.until)}
        elif cmd.op == OP_RESTORE:
            self.event = None
            ack["data"] = {"targetKw": None, "acceptedReduceKw": 0.0, "until": None}
        elif cmd.op == OP_PING:
            ack["data"] = {"targetKw": None, "acceptedReduceKw": None, "until": None}
        return ack

    def telemetry(self, now: datetime | None = None) -> dict:
        now = now or utcnow()
        self._expire(now)
        load = self.load_kw(now)
        shed = 0.0
        event = self.event
        if event is not None:
            shed = min(event.accepted_kw, load - 0.2) * self._rng.uniform(0.92, 1.0)
        return {"venId": self.ven_id, "ts": to_iso(now), "usedPowerKw": round(load - shed, 3),
                "shedPowerKw": round(shed, 3), "requestedReductionKw": event.requested_kw if event else 0.0,
                "eventId": event.event_id if event else None, "baselinePowerKw": round(load, 3)}


def _correlation_of(raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict):
        for key in ("correlationId", "correlation_id", "cid"):
            if isinstance(value.get(key), (str, int)):
                return str(value[key])
    return None
