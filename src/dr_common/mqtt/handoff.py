"""Thread-safe hand-off from paho's network thread to greenlets on the gevent hub.

paho calls its callbacks in its own OS thread; nothing there may touch gevent objects of the hub's thread or
the VOLTTRON connection. `HubInbox.put` may be called from any thread: it appends to a `queue.SimpleQueue` and
pokes a libev async watcher of the hub, whose callback sets a gevent Event; the consumer greenlet then drains
the queue in one go. Every item carries the time it was put, so the hand-off latency can be measured.
"""

from __future__ import annotations

import queue
import time
from typing import Any

import gevent
import gevent.event


class HubInbox:
    """Create it in the hub's thread (the consumer's); `put` from any thread; `get_all` from one greenlet."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[float, Any]] = queue.SimpleQueue()
        self._hub = gevent.get_hub()
        self._ready = gevent.event.Event()
        self._watcher = self._hub.loop.async_()
        self._watcher.start(self._ready.set)
        self._closed = False

    def put(self, item: Any) -> None:
        """Thread-safe; never blocks."""
        self._queue.put((time.perf_counter(), item))
        if not self._closed:
            self._watcher.send()

    def get_all(self, timeout: float | None = None) -> list[tuple[float, Any]]:
        """Everything waiting, oldest first, as (time put, item); waits up to `timeout` s for the first item
        ([] when it expires). Blocks only the calling greenlet."""
        items = self._drain()
        if items:
            return items
        self._ready.clear()
        items = self._drain()  # an item may have arrived between the first drain and clear()
        if items:
            return items
        self._ready.wait(timeout)
        return self._drain()

    def _drain(self) -> list[tuple[float, Any]]:
        out = []
        get = self._queue.get_nowait
        try:
            while True:
                out.append(get())
        except queue.Empty:
            pass
        return out

    def close(self) -> None:
        """Stop the watcher; a consumer waiting in get_all returns."""
        self._closed = True
        self._watcher.stop()
        self._watcher.close()
        self._ready.set()
