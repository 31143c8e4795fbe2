"""N simulated VENs as paho clients driven by one epoll loop (paho's external-loop API, no thread per client).

Each VEN subscribes to `ven/cmd/<venId>` (QoS 1), answers commands with acks on `ven/ack/<venId>` and publishes
telemetry every `telemetry_interval_s` on `ven/telemetry/<venId>` (and `oadr/meter/<venId>`), spread evenly
over the interval. Connects are paced (at most `connect_window` CONNACKs outstanding: Mosquitto's listen
backlog overflows when thousands connect at once) and the TCP sockets are not bound to port 0 first (paho's
default, costly with thousands of sockets). Lost connections are re-established with capped backoff.
"""

from __future__ import annotations

import heapq
import json
import random
import select
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from gevent import monkey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from dr_common.timeutil import utcnow
from fleet.ven import SimVen

_native_create_connection = monkey.get_original("socket", "create_connection")
_OK = MQTTErrorCode.MQTT_ERR_SUCCESS
_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
_IN = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
_OUT = select.EPOLLOUT

DISCONNECTED, CONNECTING, CONNECTED = 0, 1, 2


class FleetClient(mqtt.Client):
    """paho's client without the bind-to-port-0 before connect, on the interpreter's own sockets."""

    def _create_socket_connection(self) -> socket.socket:
        return _native_create_connection((self._host, self._port), timeout=self._connect_timeout)


@dataclass
class FleetOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    count: int = 100
    prefix: str = "sim"
    first_index: int = 0
    telemetry_interval_s: float = 5.0
    meter: bool = True
    qos: int = 1
    connect_window: int = 200
    clean_session: bool = True
    keepalive_s: int = 120
    seed: int = 1
    record: bool = False


def ven_ids(prefix: str, first: int, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(first, first + count)]


class _Member:
    __slots__ = ("ven", "client", "fd", "state", "out", "backoff", "tried", "ack_topic", "tel_topic", "meter_topic")

    def __init__(self, ven: SimVen, client: FleetClient) -> None:
        self.ven = ven
        self.client = client
        self.fd = -1
        self.state = DISCONNECTED
        self.out = False
        self.backoff = 0.5
        self.tried = False
        self.ack_topic = f"ven/ack/{ven.ven_id}"
        self.tel_topic = f"ven/telemetry/{ven.ven_id}"
        self.meter_topic = f"oadr/meter/{ven.ven_id}"


