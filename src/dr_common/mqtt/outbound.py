"""Bus -> MQTT: routing bus messages to MQTT topics, sending them in order, and the store-and-forward outbox.

Outbound messages go straight to paho while connected and nothing waits in the outbox; otherwise they are
appended to the outbox, each with its class (telemetry, normal, high: restores and acks), and the drainer
sends what waited, in order, before anything newer. Outbox rows are deleted when the broker acknowledges them.
A large fan-out opens the `FanoutGate`, which holds inbound messages until the broker acknowledged its last
command (commands going out come first).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.lock

from dr_common.payloads import OP_RESTORE

from dr_common.batches import BATCH_SHARED_KEY, batch_items
from dr_common.schema import is_valid_id
from dr_common.mqtt import link as link_mod
from dr_common.mqtt.config import PRIORITY_HIGH, PRIORITY_TELEMETRY, BridgeConfig, OutboundRoute
from dr_common.mqtt.inbound import REASON_BAD_TOPIC
from dr_common.mqtt.outbox import PRIO_HIGH, PRIO_NORMAL, PRIO_TELEMETRY, OutboxError, SqliteOutbox
from dr_common.mqtt.stats import BridgeStats, RejectLog

_log = logging.getLogger(__name__)

REASON_BAD_BATCH = "bad_batch"
REASON_BAD_COMMAND = "bad_command"
REASON_UNENCODABLE = "unencodable"
REASON_OUTBOX_FULL = "outbox_full"
REASON_NO_ROUTE = "no_route"
REASON_TOPIC_REFUSED = "topic_refused"  # a character the broker refuses in topics (broker.refused_topic_chars)

MAX_INFLIGHT_ROWS = 20_000  # outbox rows handed to paho and not yet acknowledged (bounds paho's memory)
FANOUT_PRIORITY_S = 2.0     # the longest inbound messages wait for a fan-out in progress

_PRIO = {PRIORITY_TELEMETRY: PRIO_TELEMETRY, PRIORITY_HIGH: PRIO_HIGH}
_RESTORE_WORDS = {"restore", "stop", "end", "cancel"}

Msg = tuple[str, bytes, bool, int]  # topic, payload, retain, outbox class


def message_class(route: OutboundRoute, item: Any) -> int:
    """The outbox class of one outbound payload: a restore is always high, else the route's class."""
    if isinstance(item, dict):
        op = item.get("op")
        if isinstance(op, str) and (op == OP_RESTORE or op.lower() in _RESTORE_WORDS):
            return PRIO_HIGH
    return _PRIO.get(route.priority, PRIO_NORMAL)


class FanoutGate:
    """While a large fan-out is handed to paho (`done` cleared), and after it until the broker acknowledged its
    last message or FANOUT_PRIORITY_S passed, inbound messages are held."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.done = gevent.event.Event()
        self.done.set()
        self.mid: int | None = None
        self.until = 0.0

    def opened(self, mid: int) -> None:
        """A fan-out's last message has `mid`: hold inbound messages until it is acknowledged."""
        self.mid = mid
        self.until = self._clock() + FANOUT_PRIORITY_S

    def holding(self) -> bool:
        """True while inbound messages wait for the broker to acknowledge a large fan-out."""
        if self.mid is None:
            return False
        if self._clock() >= self.until:
            self.mid = None
            return False
        return True

    def remaining(self) -> float:
        """Seconds the current hold lasts at most."""
        return max(0.0, self.until - self._clock())

    def acknowledged(self, mid: int) -> None:
        """The broker acknowledged `mid`: the hold ends if it was the fan-out's last."""
        if mid == self.mid:
            self.mid = None

    def release(self) -> None:
        """End any hold (disconnect, stop)."""
        self.mid = None


