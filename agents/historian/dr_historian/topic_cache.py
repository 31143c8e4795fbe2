"""The store's bounded cache of topic ids, names and metadata (least recently used entries leave first).

Made-up topics (a VEN id nobody registered, a device that sent once) cost one database row each, never
unbounded memory: a topic missing from the cache is read from the `topics` table again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_TOPICS = 50_000


@dataclass(frozen=True)
class TopicEntry:
    """One known topic."""

    topic_id: int
    name: str
    meta: dict[str, Any] = field(default_factory=dict)


class TopicCache:
    """topic key (lower-case name) -> TopicEntry, at most `max_entries`; thread-safe."""

    def __init__(self, max_entries: int = DEFAULT_MAX_TOPICS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, TopicEntry] = OrderedDict()

    def get(self, key: str) -> TopicEntry | None:
        """The entry of a topic key, or None when it is not cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: TopicEntry) -> None:
        """Remember a topic (evicting the least recently used beyond max_entries)."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
