"""N simulated VENs, each a plain MQTT 3.1.1 connection of its own, all driven by one epoll loop.

Each VEN subscribes to `ven/cmd/<venId>`, answers commands with acks on `ven/ack/<venId>` and publishes
telemetry every `telemetry_interval_s` on `ven/telemetry/<venId>` (and `oadr/meter/<venId>`), spread evenly
over the interval. The protocol is `fleet.wire` over non-blocking sockets: one `recv` per readiness event,
every whole packet in it handled, and all that a VEN has to send (PUBACKs, acks, telemetry) written in one
`send` per loop round. Each round first reads every ready socket and only then answers the commands it
found, so one VEN's reply never delays another VEN's receipt; with `ack_delay_s` each VEN acks that long
after it received the command, as a real VEN does once it has acted on it. Connects are paced (at most `connect_window`
connections between TCP connect and SUBACK: Mosquitto's listen backlog overflows when thousands connect at
once); lost connections are re-established with capped backoff, and with a persistent session the QoS 1
publishes the broker had not acknowledged are sent again (DUP) after the reconnect.
"""

from __future__ import annotations

import errno
import heapq
import json
import random
import select
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dr_common.timeutil import utcnow
from dr_tools.fleet import wire
from dr_tools.fleet.ven import SimVen

_IN = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_RECV_BYTES = 65536
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: recvmsg reports when the data reached the socket
_TIMESPEC = struct.Struct("@qq")
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)

DISCONNECTED, CONNECTING, CONNECTED = 0, 1, 2


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
    ack_delay_s: float = 0.0  # a VEN's own time from command to ack (0: at once)
    ack_prefix: str = "ven/ack"  # acks go to <ack_prefix>/<venId>


def ven_ids(prefix: str, first: int, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(first, first + count)]


class _Member:
    __slots__ = ("ven", "sock", "fd", "state", "inbuf", "outbuf", "watch_out", "backoff", "next_pid", "inflight",
                 "last_out", "cmd_topic", "ack_topic", "tel_topic", "meter_topic")

    def __init__(self, ven: SimVen, ack_prefix: str) -> None:
        self.ven = ven
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = DISCONNECTED
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.watch_out = False
        self.backoff = 0.5
        self.next_pid = 1
        self.inflight: dict[int, bytes] = {}  # QoS 1 publishes the broker has not acknowledged yet
        self.last_out = 0.0
        self.cmd_topic = f"ven/cmd/{ven.ven_id}"
        self.ack_topic = f"{ack_prefix}/{ven.ven_id}"
        self.tel_topic = f"ven/telemetry/{ven.ven_id}"
        self.meter_topic = f"oadr/meter/{ven.ven_id}"

    def take_pid(self) -> int:
        pid = self.next_pid
        self.next_pid = pid % 65535 + 1
        return pid


