"""dr.vtn's own MQTT link (`commandLink`): commands to the broker, and acks, telemetry and status from it,
without a bus hop.

The link is the shared library's `dr_common.mqtt.BridgeCore` in `vtn` mode, the same one dr.mqtt runs, so it
keeps dr.mqtt's guarantees: QoS 1, a persistent session, a SQLite outbox while the broker is away (a row is
deleted only once the broker acknowledged it), inbound validation and dedup, each item's venId bound to the
MQTT topic it came on. What it accepts goes to dr.vtn in the same pass of its pump (`deliver(kind, items)`,
already parsed: no second validation), and then to the `Echo`, which publishes it on the bus, coalesced, for
the historian and the status page: the VOLTTRON bus is off the dispatch and ack paths, not out of the record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
from gevent import monkey

_os_sleep = monkey.get_original("time", "sleep")  # sleeps the OS thread (gevent's would switch greenlets)

from dr_common import topics
from dr_common.batches import compact_batch
from dr_common.mqtt.config import BridgeConfig
from dr_common.mqtt.core import BridgeCore, BusPort
from dr_common.mqtt.inbound import Accepted
from dr_common.rejects import RateLimitedLog

_log = logging.getLogger(__name__)

KIND_OF_TOPIC = {topics.BUS_ACK_BATCH: "ack", topics.BUS_TELEMETRY_BATCH: "telemetry",
                 topics.BUS_STATUS_BATCH: "status"}
ECHO_MAX_ITEMS = 200_000     # items waiting for the bus at most; beyond, the oldest are dropped and counted
ECHO_MESSAGE_ITEMS = 5_000   # items per bus message at most
HOLDS_MAX = 3                # turns the echo may be put off in a row while a fan-out is on its way
RELEASE_YIELD_S = 0.001      # the event loop's pause after releasing a held round (see CommandLink.release)

Deliver = Callable[[str, list[Any]], None]


class Echo:
    """Publishes what the link carried on the bus, coalesced: every `interval_s`, one message per topic (and
    per ECHO_MESSAGE_ITEMS items). At most ECHO_MAX_ITEMS items wait; the oldest beyond are dropped and
    counted. Counts: echoed, dropped, failed."""

    def __init__(self, publish: Callable[[str, Any], None], interval_s: float,
                 max_items: int = ECHO_MAX_ITEMS) -> None:
        self._publish = publish
        self.interval_s = interval_s
        self.hold: Callable[[], bool] | None = None   # True while a fan-out is on its way: the echo waits
        self._held = 0
        self.max_items = max_items
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._size = 0
        self.counters: Counter[str] = Counter()
        self._greenlet: gevent.Greenlet | None = None
        self._errors = RateLimitedLog(_log, 60.0)

    def add(self, topic: str, items: list[dict[str, Any]]) -> None:
        """Queue `items` for `topic` (commands for dr/sent/cmd, items for dr/batch/...)."""
        queue = self._pending.setdefault(topic, [])
        queue.extend(items)
        self._size += len(items)
        if self._size > self.max_items:
            self._trim()

    def _trim(self) -> None:
        excess = self._size - self.max_items
        for queue in self._pending.values():
            cut = min(excess, len(queue))
            del queue[:cut]
            excess -= cut
            self._size -= cut
            self.counters["dropped"] += cut
            if excess <= 0:
                break

    def start(self) -> None:
        """Publish every `interval_s` from a greenlet."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the greenlet and publish what waits."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self.flush()

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            if self.hold is not None and self._held < HOLDS_MAX and self.hold():
                self._held += 1   # put off while commands are on their way, at most HOLDS_MAX turns in a row
                continue
            self._held = 0
            self.flush()

    def flush(self) -> None:
        """Publish what waits, topic by topic; a failed publish is counted and logged, never retried."""
        pending, self._pending, self._size = self._pending, {}, 0
        for topic, items in pending.items():
            for start in range(0, len(items), ECHO_MESSAGE_ITEMS):
                chunk = items[start:start + ECHO_MESSAGE_ITEMS]
                message = (compact_batch(chunk, "commands") if topic == topics.BUS_CMD_SENT
                           else {"items": chunk})
                try:
                    self._publish(topic, message)
                    self.counters["echoed"] += len(chunk)
                except Exception as exc:  # the record is best effort; dispatch and acks do not depend on it
                    self.counters["failed"] += len(chunk)
                    self._errors.error(topic, "publishing %d item(s) on %s failed: %s: %s", len(chunk), topic,
                                       exc.__class__.__name__, str(exc)[:200])

    def summary(self) -> dict[str, int]:
        """Counts and what waits."""
        return {"echoed": self.counters["echoed"], "dropped": self.counters["dropped"],
                "failed": self.counters["failed"], "waiting": self._size}


