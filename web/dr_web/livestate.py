"""What the status page shows live: the latest telemetry of every VEN and a short history per VEN.

Fed from the bus by the agent; read by the Flask handlers. Plain Python, no platform import.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dr_common.payloads import Telemetry
from dr_common.schema import PayloadError


@dataclass
class LiveState:
    history_len: int = 720
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, deque] = field(default_factory=dict)
    received: int = 0
    rejected: int = 0
    last_error: str | None = None

    def on_telemetry(self, message: Any) -> bool:
        """Record one telemetry payload; a bad one is counted and reported, never raised."""
        try:
            telemetry = Telemetry.from_payload(message)
        except PayloadError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            return False
        payload = telemetry.to_payload()
        self.received += 1
        self.latest[telemetry.ven_id] = payload
        series = self.history.setdefault(telemetry.ven_id, deque(maxlen=self.history_len))
        series.append(payload)
        return True

    def series(self, ven_id: str) -> list[dict[str, Any]]:
        return list(self.history.get(ven_id, ()))

    def counters(self) -> dict[str, Any]:
        return {"telemetryReceived": self.received, "telemetryRejected": self.rejected,
                "lastError": self.last_error, "vensSeen": len(self.latest)}