class Fleet:
    def __init__(self, opts: FleetOptions) -> None:
        self.opts = opts
        self.epoll = select.epoll()
        rng = random.Random(opts.seed + opts.first_index)
        self.members: list[_Member] = []
        for ven_id in ven_ids(opts.prefix, opts.first_index, opts.count):
            member = _Member(SimVen(ven_id, random.Random(rng.random())), None)  # type: ignore[arg-type]
            client = FleetClient(CallbackAPIVersion.VERSION2, client_id=f"{ven_id}",
                                 clean_session=opts.clean_session, userdata=member)
            client.max_inflight_messages_set(0)
            client.on_connect = self._on_connect
            client.on_message = self._on_message
            client.on_socket_close = self._on_socket_close
            member.client = client
            self.members.append(member)
        self.by_fd: dict[int, _Member] = {}
        self.readers: dict[int, Callable[[], None]] = {}
        self.counters: Counter[str] = Counter()
        self.commands_by_op: Counter[str] = Counter()
        self.delivery_ms: list[float] = []   # issuedAt -> received (wall clock, same machine)
        self.ack_ms: list[float] = []        # received -> ack handed to the socket
        self.recv_log: list[tuple[str, float]] = []  # (correlationId, monotonic time received) when recording
        self._connect_queue: deque[_Member] = deque(self.members)
        self._reconnects: list[tuple[float, int, _Member]] = []
        self._telemetry: list[tuple[float, int, _Member]] = []
        self._connecting = 0
        self._misc_index = 0
        self._misc_at = 0.0
        self.connected = 0
        self.started_at = time.monotonic()
        self.all_connected_at: float | None = None
        if opts.telemetry_interval_s > 0:
            step = opts.telemetry_interval_s / max(1, opts.count)
            start = time.monotonic() + opts.telemetry_interval_s
            self._telemetry = [(start + i * step, i, m) for i, m in enumerate(self.members)]
            heapq.heapify(self._telemetry)

    # --- paho callbacks (run inside loop_read, in this thread) -------------------------------------
    def _on_connect(self, client: mqtt.Client, member: _Member, flags: Any, reason: Any, properties: Any) -> None:
        if member.state == CONNECTING:
            self._connecting -= 1
        if reason.is_failure:
            self.counters["connect_refused"] += 1
            member.state = DISCONNECTED
            return
        member.state = CONNECTED
        member.backoff = 0.5
        self.connected += 1
        client.subscribe(f"ven/cmd/{member.ven.ven_id}", qos=self.opts.qos)
        if self.connected == len(self.members) and self.all_connected_at is None:
            self.all_connected_at = time.monotonic()

    def _on_message(self, client: mqtt.Client, member: _Member, msg: mqtt.MQTTMessage) -> None:
        received = time.monotonic()
        now = utcnow()
        ack, cmd = member.ven.handle(msg.payload, now)
        self.counters["commands"] += 1
        self.commands_by_op[cmd.op if cmd else "invalid"] += 1
        if cmd is not None and cmd.issued_at is not None:
            self.delivery_ms.append((now - cmd.issued_at).total_seconds() * 1000.0)
        if self.opts.record:
            self.recv_log.append((ack["correlationId"], received))
        client.publish(member.ack_topic, json.dumps(ack, separators=(",", ":")), qos=self.opts.qos)
        self.counters["acks_ok" if ack["ok"] else "acks_failed"] += 1
        self.ack_ms.append((time.monotonic() - received) * 1000.0)

    def _on_socket_close(self, client: mqtt.Client, member: _Member, sock: Any) -> None:
        if member.fd >= 0:
            try:
                self.epoll.unregister(member.fd)
            except (OSError, ValueError):
                pass
            self.by_fd.pop(member.fd, None)
            member.fd = -1
        if member.state == CONNECTED:
            self.connected -= 1
        elif member.state == CONNECTING:
            self._connecting -= 1
        member.state = DISCONNECTED
        member.out = False

    # --- loop --------------------------------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback
        self.epoll.register(fd, select.EPOLLIN)

    def _connect_some(self, now: float) -> None:
        while self._reconnects and self._reconnects[0][0] <= now:
            _, _, member = heapq.heappop(self._reconnects)
            self._connect_queue.append(member)
        budget = self.opts.connect_window - self._connecting
        while budget > 0 and self._connect_queue:
            member = self._connect_queue.popleft()
            budget -= 1
            client = member.client
            try:
                if member.tried:  # reconnect with the same options
                    client.reconnect()
                else:
                    member.tried = True
                    client.connect(self.opts.host, self.opts.port, keepalive=self.opts.keepalive_s)
            except OSError:
                self.counters["connect_errors"] += 1
                self._schedule_reconnect(member, now)
                continue
            sock = client.socket()
            member.fd = sock.fileno()
            member.state = CONNECTING
            self._connecting += 1
            self.by_fd[member.fd] = member
            member.out = client.want_write()
            self.epoll.register(member.fd, _IN | (_OUT if member.out else 0))

    def _schedule_reconnect(self, member: _Member, now: float) -> None:
        member.backoff = min(member.backoff * 2, 30.0)
        self.counters["reconnects"] += 1
        heapq.heappush(self._reconnects, (now + member.backoff * random.uniform(0.5, 1.0), id(member), member))

    def _after_io(self, member: _Member, rc: int, now: float) -> None:
        client = member.client
        if rc not in (_OK, _AGAIN) or client.socket() is None:
            if member.fd >= 0:
                self._on_socket_close(client, member, None)
            self._schedule_reconnect(member, now)
            return
        if client.want_write():
            rc = client.loop_write()
            if rc not in (_OK, _AGAIN):
                self._after_io(member, rc, now)
                return
        want = client.want_write()
        if want != member.out and member.fd >= 0:
            member.out = want
            self.epoll.modify(member.fd, _IN | (_OUT if want else 0))

    def poll(self, timeout: float) -> None:
        """One round: socket events, paced connects, due telemetry, keepalive for a slice of clients."""
        events = self.epoll.poll(timeout, 4096)
        now = time.monotonic()
        for fd, ev in events:
            reader = self.readers.get(fd)
            if reader is not None:
                reader()
                continue
            member = self.by_fd.get(fd)
            if member is None:
                continue
            client = member.client
            rc = _OK
            if ev & _IN:
                rc = client.loop_read()
            if rc == _OK and ev & _OUT and member.fd >= 0:
                rc = client.loop_write()
            self._after_io(member, rc, now)
        if self._connect_queue or self._reconnects:
            self._connect_some(now)
        self._send_telemetry(now)
        self._keepalive(now)

    def _send_telemetry(self, now: float) -> None:
        heap = self._telemetry
        interval = self.opts.telemetry_interval_s
        sent = 0
        while heap and heap[0][0] <= now and sent < 2000:
            due, i, member = heapq.heappop(heap)
            heapq.heappush(heap, (due + interval, i, member))
            if member.state != CONNECTED:
                continue
            payload = json.dumps(member.ven.telemetry(), separators=(",", ":"))
            client = member.client
            client.publish(member.tel_topic, payload, qos=self.opts.qos)
            if self.opts.meter:
                client.publish(member.meter_topic, payload, qos=self.opts.qos)
            self.counters["telemetry"] += 1
            sent += 1
            self._after_io(member, _OK, now)

    def _keepalive(self, now: float) -> None:
        if now < self._misc_at:
            return
        self._misc_at = now + 0.2
        n = len(self.members)
        chunk = max(1, n // 25)  # every client about every 5 s
        for _ in range(chunk):
            member = self.members[self._misc_index]
            self._misc_index = (self._misc_index + 1) % n
            if member.state == CONNECTED:
                rc = member.client.loop_misc()
                self._after_io(member, rc, now)

    def next_timeout(self) -> float:
        now = time.monotonic()
        wake = now + 0.2
        if self._telemetry:
            wake = min(wake, self._telemetry[0][0])
        if self._reconnects:
            wake = min(wake, self._reconnects[0][0])
        if self._connect_queue and self._connecting < self.opts.connect_window:
            return 0.0
        return max(0.0, wake - now)

    def run(self, until: Callable[[], bool], tick: Callable[[Fleet], None] | None = None,
            tick_s: float = 1.0) -> None:
        next_tick = time.monotonic() + tick_s
        while not until():
            timeout = self.next_timeout()
            if tick is not None:
                timeout = min(timeout, max(0.0, next_tick - time.monotonic()))
            self.poll(timeout)
            if tick is not None and time.monotonic() >= next_tick:
                next_tick = max(next_tick + tick_s, time.monotonic())
                tick(self)

    def close(self) -> None:
        for member in self.members:
            if member.state == CONNECTED:
                member.client.disconnect()
                member.client.loop_write()
            sock = member.client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.epoll.close()

    def snapshot(self) -> dict[str, Any]:
        """Counters and raw latency lists (the caller summarises; lists are moved out)."""
        out = {"vens": len(self.members), "connected": self.connected, "counters": dict(self.counters),
               "byOp": dict(self.commands_by_op), "deliveryMs": self.delivery_ms, "ackMs": self.ack_ms,
               "connectS": (self.all_connected_at - self.started_at) if self.all_connected_at else None}
        self.delivery_ms, self.ack_ms = [], []
        return out
