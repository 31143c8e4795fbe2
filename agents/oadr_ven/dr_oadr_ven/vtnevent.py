"""What a VTN asked of this VEN, whatever the protocol: the protocol links (OpenADR 3.1, OpenADR 2.0b) turn the
VTN's event objects into `VtnEvent`s, and the mapping turns `VtnEvent`s into dr.ven commands.

Signal names are OpenADR's: `DISPATCH_SETPOINT_RELATIVE` (kW change, negative = shed), `IMPORT_CAPACITY_LIMIT`
(kW cap), `SIMPLE` (level 0-3), `LOAD_DISPATCH` (2.0b, kW change like DISPATCH_SETPOINT_RELATIVE). Times are
aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

SIGNALS = ("DISPATCH_SETPOINT_RELATIVE", "IMPORT_CAPACITY_LIMIT", "SIMPLE", "LOAD_DISPATCH")


@dataclass(frozen=True)
class Interval:
    """One step of an event: from `start` for `duration_s` seconds, the VTN asks `value` of `signal`."""
    start: datetime
    duration_s: float
    signal: str
    value: float


@dataclass(frozen=True)
class ReportRequest:
    """A report the VTN asks for: payload type (`USAGE`, `BASELINE`, `DELTA_USAGE`, `OPERATING_STATE`, 2.0b
    `TELEMETRY_USAGE`) every `interval_s` seconds."""
    payload_type: str
    interval_s: float = 60.0


@dataclass(frozen=True)
class VtnEvent:
    """One VTN event as this VEN sees it. `modification` grows with each change the VTN makes (OpenADR 3
    modificationDateTime order, 2.0b modificationNumber); `cancelled` is a cancellation or deletion."""
    event_id: str
    modification: int
    program_id: str | None
    intervals: tuple[Interval, ...]
    randomize_start_s: float = 0.0
    cancelled: bool = False
    priority: int | None = None
    report_requests: tuple[ReportRequest, ...] = field(default_factory=tuple)
    protocol: str = "oadr31"   # or "oadr20b"
