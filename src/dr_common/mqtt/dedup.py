"""Recognises repeats of inbound messages (QoS 1 redeliveries after a reconnect) within a time window."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable


def compact_key(key: Hashable) -> bytes:
    """A 16-byte digest (BLAKE2b-128) of a key's repr: what the window remembers instead of the key itself. A key
    of an ack (kind, venId, correlationId, timestamp) held as its tuple of strings takes about 400 bytes, its
    digest about 150, and two keys collide with a probability of 2^-128."""
    return hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Deduplicator:
    """Remembers keys for `window_s` seconds, at most `max_entries` of them (oldest forgotten first), each as its
    `compact_key`.

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
        key = compact_key(key)
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
