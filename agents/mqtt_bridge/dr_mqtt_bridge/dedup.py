"""Recognises repeats of inbound messages (QoS 1 redeliveries after a reconnect) within a time window."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class Deduplicator:
    """Remembers keys for `window_s` seconds, at most `max_entries` of them (oldest forgotten first).

    `window_s == 0` or `max_entries == 0` turns it off."""

    def __init__(self, window_s: float, max_entries: int) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def is_repeat(self, key: Hashable | None, now: float) -> bool:
        """True when `key` was seen within the window; otherwise records it and returns False."""
        if key is None or self.window_s <= 0 or self.max_entries <= 0:
            return False
        self._expire(now)
        if key in self._seen:
            return True
        self._seen[key] = now
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        seen = self._seen
        while seen:
            key, stamp = next(iter(seen.items()))
            if stamp >= horizon:
                break
            seen.popitem(last=False)