class CommandLink:
    """The link, its echo, and where accepted items go (`attach(deliver)` before `start`)."""

    def __init__(self, config: BridgeConfig, bus: BusPort, echo: Echo, base_dir: str,
                 core_factory: Callable[..., BridgeCore] = BridgeCore) -> None:
        self.echo = echo
        echo.hold = self.busy
        self._deliver: Deliver | None = None
        self._held = False
        # a non-batched inbound route (configured by hand) still publishes on the bus through `bus`
        self.core = core_factory(config, bus, base_dir=base_dir, local_sink=self._on_items)

    def attach(self, deliver: Deliver) -> None:
        """Where accepted acks, telemetry and status go: `deliver(kind, parsed items)`."""
        self._deliver = deliver

    def prepare(self) -> None:
        """Open the outbox and build the MQTT client (TLS context) without connecting; raises when they cannot be
        used (OutboxError, OSError, ssl.SSLError, ValueError)."""
        self.core.prepare()

    def discard(self) -> None:
        """Let go of what `prepare` built (a configuration that is not started after all)."""
        self.core.discard()

    def start(self) -> None:
        """Connect in the background and start the echo."""
        self.core.start()
        self.echo.start()

    def hold(self) -> bool:
        """Keep the commands `send_batch` hands over from the socket until `release` (a round prepared ahead of
        its start instant); False when the link cannot: not connected, a backlog in the outbox, already holding."""
        out = self.core.out
        if self._held or out.link is None or not out.connected or out.backlog:
            return False
        self._held = out.link.cork()
        return self._held

    def release(self) -> None:
        """Write what `hold` kept back (a few socket writes for a whole round). The event loop then lets go of
        the interpreter lock for RELEASE_YIELD_S, so paho's network thread writes at once instead of after up to
        the interpreter's 5 ms switch interval."""
        if self._held:
            self._held = False
            if self.core.out.link is not None and self.core.out.link.uncork():
                _os_sleep(RELEASE_YIELD_S)

    def busy(self) -> bool:
        """True while commands handed to the broker wait for its acknowledgement (a fan-out on its way)."""
        return self.core.out.unacknowledged() > 0

    def stop(self) -> None:
        """Stop the link (what the broker has not acknowledged stays in the outbox) and flush the echo."""
        self.release()
        self.core.stop()
        self.echo.stop()

    def send_batch(self, payloads: list[dict[str, Any]]) -> dict[str, int]:
        """Hand commands to the broker (or the outbox); the counts of `BridgeCore.send_batch`."""
        result = self.core.send_batch(payloads)
        self.echo.add(topics.BUS_CMD_SENT, payloads)
        return result

    def _on_items(self, topic: str, accepted: list[Accepted]) -> None:
        kind = KIND_OF_TOPIC.get(topic)
        try:
            if kind is not None and self._deliver is not None:
                self._deliver(kind, [a.item for a in accepted])
        finally:
            self.echo.add(topic, [a.payload for a in accepted])

    def status(self) -> dict[str, Any]:
        """The link's status (`dr_common.payloads.BridgeStatus`) with the echo's counts."""
        out = self.core.status()
        out["echo"] = self.echo.summary()
        counters = self.core.stats.counters
        out["localItems"], out["localFailed"] = counters["local_items"], counters["local_failed"]
        return out

    def health(self) -> dict[str, Any]:
        """GOOD when connected with every subscription granted (`BridgeCore.health`)."""
        return self.core.health()
