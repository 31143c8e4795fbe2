"""Counting refused input and logging it without flooding the log.

Every inbound path (MQTT, bus, REST, OpenADR) refuses bad input with an error naming the field, counts the
refusal by reason, and logs at most one line per key per interval (a summary of how many were suppressed
goes with the next line that is let through). Both the counters and the per-key state are bounded.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

REASONS_MAX = 256      # distinct reasons counted; the rest are counted under "other"
KEYS_MAX = 4096        # distinct log keys remembered


class RejectCounter:
    """Counts of refused messages by reason (bounded to REASONS_MAX reasons), with a total."""

    def __init__(self) -> None:
        self.total = 0
        self._by_reason: dict[str, int] = {}

    def count(self, reason: str) -> None:
        self.total += 1
        key = reason if reason in self._by_reason or len(self._by_reason) < REASONS_MAX else "other"
        self._by_reason[key] = self._by_reason.get(key, 0) + 1

    def snapshot(self) -> dict[str, object]:
        return {"total": self.total, "byReason": dict(self._by_reason)}


class RateLimitedLog:
    """Logs at most one line per key every `interval_s` seconds; what was suppressed is counted and said
    with the next line for that key. Keys are kept in a bounded LRU map."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = KEYS_MAX) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._max = max_keys
        self._seen: OrderedDict[str, list[float]] = OrderedDict()  # key -> [last logged at, suppressed]

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` under `key` unless one was logged less than `interval_s` ago; True when logged."""
        now = self._clock()
        state = self._seen.get(key)
        if state is not None and now - state[0] < self._interval:
            state[1] += 1
            self._seen.move_to_end(key)
            return False
        suppressed = int(state[1]) if state is not None else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        if suppressed:
            self._log.log(level, msg + " (%d more like it suppressed)", *args, suppressed)
        else:
            self._log.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)
