"""The bridge itself, without the VOLTTRON platform: bus messages in, MQTT out, and back.

It runs on the gevent hub (the agent's thread) and talks to the bus only through a `BusPort`, so it runs the
same inside the agent and in tests. Greenlets:
  * pump: takes paho's events off the `HubInbox` (connection changes, inbound messages, PUBACKs), validates
    and dedups inbound payloads, coalesces them into batches;
  * bus writer: publishes batches and per-VEN messages on the bus, one at a time and in order;
  * drainer (`outbound.OutboundPath`): after a reconnect, sends what waited in the SQLite outbox, in order,
    before anything newer.
The bus -> MQTT direction and the outbox live in `outbound`; this module holds the lifecycle, the inbound
path and the status. Every time the core reads comes from the injected `clock` (tests drive it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.queue

from dr_common.payloads import BridgeStatus
from dr_common.mqtt import link as link_mod
from dr_common.mqtt import outbound as outbound_mod
from dr_common.mqtt.batcher import Batcher
from dr_common.mqtt.config import MODE_VEN, BridgeConfig, InboundRoute
from dr_common.mqtt.dedup import Deduplicator
from dr_common.mqtt.handoff import HubInbox
from dr_common.mqtt.inbound import REASON_BAD_TOPIC, Accepted, Rejected, validate
from dr_common.mqtt.outbound import FanoutGate, OutboundPath
from dr_common.mqtt.outbox import OutboxError, SqliteOutbox
from dr_common.mqtt.stats import BridgeStats, RejectLog

_log = logging.getLogger(__name__)

REASON_INTERNAL = "internal_error"
PUMP_YIELD_EVERY = 200      # inbound events processed between two yields to other greenlets
BUS_ATTEMPTS = 3


class BusPort(Protocol):
    """Where the bridge publishes on the bus. `publish` blocks the calling greenlet and raises on failure."""

    def publish(self, topic: str, message: Any) -> None:
        """Publish `message` on `topic`; raises when it did not complete."""


LocalSink = Callable[[str, list[Accepted]], None]


class BridgeCore:
    """The bridge without the platform: `prepare` builds what can fail, `start` connects, `stop` lets go.

    With a `local_sink` (a consumer in the same process, such as dr.vtn's command link) what the batched inbound
    routes accept goes to `local_sink(bus_topic, accepted)` instead of the bus: at least once per pump pass, in
    the order it arrived, without waiting for `batch.max_delay_ms`."""

    def __init__(self, config: BridgeConfig, bus: BusPort, base_dir: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 link_factory: Callable[..., link_mod.MqttLink] = link_mod.MqttLink,
                 wall_clock: Callable[[], float] = time.time, local_sink: LocalSink | None = None) -> None:
        self.config = config
        self.bus = bus
        self._local_sink = local_sink
        self._local: dict[str, list[Accepted]] = {}
        self._link_factory = link_factory  # MqttLink's signature; tests give a link without a broker
        self.stats = BridgeStats()
        self._clock = clock
        self._wall_clock = wall_clock
        self._base_dir = base_dir or os.getcwd()
        self._rejects = RejectLog(self.stats, clock=clock)
        self._dedup = Deduplicator(config.dedup_window_s, config.dedup_max_entries)
        self._batcher = Batcher(config.batch_max_items, config.batch_max_delay_s)
        # After a large fan-out, inbound messages are held (in order) until the broker has acknowledged its
        # last message or FANOUT_PRIORITY_S has passed: the commands reach the VENs before the CPU goes to
        # validating and batching the acks they start coming back with.
        self._gate = FanoutGate(clock)
        self.out = OutboundPath(config, self.stats, self._rejects, self._gate)
        self._session_present: bool | None = None
        self._last_error: str | None = None
        self._inbox: HubInbox | None = None
        self._bus_queue: gevent.queue.Queue = gevent.queue.Queue()
        self._held: list[tuple[str, bytes]] = []
        self._greenlets: list[gevent.Greenlet] = []
        self._running = False
        self._prepared = False
        self._last_fanout: dict[str, Any] | None = None
        self._subs_refused = False
        for warning in config.warnings:
            _log.warning("INSECURE MQTT LINK: %s", warning)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def store_path(self) -> str:
        """The outbox file (a relative store.path is relative to the agent's folder)."""
        path = self.config.store_path
        return path if os.path.isabs(path) else os.path.join(self._base_dir, path)

    def prepare(self) -> None:
        """Open the outbox and build the MQTT client (TLS context, certificates) without connecting; raises
        OutboxError or OSError/ssl.SSLError/ValueError when any of it cannot be used."""
        if self._prepared:
            return
        cfg = self.config
        outbox = SqliteOutbox(self.store_path, cfg.store_max_messages, cfg.telemetry_ttl_s, self._wall_clock)
        inbox = None
        try:
            inbox = HubInbox()
            birth = None
            if cfg.status_topic is not None and cfg.ven_id:
                birth = link_mod.Birth(topic=cfg.status_topic.text, online=link_mod.status_payload(cfg.ven_id, True),
                                       offline=link_mod.status_payload(cfg.ven_id, False), qos=max(cfg.qos, 1),
                                       retain=cfg.status_retain)
            share = f"$share/{cfg.share_group}/" if cfg.share_group else ""  # deliveries name the plain topic
            subs = [(share + route.mqtt.mqtt_filter(), cfg.qos) for route in cfg.inbound]
            link = self._link_factory(cfg.broker, inbox, subs, birth, log_packets=cfg.log_mqtt_packets)
        except BaseException:
            outbox.close()
            if inbox is not None:
                inbox.close()
            raise
        self._inbox, self.out.outbox, self.out.link = inbox, outbox, link
        self._prepared = True

    def start(self) -> None:
        """Prepare (when not yet done) and connect in the background."""
        self.prepare()
        cfg = self.config
        outbox, link = self.out.outbox, self.out.link
        assert outbox is not None and link is not None
        outbox.recount()  # a bridge stopped just before may have deleted acknowledged rows meanwhile
        self.out.backlog = outbox.depth > 0
        self._running = self.out.running = True
        self._greenlets = [gevent.spawn(self._pump), gevent.spawn(self._bus_writer), gevent.spawn(self.out.drainer)]
        link.start()
        _log.info("MQTT bridge (%s mode%s) connecting to %s:%s as %s; outbox %s holds %d", cfg.mode,
                  f", venId {cfg.ven_id}" if cfg.ven_id else "", cfg.broker.host, cfg.broker.port,
                  cfg.broker.client_id, self.store_path, outbox.depth)

    def discard(self) -> None:
        """Let go of what `prepare` built, for a configuration that is not started after all."""
        if not self._running and self.out.outbox is not None:
            self.out.outbox.close()
            if self._inbox is not None:
                self._inbox.close()
            self.out.outbox, self.out.link, self._inbox, self._prepared = None, None, None, False

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect, publish what is batched, close the outbox. What is not yet acknowledged stays queued."""
        if not self._running:
            return
        deadline = time.monotonic() + timeout
        # messages handed to paho but not yet acknowledged live only in paho's memory: let them finish
        while self.out.connected and self.out.unacknowledged() > 0 and time.monotonic() < deadline:
            gevent.sleep(0.02)
        if self.out.unacknowledged() > 0:
            _log.warning("stopping with %d message(s) not acknowledged by the broker; those sent from the outbox "
                         "stay queued there", self.out.unacknowledged())
        self._running = self.out.running = False
        if self.out.link is not None:
            # loop_stop() joins paho's OS thread: do it in the hub's thread pool, not on the hub
            gevent.get_hub().threadpool.apply(self.out.link.stop)
        held, self._held = self._held, []
        self._gate.release()
        for topic, payload in held:
            self._handle_safely((link_mod.EV_MESSAGE, topic, payload), [])
        self._to_local()
        for topic, items in self._batcher.flush_all():
            self._bus_queue.put((topic, {"items": items}))
        deadline = time.monotonic() + timeout
        while not self._bus_queue.empty() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        gevent.killall(self._greenlets, timeout=timeout)
        self._greenlets = []
        if self._inbox is not None:
            self._inbox.close()
        if self.out.outbox is not None:
            self.out.outbox.close()
        self.out.connected = False

    # --- bus -> MQTT (outbound.OutboundPath) -----------------------------------------------------
    def bus_prefixes(self) -> list[str]:
        """The bus prefixes to subscribe to (deliveries are checked against the templates)."""
        return self.out.bus_prefixes()

    def on_bus_message(self, topic: str, message: Any) -> dict[str, int]:
        """A bus message on a subscribed prefix: fan it out to MQTT according to the outbound routes."""
        received = time.monotonic()
        result = self.out.on_bus_message(topic, message)
        self._note_fanout(topic, result, received)
        return result

    def send_batch(self, commands: Any, shared: Any = None) -> dict[str, int]:
        """The `send_batch` RPC: many payloads, each with its venId, through the first batch route; `shared`
        holds fields common to every payload (as `compact_batch` makes them), laid under each one."""
        received = time.monotonic()
        result = self.out.send_batch(commands, shared)
        if result is None:
            rejected = len(commands) if isinstance(commands, list) else 1
            return {"sent": 0, "queued": 0, "refused": 0, "rejected": rejected}
        self._note_fanout("rpc:send_batch", result, received)
        return result

    def _note_fanout(self, source: str, result: dict[str, int], received: float) -> None:
        self._last_fanout = {"topic": source, "messages": result["sent"] + result["queued"],
                             "receivedMonotonic": received, "ms": round((time.monotonic() - received) * 1000, 3)}

    # --- MQTT -> bus -----------------------------------------------------------------------------
    def _pump(self) -> None:
        inbox, gate = self._inbox, self._gate
        assert inbox is not None
        while True:
            deadline = self._batcher.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            if gate.holding():
                hold = gate.remaining()
                timeout = hold if timeout is None else min(timeout, hold)
            self.pump_once(inbox.get_all(timeout))

    def pump_once(self, items: list[tuple[float, Any]]) -> None:
        """Handle what the hand-off delivered: PUBACKs and connection events at once, inbound messages unless
        a fan-out holds them; then what is due of the batches."""
        events = _flatten(items)
        # commands going out come first: inbound messages wait while a fan-out is handed to paho, and are
        # held after it until the broker has acknowledged it (PUBACKs and connection events go on)
        self._gate.done.wait(outbound_mod.FANOUT_PRIORITY_S)
        now_pc = time.perf_counter()
        acked: list[int] = []
        held = self._held
        for n, (put_at, event) in enumerate(events, 1):
            self.stats.handoff.add(now_pc - put_at)
            if event[0] == link_mod.EV_MESSAGE and (held or self._gate.holding()):
                held.append((event[1], event[2]))
                continue
            self._handle_safely(event, acked)
            if n % PUMP_YIELD_EVERY == 0:
                self._to_local()
                gevent.sleep(0)
                now_pc = time.perf_counter()
        if held and not self._gate.holding():
            self._held = []
            for n, (topic, payload) in enumerate(held, 1):
                self._handle_safely((link_mod.EV_MESSAGE, topic, payload), acked)
                if n % PUMP_YIELD_EVERY == 0:
                    self._to_local()
                    gevent.sleep(0)
        self._to_local()
        if acked and self.out.outbox is not None:
            try:
                self.out.outbox.delete(acked)
            except OutboxError as exc:
                _log.error("%s", exc)
        for topic, batch in self._batcher.due(self._clock()):
            self._bus_queue.put((topic, {"items": batch}))

    def _handle_safely(self, event: tuple[Any, ...], acked: list[int]) -> None:
        try:
            self._handle(event, acked)
        except Exception as exc:  # one bad event must not stop the bridge; counted, logged once a minute
            topic = event[1] if event[0] == link_mod.EV_MESSAGE else str(event[0])
            self._rejects.refuse(REASON_INTERNAL, topic, f"{exc.__class__.__name__}: {exc}")
            _log.debug("handling MQTT event %s failed", event[0], exc_info=True)

    def _handle(self, event: tuple[Any, ...], acked: list[int]) -> None:
        kind = event[0]
        broker = self.config.broker
        if kind == link_mod.EV_MESSAGE:
            self._on_mqtt_message(event[1], event[2])
        elif kind == link_mod.EV_PUBACK:
            self.out.on_puback(event[1], acked)
        elif kind == link_mod.EV_CONNECTED:
            if self.config.status_topic is not None and self.config.ven_id:
                self.stats.count("births")
            self.out.connected = True
            self._subs_refused = False
            self._session_present = event[1]
            self._last_error = None
            self.stats.count("connects")
            _log.info("connected to %s:%s (session present: %s); outbox holds %d", broker.host, broker.port,
                      event[1], self.out.outbox.depth if self.out.outbox else 0)
            self.out.drain_wakeup.set()
        elif kind == link_mod.EV_DISCONNECTED:
            if self.out.connected:
                _log.log(logging.WARNING if self._running else logging.INFO, "disconnected from %s:%s: %s",
                         broker.host, broker.port, event[1])
            self.out.connected = False
            self._gate.release()
            self._last_error = f"disconnected: {event[1]}"
            self.stats.count("disconnects")
        elif kind == link_mod.EV_SUBSCRIBE_FAILED:
            self._last_error = f"the broker refused the subscriptions {', '.join(event[1])}"
            self.stats.count("subscribe_failures")
            self._subs_refused = True
            _log.error("%s: inbound messages on them will not arrive", self._last_error)
        elif kind == link_mod.EV_CONNECT_FAILED:
            self.out.connected = False
            if self._last_error != event[1]:
                _log.warning("cannot connect to %s:%s: %s (retrying with backoff)", broker.host, broker.port,
                             event[1])
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
            self._rejects.refuse(REASON_BAD_TOPIC, topic, "matches no inbound route")
            return
        try:
            accepted = validate(route.kind, ven_id, payload, self.config.max_payload_bytes)
        except Rejected as exc:
            self._rejects.refuse(exc.reason, topic, exc.detail)
            return
        if accepted.dropped:
            self.stats.count("unknown_fields_dropped", accepted.dropped)
        now = self._clock()
        if self._dedup.is_repeat(accepted.dedup_key, now):
            self.stats.count("duplicates")
            return
        self.stats.count("in_accepted")
        if route.batch and self._local_sink is not None:
            self._local.setdefault(route.bus.text, []).append(accepted)
        elif route.batch:
            for batch_topic, items in self._batcher.add(route.bus.text, accepted.payload, now):
                self._bus_queue.put((batch_topic, {"items": items}))
        else:
            self._bus_queue.put((route.bus.format(ven_id or None), accepted.payload))

    def _to_local(self) -> None:
        """Hand what the batched routes accepted so far to the local sink, topic by topic."""
        if not self._local:
            return
        pending, self._local = self._local, {}
        for topic, accepted in pending.items():
            try:
                self._local_sink(topic, accepted)  # type: ignore[misc]
                self.stats.count("local_items", len(accepted))
            except Exception as exc:  # the consumer's failure loses this hand-off only; counted, logged
                self.stats.count("local_failed", len(accepted))
                self._rejects.refuse(REASON_INTERNAL, topic, f"local consumer: {exc.__class__.__name__}: {exc}")

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
        """True while the broker connection is up."""
        return self.out.connected

    def status(self) -> dict[str, Any]:
        """The status RPC's answer (`dr_common.payloads.BridgeStatus`)."""
        cfg = self.config
        c = self.stats.counters
        outbox = self.out.outbox
        return BridgeStatus(
            mode=cfg.mode, ven_id=cfg.ven_id, client_id=cfg.broker.client_id,
            broker=f"{cfg.broker.host}:{cfg.broker.port}", tls=cfg.broker.tls is not None,
            connected=self.out.connected, session_present=self._session_present, last_error=self._last_error,
            backlog=outbox.depth if outbox else 0, backlog_limit=cfg.store_max_messages,
            oldest_backlog_age_s=outbox.oldest_age_s() if outbox and self._running else None,
            inflight_from_backlog=len(self.out.inflight_rows), outbox_shed=c["outbox_shed"],
            outbox_expired=outbox.expired if outbox else 0, messages_in=c["in"], messages_accepted=c["in_accepted"],
            duplicates=c["duplicates"], messages_out=c["out_direct"] + c["out_drained"],
            messages_queued=c["out_queued"], messages_acked=c["out_acked"],
            unacknowledged=self.out.unacknowledged(), bus_published=c["bus_published"], bus_items=c["bus_items"],
            bus_failed=c["bus_failed"], pending_batch_items=len(self._batcher), bus_queue=self._bus_queue.qsize(),
            inbound_held=len(self._held), unknown_fields_dropped=c["unknown_fields_dropped"],
            rejects=dict(self.stats.rejects), connects=c["connects"], disconnects=c["disconnects"],
            connect_failures=c["connect_failures"], handoff=self.stats.handoff.summary_ms(),
            last_fanout=self._last_fanout, warnings=list(cfg.warnings),
        ).to_payload()

    def health(self) -> dict[str, Any]:
        """GOOD when connected with every subscription granted; warnings about an insecure link are said."""
        out = self._health()
        if self.config.warnings:
            out["context"] += "; WARNING: " + "; ".join(self.config.warnings)
            out["warnings"] = list(self.config.warnings)
        return out

    def _health(self) -> dict[str, Any]:
        if not self._running:
            return {"status": "BAD", "context": "not started"}
        if not self.out.connected:
            return {"status": "BAD", "context": f"not connected to the broker: {self._last_error or 'connecting'}"}
        if self._subs_refused:
            return {"status": "BAD", "context": self._last_error or "subscriptions refused"}
        depth = self.out.outbox.depth if self.out.outbox else 0
        return {"status": "GOOD", "context": f"connected; outbox holds {depth}"}


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
