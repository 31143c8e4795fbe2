"""Counters and a latency reservoir for the bridge's status."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from dr_common.rejects import RateLimitedLog

_log = logging.getLogger("dr_common.mqtt")

REJECT_LOG_INTERVAL_S = 60.0


class LatencyReservoir:
    """Keeps a uniform sample of at most `size` values (reservoir sampling) plus count and max."""

    def __init__(self, size: int = 4096, seed: int | None = None) -> None:
        self.size = size
        self.count = 0
        self.max = 0.0
        self._sample: list[float] = []
        self._rand = random.Random(seed)

    def add(self, value: float) -> None:
        """Record one value."""
        self.count += 1
        if value > self.max:
            self.max = value
        if len(self._sample) < self.size:
            self._sample.append(value)
        else:
            j = self._rand.randrange(self.count)
            if j < self.size:
                self._sample[j] = value

    def summary_ms(self) -> dict[str, Any]:
        """count, p50, p99 and max in milliseconds (None when nothing was measured)."""
        if not self._sample:
            return {"count": 0, "p50Ms": None, "p99Ms": None, "maxMs": None}
        ordered = sorted(self._sample)
        return {"count": self.count, "p50Ms": round(percentile(ordered, 50) * 1000, 3),
                "p99Ms": round(percentile(ordered, 99) * 1000, 3), "maxMs": round(self.max * 1000, 3)}


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    if not ordered:
        raise ValueError("percentile of an empty list")
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


class BridgeStats:
    """Counters, rejects by reason, and the hand-off latency reservoir."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.handoff = LatencyReservoir()

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        self.counters[name] += n

    def reject(self, reason: str, n: int = 1) -> None:
        """Count `n` refused messages under `reason`."""
        self.rejects[reason] += n


class RejectLog:
    """Counts refused messages by reason in `stats` and logs them at most once per reason per interval
    (`dr_common.rejects.RateLimitedLog`: the next line says how many were suppressed)."""

    def __init__(self, stats: BridgeStats, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = REJECT_LOG_INTERVAL_S) -> None:
        self._stats = stats
        self._log = RateLimitedLog(_log, interval_s=interval_s, clock=clock)

    def refuse(self, reason: str, topic: str, detail: str, n: int = 1) -> None:
        """Count `n` messages refused for `reason` and log one line (rate-limited per reason)."""
        self._stats.reject(reason, n)
        self._log.warning(reason, "dropped %d message(s) (%s) on %s: %s", n, reason, topic[:200], detail[:300])

    def note(self, key: str, msg: str, *args: object) -> None:
        """Log a warning that is not a refusal, rate-limited per key."""
        self._log.warning(key, msg, *args)
