"""Thread-safe hand-off from the link's threads to the agent's gevent loop, measured.

`put` may be called from any OS thread: the item goes into a `collections.deque` (append is atomic) and a
libev async watcher of the agent's hub is signalled; the hub then wakes the consumer greenlet waiting in
`take`. Each item is stamped on `put`, and `take` records how long it waited (`latency()`: p50, p99, max in
ms over the last `WINDOW` items)."""

from __future__ import annotations

import collections
import time
from typing import Any

import gevent
import gevent.event

WINDOW = 1000


class Handoff:
    """Build it in the hub's thread; `put` from anywhere; `take` from one greenlet."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[float, Any]] = collections.deque()
        self._signal = gevent.event.Event()
        self._async = gevent.get_hub().loop.async_()
        self._async.start(self._signal.set)
        self._open = True
        self._waits: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self.count = 0

    def put(self, item: Any) -> None:
        self._items.append((time.perf_counter(), item))
        if self._open:
            self._async.send()

    def take(self, timeout: float) -> list[Any]:
        """Every waiting item, oldest first; waits up to `timeout` s for one (blocks this greenlet only)."""
        if not self._items:
            self._signal.clear()
            if not self._items:
                self._signal.wait(timeout)
        out = []
        now = time.perf_counter()
        while self._items:
            stamped, item = self._items.popleft()
            self._waits.append(now - stamped)
            out.append(item)
        self.count += len(out)
        return out

    def latency(self) -> dict[str, float | int]:
        waits = sorted(self._waits)
        if not waits:
            return {"items": self.count}
        pick = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))] * 1000.0  # noqa: E731
        return {"items": self.count, "p50Ms": round(pick(0.5), 3), "p99Ms": round(pick(0.99), 3),
                "maxMs": round(waits[-1] * 1000.0, 3)}

    def close(self) -> None:
        self._open = False
        self._async.stop()
        self._async.close()
        self._signal.set()