class Fleet:
    def __init__(self, opts: FleetOptions) -> None:
        self.opts = opts
        self.epoll = select.epoll()
        rng = random.Random(opts.seed + opts.first_index)
        self.members = [_Member(SimVen(v, random.Random(rng.random())), opts.ack_prefix)
                        for v in ven_ids(opts.prefix, opts.first_index, opts.count)]
        self._address: tuple[Any, ...] | None = None
        self.by_fd: dict[int, _Member] = {}
        self.readers: dict[int, Callable[[], None]] = {}
        self.counters: Counter[str] = Counter()
        self.commands_by_op: Counter[str] = Counter()
        self.delivery_ms: list[float] = []   # issuedAt -> received (wall clock, same machine)
        self.ack_ms: list[float] = []        # command at the socket -> ack written
        # when recording: (correlationId, arrived, read), both on the monotonic clock: `arrived` is the kernel's
        # receive time of the command's data at the VEN's socket, `read` the start of the loop round that read it
        self.recv_log: list[tuple[str, float, float]] = []
        self._real_to_mono = 0.0  # monotonic - realtime, taken at each round (kernel receive times are realtime)
        # commands read this round, answered after all reads: (member, payload, read, arrived)
        self._pending: list[tuple[_Member, bytes, float, float]] = []
        self._delayed: deque[tuple[_Member, bytes, float, float]] = deque()  # commands waiting out ack_delay_s
        self._dirty: dict[int, _Member] = {}  # members with bytes to send this round, by id
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

    def set_ack_prefix(self, prefix: str) -> None:
        """Acks from now on go to <prefix>/<venId> (a benchmark gives each measured path acks of its own)."""
        for member in self.members:
            member.ack_topic = f"{prefix}/{member.ven.ven_id}"

    # --- sending -----------------------------------------------------------------------------------
    def _queue(self, member: _Member, data: bytes) -> None:
        member.outbuf += data
        self._dirty[id(member)] = member

    def _publish(self, member: _Member, topic: str, payload: bytes) -> None:
        qos = self.opts.qos
        if qos:
            pid = member.take_pid()
            packet = wire.publish(topic, payload, qos, pid)
            member.inflight[pid] = packet
        else:
            packet = wire.publish(topic, payload)
        self._queue(member, packet)

    def _flush(self, member: _Member, now: float) -> None:
        sock = member.sock
        if sock is None or not member.outbuf:
            return
        try:
            sent = sock.send(member.outbuf)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(member, now)
            return
        if sent:
            del member.outbuf[:sent]
            member.last_out = now
        want = bool(member.outbuf)
        if want != member.watch_out:
            member.watch_out = want
            self.epoll.modify(member.fd, _IN | (_OUT if want else 0))

    # --- receiving ---------------------------------------------------------------------------------
    def _read(self, member: _Member, now: float) -> None:
        sock = member.sock
        if sock is None:
            return
        arrived = now
        try:
            if self.opts.record:
                data, ancillary, _flags, _addr = sock.recvmsg(_RECV_BYTES, _ANC_BYTES)
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                        sec, nsec = _TIMESPEC.unpack_from(value)
                        arrived = min(now, sec + nsec * 1e-9 + self._real_to_mono)
            else:
                data = sock.recv(_RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self._lost(member, now)
            return
        if not data:
            self._lost(member, now)
            return
        member.inbuf += data
        try:
            for kind, flags, body in wire.split_packets(member.inbuf):
                self._packet(member, kind, flags, body, now, arrived)
        except wire.ProtocolError:
            self.counters["protocol_errors"] += 1
            self._lost(member, now)

    def _packet(self, member: _Member, kind: int, flags: int, body: bytes, now: float, arrived: float) -> None:
        if kind == wire.PUBLISH:
            _topic, qos, pid, payload = wire.parse_publish(flags, body)
            if qos:
                self._queue(member, wire.puback(pid))
            self._pending.append((member, payload, now, arrived))
        elif kind == wire.PUBACK:
            member.inflight.pop(wire.packet_id_of(body), None)
        elif kind == wire.PINGRESP:
            pass
        elif kind == wire.CONNACK:
            present, code = wire.connack(body)
            if code != 0:
                self.counters["connect_refused"] += 1
                self._lost(member, now)
                return
            self._queue(member, wire.subscribe(member.take_pid(), member.cmd_topic, self.opts.qos))
            if present:
                for packet in member.inflight.values():  # sent again with DUP set
                    self._queue(member, bytes((packet[0] | 0x08,)) + packet[1:])
            else:
                member.inflight.clear()
        elif kind == wire.SUBACK:
            if body[2:3] == b"\x80":
                self.counters["subscribe_refused"] += 1
                self._lost(member, now)
                return
            if member.state == CONNECTING:
                self._connecting -= 1
                member.state = CONNECTED
                member.backoff = 0.5
                self.connected += 1
                if self.connected == len(self.members) and self.all_connected_at is None:
                    self.all_connected_at = time.monotonic()
        else:
            raise wire.ProtocolError(f"unexpected packet type {kind} from the broker")

    def _answer(self, member: _Member, payload: bytes, read: float, arrived: float) -> None:
        now = utcnow()
        ack, cmd = member.ven.handle(payload, now)
        self.counters["commands"] += 1
        self.commands_by_op[cmd.op if cmd else "invalid"] += 1
        if cmd is not None and cmd.issued_at is not None:
            self.delivery_ms.append((now - cmd.issued_at).total_seconds() * 1000.0)
        if self.opts.record:
            self.recv_log.append((ack["correlationId"], arrived, read))
        self._publish(member, member.ack_topic, json.dumps(ack, separators=(",", ":")).encode())
        self.counters["acks_ok" if ack["ok"] else "acks_failed"] += 1

    # --- connections -------------------------------------------------------------------------------
    def _lost(self, member: _Member, now: float) -> None:
        sock, member.sock = member.sock, None
        if sock is not None:
            try:
                self.epoll.unregister(member.fd)
            except (OSError, ValueError):
                pass
            self.by_fd.pop(member.fd, None)
            sock.close()
        if member.state == CONNECTED:
            self.connected -= 1
        elif member.state == CONNECTING:
            self._connecting -= 1
        member.fd = -1
        member.state = DISCONNECTED
        member.watch_out = False
        member.inbuf.clear()
        member.outbuf.clear()
        self._dirty.pop(id(member), None)
        if self.opts.clean_session:
            member.inflight.clear()
        self._schedule_reconnect(member, now)

    def _schedule_reconnect(self, member: _Member, now: float) -> None:
        member.backoff = min(member.backoff * 2, 30.0)
        self.counters["reconnects"] += 1
        heapq.heappush(self._reconnects, (now + member.backoff * random.uniform(0.5, 1.0), id(member), member))

    def _address_of_broker(self) -> tuple[Any, ...]:
        if self._address is None:
            family, _, _, _, address = socket.getaddrinfo(self.opts.host, self.opts.port, type=socket.SOCK_STREAM)[0]
            self._address = (family, address)
        return self._address

    def _connect_some(self, now: float) -> None:
        while self._reconnects and self._reconnects[0][0] <= now:
            _, _, member = heapq.heappop(self._reconnects)
            self._connect_queue.append(member)
        budget = self.opts.connect_window - self._connecting
        while budget > 0 and self._connect_queue:
            member = self._connect_queue.popleft()
            budget -= 1
            try:
                family, address = self._address_of_broker()
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                self.counters["connect_errors"] += 1
                self._schedule_reconnect(member, now)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.opts.record:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                self.counters["connect_errors"] += 1
                self._schedule_reconnect(member, now)
                continue
            member.sock = sock
            member.fd = sock.fileno()
            member.state = CONNECTING
            self._connecting += 1
            self.by_fd[member.fd] = member
            member.outbuf += wire.connect(member.ven.ven_id, self.opts.keepalive_s, self.opts.clean_session)
            member.watch_out = True  # writable once the TCP connect completes
            self.epoll.register(member.fd, _IN | _OUT)

    # --- loop --------------------------------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback
        self.epoll.register(fd, select.EPOLLIN)

    def poll(self, timeout: float) -> None:
        """One round: read every ready socket, answer the commands read, send, then paced connects,
        due telemetry and keepalive for a slice of the clients."""
        events = self.epoll.poll(timeout, 4096)
        now = time.monotonic()
        if self.opts.record:
            self._real_to_mono = now - time.time()
        for fd, ev in events:
            reader = self.readers.get(fd)
            if reader is not None:
                reader()
                continue
            member = self.by_fd.get(fd)
            if member is None:
                continue
            if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP):
                self._read(member, now)
            if ev & _OUT and member.sock is not None:
                self._dirty[id(member)] = member
        pending, self._pending = self._pending, []
        delay = self.opts.ack_delay_s
        if delay > 0:
            self._delayed.extend(pending)
            pending = []
            due = now - delay
            while self._delayed and self._delayed[0][3] <= due:
                pending.append(self._delayed.popleft())
        for member, payload, read, arrived in pending:
            if member.state == CONNECTED:
                self._answer(member, payload, read, arrived)
        if self._connect_queue or self._reconnects:
            self._connect_some(now)
        self._send_telemetry(now)
        self._keepalive(now)
        dirty, self._dirty = self._dirty, {}
        for member in dirty.values():
            self._flush(member, now)
        if pending:
            done = time.monotonic()
            self.ack_ms.extend((done - arrived) * 1000.0 for _, _, _, arrived in pending)

    def _send_telemetry(self, now: float) -> None:
        heap = self._telemetry
        interval = self.opts.telemetry_interval_s
        sent = 0
        while heap and heap[0][0] <= now and sent < 2000:
            due, i, member = heapq.heappop(heap)
            heapq.heappush(heap, (due + interval, i, member))
            if member.state != CONNECTED:
                continue
            payload = json.dumps(member.ven.telemetry(), separators=(",", ":")).encode()
            self._publish(member, member.tel_topic, payload)
            if self.opts.meter:
                self._publish(member, member.meter_topic, payload)
            self.counters["telemetry"] += 1
            sent += 1

    def _keepalive(self, now: float) -> None:
        if now < self._misc_at:
            return
        self._misc_at = now + 0.2
        n = len(self.members)
        chunk = max(1, n // 25)  # every client about every 5 s
        idle = self.opts.keepalive_s / 2.0
        for _ in range(chunk):
            member = self.members[self._misc_index]
            self._misc_index = (self._misc_index + 1) % n
            if member.state == CONNECTED and now - member.last_out >= idle:
                self._queue(member, wire.PINGREQ_PACKET)

    def next_timeout(self) -> float:
        now = time.monotonic()
        wake = now + 0.2
        if self._telemetry:
            wake = min(wake, self._telemetry[0][0])
        if self._reconnects:
            wake = min(wake, self._reconnects[0][0])
        if self._delayed:
            wake = min(wake, self._delayed[0][3] + self.opts.ack_delay_s)
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
            sock, member.sock = member.sock, None
            if sock is None:
                continue
            if member.state == CONNECTED:
                try:
                    sock.send(bytes(member.outbuf) + wire.DISCONNECT_PACKET)
                except OSError:
                    pass
            sock.close()
        self.epoll.close()

    def snapshot(self) -> dict[str, Any]:
        """Counters and raw latency lists (the caller summarises; lists are moved out)."""
        out = {"vens": len(self.members), "connected": self.connected, "counters": dict(self.counters),
               "byOp": dict(self.commands_by_op), "deliveryMs": self.delivery_ms, "ackMs": self.ack_ms,
               "connectS": (self.all_connected_at - self.started_at) if self.all_connected_at else None}
        self.delivery_ms, self.ack_ms = [], []
        return out