class OutboundPath:
    """Bus messages and `send_batch` calls to MQTT, through paho or the outbox."""

    def __init__(self, config: BridgeConfig, stats: BridgeStats, rejects: RejectLog, gate: FanoutGate) -> None:
        self.config = config
        self.stats = stats
        self._rejects = rejects
        self.gate = gate
        self.connected = False
        self.outbox: SqliteOutbox | None = None
        self.link: link_mod.MqttLink | None = None
        self.running = False
        self._cursor = 0
        self.backlog = False
        self.inflight_rows: dict[int, int] = {}
        self._order_lock = gevent.lock.Semaphore()
        self.drain_wakeup = gevent.event.Event()
        refused = config.broker.refused_topic_chars
        self._refused_in = re.compile(f"[{re.escape(refused)}]").search if refused else None

    def bus_prefixes(self) -> list[str]:
        """The bus prefixes to subscribe to (deliveries are checked against the templates)."""
        return sorted({route.bus.bus_prefix() for route in self.config.outbound})

    def on_bus_message(self, topic: str, message: Any) -> dict[str, int]:
        """A bus message on a subscribed prefix: fan it out to MQTT according to the outbound routes."""
        result = _result()
        for route in self.config.outbound:
            ven_id = route.bus.match(topic)
            if ven_id is None:
                continue
            if route.items_key is not None:
                items = batch_items(message, route.items_key)
                if items is None:  # reported by _submit_items with the type that was found
                    items = message.get(route.items_key) if isinstance(message, dict) else None
                _merge(result, self._submit_items(route, items, topic))
            elif route.bus.has_ven_id and not is_valid_id(ven_id):
                self._rejects.refuse(REASON_BAD_TOPIC, topic, f"venId {ven_id[:80]!r} in the bus topic is not valid")
                result["rejected"] += 1
            else:
                _merge(result, self._submit_one(route, ven_id or self.config.ven_id or "", message, topic))
        return result

    def send_batch(self, commands: Any, shared: Any = None) -> dict[str, int] | None:
        """Many payloads through the first batch route (None when there is none)."""
        for route in self.config.outbound:
            if route.items_key is not None:
                if shared is not None:
                    commands = batch_items({BATCH_SHARED_KEY: shared, "items": commands}, "items")
                return self._submit_items(route, commands, "rpc:send_batch")
        self._rejects.refuse(REASON_NO_ROUTE, "rpc:send_batch", "this bridge has no batch route (mode ven?)")
        return None

    def _submit_items(self, route: OutboundRoute, items: Any, source: str) -> dict[str, int]:
        if not isinstance(items, list):
            self._rejects.refuse(REASON_BAD_BATCH, source,
                                 f"'{route.items_key}' must be a list, got {type(items).__name__}")
            return dict(_result(), rejected=1)
        msgs: list[Msg] = []
        rejected = 0
        for item in items:
            ven_id = item.get("venId") if isinstance(item, dict) else None
            if not is_valid_id(ven_id):
                rejected += 1
                self._rejects.refuse(REASON_BAD_COMMAND, source, f"item without a valid venId: {str(item)[:120]}")
                continue
            data = self._encode(item, source)
            if data is None:
                rejected += 1
                continue
            prio = message_class(route, item)
            for template in route.mqtt:
                msgs.append((template.format(ven_id), data, route.retain, prio))
        result = self.submit(msgs)
        result["rejected"] += rejected
        return result

    def _submit_one(self, route: OutboundRoute, ven_id: str, message: Any, source: str) -> dict[str, int]:
        data = self._encode(message, source)
        if data is None:
            return dict(_result(), rejected=1)
        prio = message_class(route, message)
        return self.submit([(t.format(ven_id or None), data, route.retain, prio) for t in route.mqtt])

    def _encode(self, message: Any, source: str) -> bytes | None:
        try:
            return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            self._rejects.refuse(REASON_UNENCODABLE, source, str(exc))
            return None

    def submit(self, msgs: list[Msg]) -> dict[str, int]:
        """Send in order: straight to paho when connected and nothing is waiting, else to the outbox."""
        result = _result()
        if self._refused_in is not None:
            msgs = self._without_refused_topics(msgs, self._refused_in, result)
        if not msgs:
            return result
        link, outbox = self.link, self.outbox
        if link is None or outbox is None:
            raise RuntimeError("the bridge is not started")
        with self._order_lock:
            sent = self._publish_direct(link, msgs) if self.connected and not self.backlog else 0
            rest = msgs[sent:]
            if rest:
                self._queue(outbox, rest, result)
            result["sent"] = sent
        self.stats.count("out_direct", sent)
        self.stats.count("out_queued", result["queued"])
        return result

    def _without_refused_topics(self, msgs: list[Msg], search: Callable[[str], object],
                                result: dict[str, int]) -> list[Msg]:
        """Drops what the broker would answer by closing the connection (a resend after reconnect would close it
        again, and hold up everything queued behind it)."""
        keep = [m for m in msgs if not search(m[0])]
        if len(keep) < len(msgs):
            bad = next(m[0] for m in msgs if search(m[0]))
            self._rejects.refuse(REASON_TOPIC_REFUSED, bad, "the topic has a character of "
                                 f"broker.refused_topic_chars {self.config.broker.refused_topic_chars!r}",
                                 len(msgs) - len(keep))
            result["rejected"] += len(msgs) - len(keep)
        return keep

    def _publish_direct(self, link: link_mod.MqttLink, msgs: list[Msg]) -> int:
        qos, chunk = self.config.qos, self.config.publish_chunk
        publish = link.publish
        large = len(msgs) > chunk
        sent = mid = 0
        if large:
            self.gate.done.clear()
        try:
            for start in range(0, len(msgs), chunk):
                with link.coalesced():
                    for topic, data, retain, _prio in msgs[start:start + chunk]:
                        _rc, mid = publish(topic, data, qos, retain)
                        sent += 1
                if sent < len(msgs):
                    gevent.sleep(0)
                    if not self.connected:
                        break
        finally:
            if large:
                if sent and qos > 0:
                    self.gate.opened(mid)
                self.gate.done.set()
        return sent

    def _queue(self, outbox: SqliteOutbox, rest: list[Msg], result: dict[str, int]) -> None:
        qos = self.config.qos
        try:
            put = outbox.put_many((t, d, qos, r, p) for t, d, r, p in rest)
        except OutboxError as exc:
            _log.error("%s", exc)
            put = None
        queued = put.stored if put else 0
        if queued:
            self.backlog = True
            self.drain_wakeup.set()
        if put and put.shed:
            self.stats.count("outbox_shed", put.shed)
            self._rejects.note("outbox_shed", "outbox full: %d older lower-priority message(s) pushed out to make "
                               "room for newer restores, acks or commands", put.shed)
        refused = len(rest) - queued
        if refused:
            self._rejects.refuse(REASON_OUTBOX_FULL, rest[-1][0],
                                 f"{refused} message(s) refused: the outbox holds {outbox.depth} "
                                 f"of at most {outbox.max_messages}", n=refused)
        result["queued"] = queued
        result["refused"] = refused

    def drainer(self) -> None:
        """Greenlet: after each wake-up, send what waits in the outbox."""
        while True:
            self.drain_wakeup.wait()
            self.drain_wakeup.clear()
            try:
                self.drain()
            except OutboxError as exc:
                _log.error("draining the outbox failed: %s", exc)
                gevent.sleep(1.0)
                self.drain_wakeup.set()

    def drain(self) -> None:
        """Send the outbox's rows in order while connected, at most MAX_INFLIGHT_ROWS unacknowledged."""
        outbox, link = self.outbox, self.link
        if outbox is None or link is None:
            return
        outbox.expire()
        qos = self.config.qos
        drained = 0
        while self.running and self.connected and self.backlog:
            if len(self.inflight_rows) >= MAX_INFLIGHT_ROWS:
                gevent.sleep(0.02)
                continue
            with self._order_lock:
                if not self.connected:
                    break
                rows = outbox.read_after(self._cursor, self.config.publish_chunk)
                if not rows:
                    self.backlog = False
                    break
                no_ack = []
                for row in rows:
                    _rc, mid = link.publish(row.topic, row.payload, row.qos, row.retain)
                    self._cursor = row.id
                    if row.qos == 0 or qos == 0:
                        no_ack.append(row.id)
                    else:
                        self.inflight_rows[mid] = row.id
                if no_ack:
                    outbox.delete(no_ack)
                self.stats.count("out_drained", len(rows))
                drained += len(rows)
            gevent.sleep(0)
        if drained and not self.backlog:
            _log.info("outbox drained (%d sent); %d await the broker's acknowledgement", drained,
                      len(self.inflight_rows))

    def on_puback(self, mid: int, acked: list[int]) -> None:
        """The broker acknowledged `mid`: an outbox row it carried goes into `acked` (deleted by the caller)."""
        self.stats.count("out_acked")
        self.gate.acknowledged(mid)
        row = self.inflight_rows.pop(mid, None)
        if row is not None:
            acked.append(row)

    def unacknowledged(self) -> int:
        """Messages handed to paho (QoS > 0) whose PUBACK has not been seen yet."""
        if self.config.qos == 0:
            return 0
        c = self.stats.counters
        return max(0, c["out_direct"] + c["out_drained"] + c["births"] - c["out_acked"])


def _result() -> dict[str, int]:
    return {"sent": 0, "queued": 0, "refused": 0, "rejected": 0}


def _merge(into: dict[str, int], other: dict[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
