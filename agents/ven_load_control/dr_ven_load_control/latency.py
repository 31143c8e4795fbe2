"""A bounded log of latencies (ms) with percentile summaries."""

from __future__ import annotations

import math
from collections import deque


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty list (pct in [0, 100])."""
    if not values:
        raise ValueError("percentile of an empty list")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LatencyLog:
    """The last `keep` latencies (ms) and how many were recorded in all."""

    def __init__(self, keep: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=keep)
        self.count = 0

    def add(self, ms: float) -> None:
        """Record one latency (ms)."""
        self._values.append(ms)
        self.count += 1

    def values(self) -> list[float]:
        """The latencies kept."""
        return list(self._values)

    def summary(self) -> dict[str, float | int | None]:
        """count, p50, p99 and max of the latencies kept."""
        values = list(self._values)
        if not values:
            return {"count": 0, "p50": None, "p99": None, "max": None}
        return {"count": self.count, "p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3),
                "max": round(max(values), 3)}
