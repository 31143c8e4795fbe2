"""Plain data shared by every room of the VEN core: the driver calls it asks for (`Op`) and the event it holds
(`EventState`), with the time helpers. Imports nothing of the VEN package."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dr_common.timeutil import UTC, to_iso

EPS_KW = 1e-4
SHED = "shed"
RESTORE = "restore"
CORRECT = "correct"  # the pre-event value written again after a restore that did not take
SET = "set"
REVERT = "revert"


@dataclass(frozen=True)
class Op:
    """One platform.driver call: set_point(path, point, value) or revert_point(path, point)."""

    kind: str
    path: str
    point: str
    value: Any
    load_id: str
    purpose: str


@dataclass
class EventState:
    """The event the VEN holds: pending until `start`, active until `until`."""

    event_id: str | None
    correlation_id: str
    op: str
    requested_kw: float
    start: float
    until: float
    modification: int = 0
    allowed: list[str] | None = None
    baseline_kw: float | None = None
    baseline_samples: int = 0
    started: bool = False
    opted_out: bool = False
    cap_kw: float | None = None     # an import cap: requested_kw follows the load down to it (ShedControl.step)

    def to_dict(self) -> dict[str, Any]:
        """The stored (and reported) form."""
        return {"eventId": self.event_id, "correlationId": self.correlation_id, "op": self.op,
                "requestedKw": self.requested_kw, "start": self.start, "until": self.until,
                "modification": self.modification, "allowed": self.allowed, "baselineKw": self.baseline_kw,
                "baselineSamples": self.baseline_samples, "started": self.started, "optedOut": self.opted_out,
                "capKw": self.cap_kw}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventState:
        """Back from `to_dict`; raises KeyError, TypeError or ValueError on a malformed entry."""
        return cls(event_id=data.get("eventId"), correlation_id=str(data["correlationId"]), op=str(data["op"]),
                   requested_kw=float(data["requestedKw"]), start=float(data["start"]), until=float(data["until"]),
                   modification=int(data.get("modification", 0)), allowed=data.get("allowed"),
                   baseline_kw=data.get("baselineKw"), baseline_samples=int(data.get("baselineSamples", 0)),
                   started=bool(data.get("started")), opted_out=bool(data.get("optedOut")),
                   cap_kw=None if data.get("capKw") is None else float(data["capKw"]))


def dt(ts: float | None) -> datetime | None:
    """Epoch seconds as an aware datetime (None stays None)."""
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC."""
    return to_iso(datetime.fromtimestamp(ts, UTC))
