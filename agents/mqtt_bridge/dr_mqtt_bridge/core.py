"""The bridge itself, without the VOLTTRON platform: bus messages in, MQTT out, and back.

It runs on the gevent hub (the agent's thread) and talks to the bus only through a `BusPort`, so it runs the
same inside the agent and in tests. Greenlets:
  * pump: takes paho's events off the `HubInbox` (connection changes, inbound messages, PUBACKs), validates
    and dedups inbound payloads, coalesces them into batches;
  * bus writer: publishes batches and per-VEN messages on the bus, one at a time and in order;
  * drainer: after a reconnect, sends what waited in the SQLite outbox, in order, before anything newer.
Outbound messages go straight to paho while connected and nothing waits in the outbox; otherwise they are
appended to the outbox. Outbox rows are deleted when the broker acknowledges them (PUBACK).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock
import gevent.queue

from dr_common.payloads import BATCH_SHARED_KEY, VEN_ID_RE, batch_items
from dr_mqtt_bridge import link as link_mod
from dr_mqtt_bridge.batcher import Batcher
from dr_mqtt_bridge.config import MODE_VEN, BridgeConfig, InboundRoute, OutboundRoute
from dr_mqtt_bridge.dedup import Deduplicator
from dr_mqtt_bridge.handoff import HubInbox
from dr_mqtt_bridge.inbound import REASON_BAD_TOPIC, Rejected, validate
from dr_mqtt_bridge.outbox import OutboxError, SqliteOutbox
from dr_mqtt_bridge.stats import BridgeStats

_log = logging.getLogger(__name__)

REASON_BAD_BATCH = "bad_batch"
REASON_BAD_COMMAND = "bad_command"
REASON_UNENCODABLE = "unencodable"
REASON_OUTBOX_FULL = "outbox_full"
REASON_NO_ROUTE = "no_route"
REASON_INTERNAL = "internal_error"

MAX_INFLIGHT_ROWS = 20_000  # outbox rows handed to paho and not yet acknowledged (bounds paho's memory)
PUMP_YIELD_EVERY = 200      # inbound events processed between two yields to other greenlets
BUS_ATTEMPTS = 3
FANOUT_PRIORITY_S = 2.0     # the longest inbound messages wait for a fan-out in progress
LOG_WINDOW_S = 10.0
LOG_PER_WINDOW = 50


class BusPort(Protocol):
    """Where the bridge publishes on the bus. `publish` blocks the calling greenlet and raises on failure."""

    def publish(self, topic: str, message: Any) -> None: ...


class BridgeCore:
    def __init__(self, config: BridgeConfig, bus: BusPort, base_dir: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 link_factory: Callable[..., link_mod.MqttLink] = link_mod.MqttLink) -> None:
        self.config = config
        self.bus = bus
        self._link_factory = link_factory  # MqttLink's signature; tests give a link without a broker
        self.stats = BridgeStats()
        self._clock = clock
        self._base_dir = base_dir or os.getcwd()
        self._dedup = Deduplicator(config.dedup_window_s, config.dedup_max_entries)
        self._batcher = Batcher(config.batch_max_items, config.batch_max_delay_s)
        self._connected = False
        self._session_present: bool | None = None
        self._last_error: str | None = None
        self._outbox: SqliteOutbox | None = None
        self._link: link_mod.MqttLink | None = None
        self._inbox: HubInbox | None = None
        self._cursor = 0
        self._backlog = False
        self._inflight_rows: dict[int, int] = {}
        self._order_lock = gevent.lock.Semaphore()
        self._bus_queue: gevent.queue.Queue = gevent.queue.Queue()
        self._drain_wakeup = gevent.event.Event()
        self._fanout_done = gevent.event.Event()  # cleared while a large fan-out is handed to paho
        self._fanout_done.set()
        # After a large fan-out, inbound messages are held (in order) until the broker has acknowledged its
        # last message or FANOUT_PRIORITY_S has passed: the commands reach the VENs before the CPU goes to
        # validating and batching the acks they start coming back with.
        self._fanout_mid: int | None = None
        self._fanout_until = 0.0
        self._held: list[tuple[str, bytes]] = []
        self._greenlets: list[gevent.Greenlet] = []
        self._log_window = 0.0
        self._logged = 0
        self._suppressed = 0
        self._running = False
        self._last_fanout: dict[str, Any] | None = None
        self._subs_refused = False

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def store_path(self) -> str:
        path = self.config.store_path
        return path if os.path.isabs(path) else os.path.join(self._base_dir, path)

    def start(self) -> None:
        """Open the outbox and connect (in the background). Raises OutboxError when the store cannot open."""
        cfg = self.config
        self._outbox = SqliteOutbox(self.store_path, cfg.store_max_messages)
        self._backlog = self._outbox.depth > 0
        self._inbox = HubInbox()
        birth = None
        if cfg.status_topic is not None and cfg.ven_id:
            birth = link_mod.Birth(topic=cfg.status_topic.text, online=link_mod.status_payload(cfg.ven_id, True),
                                   offline=link_mod.status_payload(cfg.ven_id, False), qos=max(cfg.qos, 1),
                                   retain=cfg.status_retain)
        subs = [(route.mqtt.mqtt_filter(), cfg.qos) for route in cfg.inbound]
        self._link = self._link_factory(cfg.broker, self._inbox, subs, birth, log_packets=cfg.log_mqtt_packets)
        self._running = True
        self._greenlets = [gevent.spawn(self._pump), gevent.spawn(self._bus_writer), gevent.spawn(self._drainer)]
        self._link.start()
        _log.info("MQTT bridge (%s mode%s) connecting to %s:%s as %s; outbox %s holds %d", cfg.mode,
                  f", venId {cfg.ven_id}" if cfg.ven_id else "", cfg.broker.host, cfg.broker.port,
                  cfg.broker.client_id, self.store_path, self._outbox.depth)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect, publish what is batched, close the outbox. What is not yet acknowledged stays queued."""
        if not self._running:
            return
        deadline = time.monotonic() + timeout
        # messages handed to paho but not yet acknowledged live only in paho's memory: let them finish
        while self._connected and self._unacknowledged() > 0 and time.monotonic() < deadline:
            gevent.sleep(0.02)
        if self._unacknowledged() > 0:
            _log.warning("stopping with %d message(s) not acknowledged by the broker; those sent from the outbox "
                         "stay queued there", self._unacknowledged())
        self._running = False
        if self._link is not None:
            # loop_stop() joins paho's OS thread: do it in the hub's thread pool, not on the hub
            gevent.get_hub().threadpool.apply(self._link.stop)
        held, self._held, self._fanout_mid = self._held, [], None
        for topic, payload in held:
            self._handle_safely((link_mod.EV_MESSAGE, topic, payload), [])
        for topic, items in self._batcher.flush_all():
            self._bus_queue.put((topic, {"items": items}))
        deadline = time.monotonic() + timeout
        while not self._bus_queue.empty() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        gevent.killall(self._greenlets, timeout=timeout)
        self._greenlets = []
        if self._inbox is not None:
            self._inbox.close()
        if self._outbox is not None:
            self._outbox.close()
        self._connected = False

    def _unacknowledged(self) -> int:
        """Messages handed to paho (QoS > 0) whose PUBACK the pump has not seen yet."""
        if self.config.qos == 0:
            return 0
        c = self.stats.counters
        return max(0, c["out_direct"] + c["out_drained"] + c["births"] - c["out_acked"])

    # --- bus -> MQTT -----------------------------------------------------------------------------
    def bus_prefixes(self) -> list[str]:
        """The bus prefixes to subscribe to (deliveries are checked against the templates)."""
        return sorted({route.bus.bus_prefix() for route in self.config.outbound})

    def on_bus_message(self, topic: str, message: Any) -> dict[str, int]:
        """A bus message on a subscribed prefix: fan it out to MQTT according to the outbound routes."""
        received = time.monotonic()
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
            elif route.bus.has_ven_id and not VEN_ID_RE.match(ven_id):
                self._reject(REASON_BAD_TOPIC, topic, f"venId {ven_id!r} in the bus topic is not valid")
                result["rejected"] += 1
            else:
                _merge(result, self._submit_one(route, ven_id or self.config.ven_id or "", message, topic))
        self._note_fanout(topic, result, received)
        return result

    def _note_fanout(self, source: str, result: dict[str, int], received: float) -> None:
        self._last_fanout = {"topic": source, "messages": result["sent"] + result["queued"],
                             "receivedMonotonic": received, "ms": round((time.monotonic() - received) * 1000, 3)}

    def send_batch(self, commands: Any, shared: Any = None) -> dict[str, int]:
        """The `send_batch` RPC: many payloads, each with its venId, through the first batch route; `shared`
        holds fields common to every payload (as `compact_batch` makes them), laid under each one."""
        received = time.monotonic()
        for route in self.config.outbound:
            if route.items_key is not None:
                if shared is not None:
                    commands = batch_items({BATCH_SHARED_KEY: shared, "items": commands}, "items")
                result = self._submit_items(route, commands, "rpc:send_batch")
                self._note_fanout("rpc:send_batch", result, received)
                return result
        self._reject(REASON_NO_ROUTE, "rpc:send_batch", "this bridge has no batch route (mode ven?)")
        return dict(_result(), rejected=len(commands) if isinstance(commands, list) else 1)

    def _submit_items(self, route: OutboundRoute, items: Any, source: str) -> dict[str, int]:
        if not isinstance(items, list):
            self._reject(REASON_BAD_BATCH, source, f"'{route.items_key}' must be a list, got {type(items).__name__}")
            return dict(_result(), rejected=1)
        msgs: list[tuple[str, bytes, bool]] = []
        rejected = 0
        for item in items:
            ven_id = item.get("venId") if isinstance(item, dict) else None
            if not isinstance(ven_id, str) or not VEN_ID_RE.match(ven_id):
                rejected += 1
                self._reject(REASON_BAD_COMMAND, source, f"item without a valid venId: {str(item)[:120]}")
                continue
            data = self._encode(item, source)
            if data is None:
                rejected += 1
                continue
            for template in route.mqtt:
                msgs.append((template.format(ven_id), data, route.retain))
        result = self._submit(msgs)
        result["rejected"] += rejected
        return result

    def _submit_one(self, route: OutboundRoute, ven_id: str, message: Any, source: str) -> dict[str, int]:
        data = self._encode(message, source)
        if data is None:
            return dict(_result(), rejected=1)
        return self._submit([(t.format(ven_id or None), data, route.retain) for t in route.mqtt])

    def _encode(self, message: Any, source: str) -> bytes | None:
        try:
            return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            self._reject(REASON_UNENCODABLE, source, str(exc))
            return None

    def _submit(self, msgs: list[tuple[str, bytes, bool]]) -> dict[str, int]:
        """Send in order: straight to paho when connected and nothing is waiting, else to the outbox."""
        result = _result()
        if not msgs:
            return result
        qos = self.config.qos
        chunk = self.config.publish_chunk
        link = self._link
        if link is None or self._outbox is None:
            raise RuntimeError("the bridge is not started")
        with self._order_lock:
            sent = 0
            if self._connected and not self._backlog:
                publish = link.publish
                large = len(msgs) > chunk
                mid = 0
                if large:
                    self._fanout_done.clear()
                try:
                    for start in range(0, len(msgs), chunk):
                        with link.coalesced():
                            for topic, data, retain in msgs[start:start + chunk]:
                                _rc, mid = publish(topic, data, qos, retain)
                                sent += 1
                        if sent < len(msgs):
                            gevent.sleep(0)
                            if not self._connected:
                                break
                finally:
                    if large:
                        if sent and qos > 0:
                            self._fanout_mid = mid
                            self._fanout_until = time.monotonic() + FANOUT_PRIORITY_S
                        self._fanout_done.set()
            rest = msgs[sent:]
            if rest:
                try:
                    queued = self._outbox.put_many((t, d, qos, r) for t, d, r in rest)
                except OutboxError as exc:
                    _log.error("%s", exc)
                    queued = 0
                if queued:
                    self._backlog = True
                    self._drain_wakeup.set()
                refused = len(rest) - queued
                if refused:
                    self._reject(REASON_OUTBOX_FULL, rest[queued][0],
                                 f"{refused} message(s) refused: the outbox holds {self._outbox.depth} "
                                 f"of at most {self._outbox.max_messages}", n=refused)
                result["queued"] = queued
                result["refused"] = refused
            result["sent"] = sent
        self.stats.count("out_direct", sent)
        self.stats.count("out_queued", result["queued"])
        return result

    def _drainer(self) -> None:
        while True:
            self._drain_wakeup.wait()
            self._drain_wakeup.clear()
            try:
                self._drain()
            except OutboxError as exc:
                _log.error("draining the outbox failed: %s", exc)
                gevent.sleep(1.0)
                self._drain_wakeup.set()

    def _drain(self) -> None:
        assert self._outbox is not None and self._link is not None
        qos = self.config.qos
        drained = 0
        while self._running and self._connected and self._backlog:
            if len(self._inflight_rows) >= MAX_INFLIGHT_ROWS:
                gevent.sleep(0.02)
                continue
            with self._order_lock:
                if not self._connected:
                    break
                rows = self._outbox.read_after(self._cursor, self.config.publish_chunk)
                if not rows:
                    self._backlog = False
                    break
                no_ack = []
                for row in rows:
                    _rc, mid = self._link.publish(row.topic, row.payload, row.qos, row.retain)
                    self._cursor = row.id
                    if row.qos == 0 or qos == 0:
                        no_ack.append(row.id)
                    else:
                        self._inflight_rows[mid] = row.id
                if no_ack:
                    self._outbox.delete(no_ack)
                self.stats.count("out_drained", len(rows))
                drained += len(rows)
            gevent.sleep(0)
        if drained and not self._backlog:
            _log.info("outbox drained (%d sent); %d await the broker's acknowledgement", drained,
                      len(self._inflight_rows))

    # --- MQTT -> bus -----------------------------------------------------------------------------
    def _holding(self) -> bool:
        """True while inbound messages wait for the broker to acknowledge a large fan-out."""
        if self._fanout_mid is None:
            return False
        if time.monotonic() >= self._fanout_until:
            self._fanout_mid = None
            return False
        return True

    def _pump(self) -> None:
        assert self._inbox is not None
        while True:
            deadline = self._batcher.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            if self._holding():
                hold = max(0.0, self._fanout_until - time.monotonic())
                timeout = hold if timeout is None else min(timeout, hold)
            events = _flatten(self._inbox.get_all(timeout))
            # commands going out come first: inbound messages wait while a fan-out is handed to paho, and are
            # held after it until the broker has acknowledged it (PUBACKs and connection events go on)
            self._fanout_done.wait(FANOUT_PRIORITY_S)
            now_pc = time.perf_counter()
            acked: list[int] = []
            held = self._held
            for n, (put_at, event) in enumerate(events, 1):
                self.stats.handoff.add(now_pc - put_at)
                if event[0] == link_mod.EV_MESSAGE and (held or self._holding()):
                    held.append((event[1], event[2]))
                    continue
                self._handle_safely(event, acked)
                if n % PUMP_YIELD_EVERY == 0:
                    gevent.sleep(0)
                    now_pc = time.perf_counter()
            if held and not self._holding():
                self._held = []
                for n, (topic, payload) in enumerate(held, 1):
                    self._handle_safely((link_mod.EV_MESSAGE, topic, payload), acked)
                    if n % PUMP_YIELD_EVERY == 0:
                        gevent.sleep(0)
            if acked and self._outbox is not None:
                try:
                    self._outbox.delete(acked)
                except OutboxError as exc:
                    _log.error("%s", exc)
            for topic, items in self._batcher.due(self._clock()):
                self._bus_queue.put((topic, {"items": items}))

    def _handle_safely(self, event: tuple[Any, ...], acked: list[int]) -> None:
        try:
            self._handle(event, acked)
        except Exception:  # one bad event must not stop the bridge
            self.stats.reject(REASON_INTERNAL)
            _log.exception("handling MQTT event %s failed", event[0])

    def _handle(self, event: tuple[Any, ...], acked: list[int]) -> None:
        kind = event[0]
        if kind == link_mod.EV_MESSAGE:
            self._on_mqtt_message(event[1], event[2])
        elif kind == link_mod.EV_PUBACK:
            self.stats.count("out_acked")
            if event[1] == self._fanout_mid:
                self._fanout_mid = None
            row = self._inflight_rows.pop(event[1], None)
            if row is not None:
                acked.append(row)
        elif kind == link_mod.EV_CONNECTED:
            if self.config.status_topic is not None and self.config.ven_id:
                self.stats.count("births")
            self._connected = True
            self._subs_refused = False
            self._session_present = event[1]
            self._last_error = None
            self.stats.count("connects")
            _log.info("connected to %s:%s (session present: %s); outbox holds %d", self.config.broker.host,
                      self.config.broker.port, event[1], self._outbox.depth if self._outbox else 0)
            self._drain_wakeup.set()
        elif kind == link_mod.EV_DISCONNECTED:
            if self._connected:
                _log.warning("disconnected from %s:%s: %s", self.config.broker.host, self.config.broker.port,
                             event[1])
            self._connected = False
            self._fanout_mid = None
            self._last_error = f"disconnected: {event[1]}"
            self.stats.count("disconnects")
        elif kind == link_mod.EV_SUBSCRIBE_FAILED:
            self._last_error = f"the broker refused the subscriptions {', '.join(event[1])}"
            self.stats.count("subscribe_failures")
            self._subs_refused = True
            _log.error("%s: inbound messages on them will not arrive", self._last_error)
        elif kind == link_mod.EV_CONNECT_FAILED:
            self._connected = False
            if self._last_error != event[1]:
                _log.warning("cannot connect to %s:%s: %s (retrying with backoff)", self.config.broker.host,
                             self.config.broker.port, event[1])
            self._last_error = event[1]
            self.stats.count("connect_failures")

    def _route_for(self, topic: str) -> tuple[InboundRoute | None, str]:
        for route in self.config.inbound:
            ven_id = route.mqtt.match(topic)
            if ven_id is not None:
                return route, ven_id or (self.config.ven_id if self.config.mode == MODE_VEN else "") or ""
        return None, ""

    def on_mqtt_message(self, topic: str, payload: bytes) -> None:
        """The inbound path for one MQTT message (called on the hub by the pump; public for tests)."""
        self._on_mqtt_message(topic, payload)

    def _on_mqtt_message(self, topic: str, payload: bytes) -> None:
        self.stats.count("in")
        route, ven_id = self._route_for(topic)
        if route is None:
            self._reject(REASON_BAD_TOPIC, topic, "matches no inbound route")
            return
        try:
            accepted = validate(route.kind, ven_id, payload, self.config.max_payload_bytes)
        except Rejected as exc:
            self._reject(exc.reason, topic, exc.detail)
            return
        now = self._clock()
        if self._dedup.is_repeat(accepted.dedup_key, now):
            self.stats.count("duplicates")
            return
        self.stats.count("in_accepted")
        if route.batch:
            for batch_topic, items in self._batcher.add(route.bus.text, accepted.payload, now):
                self._bus_queue.put((batch_topic, {"items": items}))
        else:
            self._bus_queue.put((route.bus.format(ven_id or None), accepted.payload))

    def _bus_writer(self) -> None:
        while True:
            topic, message = self._bus_queue.get()
            items = len(message["items"]) if isinstance(message, dict) and "items" in message else 1
            for attempt in range(1, BUS_ATTEMPTS + 1):
                try:
                    self.bus.publish(topic, message)
                    self.stats.count("bus_published")
                    self.stats.count("bus_items", items)
                    break
                except Exception as exc:  # the port reports any bus failure; the message is retried
                    if attempt == BUS_ATTEMPTS:
                        self.stats.count("bus_failed", items)
                        _log.error("publishing %d item(s) on %s failed %d times, dropped: %s", items, topic,
                                   attempt, exc)
                    else:
                        gevent.sleep(0.2 * attempt)

    # --- status ----------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        cfg = self.config
        c = self.stats.counters
        outbox = self._outbox
        return {
            "mode": cfg.mode,
            "venId": cfg.ven_id,
            "clientId": cfg.broker.client_id,
            "broker": f"{cfg.broker.host}:{cfg.broker.port}",
            "tls": cfg.broker.tls is not None,
            "connected": self._connected,
            "sessionPresent": self._session_present,
            "lastError": self._last_error,
            "backlog": outbox.depth if outbox else 0,
            "backlogLimit": cfg.store_max_messages,
            "oldestBacklogAgeS": outbox.oldest_age_s() if outbox and self._running else None,
            "inflightFromBacklog": len(self._inflight_rows),
            "messagesIn": c["in"],
            "messagesAccepted": c["in_accepted"],
            "duplicates": c["duplicates"],
            "messagesOut": c["out_direct"] + c["out_drained"],
            "messagesQueued": c["out_queued"],
            "messagesAcked": c["out_acked"],
            "unacknowledged": self._unacknowledged(),
            "busPublished": c["bus_published"],
            "busItems": c["bus_items"],
            "busFailed": c["bus_failed"],
            "pendingBatchItems": len(self._batcher),
            "busQueue": self._bus_queue.qsize(),
            "inboundHeld": len(self._held),
            "rejects": dict(self.stats.rejects),
            "rejectsTotal": sum(self.stats.rejects.values()),
            "connects": c["connects"],
            "disconnects": c["disconnects"],
            "connectFailures": c["connect_failures"],
            "handoff": self.stats.handoff.summary_ms(),
            "lastFanout": self._last_fanout,
        }

    def health(self) -> dict[str, Any]:
        if not self._running:
            return {"status": "BAD", "context": "not started"}
        if not self._connected:
            return {"status": "BAD", "context": f"not connected to the broker: {self._last_error or 'connecting'}"}
        if self._subs_refused:
            return {"status": "BAD", "context": self._last_error or "subscriptions refused"}
        return {"status": "GOOD", "context": f"connected; outbox holds {self._outbox.depth if self._outbox else 0}"}

    def _reject(self, reason: str, topic: str, detail: str, n: int = 1) -> None:
        self.stats.reject(reason, n)
        now = time.monotonic()
        if now - self._log_window >= LOG_WINDOW_S:
            if self._suppressed:
                _log.warning("%d more dropped message(s) were counted but not logged in the last %.0f s",
                             self._suppressed, LOG_WINDOW_S)
            self._log_window, self._logged, self._suppressed = now, 0, 0
        if self._logged < LOG_PER_WINDOW:
            self._logged += 1
            _log.warning("dropped (%s) on %s: %s", reason, topic, detail[:300])
        else:
            self._suppressed += n


def _flatten(events: list[tuple[float, Any]]) -> list[tuple[float, Any]]:
    """Hand-off items with the events of each EV_BATCH laid out in order (all with the batch's time)."""
    if not any(event[0] == link_mod.EV_BATCH for _, event in events):
        return events
    out: list[tuple[float, Any]] = []
    for put_at, event in events:
        if event[0] == link_mod.EV_BATCH:
            out.extend((put_at, inner) for inner in event[1])
        else:
            out.append((put_at, event))
    return out


def _result() -> dict[str, int]:
    return {"sent": 0, "queued": 0, "refused": 0, "rejected": 0}


def _merge(into: dict[str, int], other: dict[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
