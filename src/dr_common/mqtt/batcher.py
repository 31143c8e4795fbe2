"""Coalesces inbound items into one bus message per topic: flushed when `max_items` are waiting or the
oldest has waited `max_delay_s`. Time is passed in, so the logic is deterministic."""

from __future__ import annotations

from typing import Any


class Batcher:
    """Items waiting per bus topic, with the time the oldest arrived."""

    def __init__(self, max_items: int, max_delay_s: float) -> None:
        self.max_items = max_items
        self.max_delay_s = max_delay_s
        self._items: dict[str, list[Any]] = {}
        self._since: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._items.values())

    def add(self, topic: str, item: Any, now: float) -> list[tuple[str, list[Any]]]:
        """Add one item; returns the batches that are full now (in order)."""
        items = self._items.setdefault(topic, [])
        if not items:
            self._since[topic] = now
        items.append(item)
        if len(items) >= self.max_items:
            return [self._take(topic)]
        return []

    def due(self, now: float) -> list[tuple[str, list[Any]]]:
        """The batches whose oldest item has waited long enough."""
        return [self._take(t) for t, since in list(self._since.items()) if now - since >= self.max_delay_s]

    def flush_all(self) -> list[tuple[str, list[Any]]]:
        """Every waiting batch, due or not (at stop)."""
        return [self._take(t) for t in list(self._since)]

    def next_deadline(self) -> float | None:
        """When the next batch falls due (None when nothing is waiting)."""
        if not self._since:
            return None
        return min(self._since.values()) + self.max_delay_s

    def _take(self, topic: str) -> tuple[str, list[Any]]:
        self._since.pop(topic, None)
        return topic, self._items.pop(topic, [])
