"""The fleet split over worker processes (each one epoll loop), with stats and command receipts sent back to
the parent over pipes; and the summary of a run."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

from dr_tools.fleet.sim import Fleet, FleetOptions


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-int(pct * len(ordered)) // 100)))
    return ordered[rank - 1]


class Totals:
    """Aggregated figures of all workers (or of the one in-process fleet)."""

    def __init__(self) -> None:
        self._counters: dict[int, dict[str, int]] = {}
        self._ops: dict[int, dict[str, int]] = {}
        self.delivery_ms: list[float] = []
        self.ack_ms: list[float] = []
        self.connected: dict[int, int] = {}
        self.connect_s: dict[int, float | None] = {}

    def add(self, worker: int, snap: dict[str, Any]) -> None:
        """A worker's snapshot: counters are cumulative, latency lists are new since its last snapshot."""
        self.connected[worker] = snap["connected"]
        self.connect_s[worker] = snap["connectS"]
        self._counters[worker] = dict(snap["counters"])
        self._ops[worker] = dict(snap["byOp"])
        self.delivery_ms.extend(snap["deliveryMs"])
        self.ack_ms.extend(snap["ackMs"])

    @property
    def counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self._counters.values():
            total.update(c)
        return total

    @property
    def by_op(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self._ops.values():
            total.update(c)
        return total

    @property
    def connected_total(self) -> int:
        return sum(self.connected.values())

    def summary_lines(self, vens: int, procs: int, ran_s: float) -> list[str]:
        c = self.counters
        connect = [s for s in self.connect_s.values() if s is not None]
        all_in = len(connect) == len(self.connect_s) and connect
        ops = ", ".join(f"{op} {n:,}" for op, n in sorted(self.by_op.items())) or "none"

        def lat(values: list[float]) -> str:
            if not values:
                return "n/a"
            return (f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms, "
                    f"max {max(values):.1f} ms (n={len(values):,})")

        return [
            f"VEN fleet: {vens:,} VENs in {procs} process(es), ran {ran_s:.1f} s",
            f"connected: {self.connected_total:,}/{vens:,}"
            + (f" (all within {max(connect):.2f} s of start)" if all_in else "")
            + f"; reconnects {c['reconnects']:,}; connect errors {c['connect_errors']:,}"
            + f"; refused {c['connect_refused']:,}",
            f"commands seen: {c['commands']:,} ({ops}); acks sent: ok {c['acks_ok']:,}, failed {c['acks_failed']:,}",
            f"telemetry reports sent: {c['telemetry']:,}",
            f"command delivery (issuedAt -> received): {lat(self.delivery_ms)}",
            f"ack turnaround (received -> ack written): {lat(self.ack_ms)}",
        ]


def _worker(opts: FleetOptions, conn: Connection, index: int) -> None:
    fleet = Fleet(opts)
    state = {"stop": False}

    def on_control() -> None:
        while conn.poll():
            msg = conn.recv()
            if msg[0] == "stop":
                state["stop"] = True
            elif msg[0] == "drain":  # ("drain", ack_prefix or None)
                if len(msg) > 1 and msg[1]:
                    fleet.set_ack_prefix(msg[1])
                conn.send(("log", index, fleet.recv_log))
                fleet.recv_log = []

    fleet.add_reader(conn.fileno(), on_control)
    try:
        fleet.run(lambda: state["stop"], lambda f: conn.send(("stats", index, f.snapshot())), 1.0)
        conn.send(("stats", index, fleet.snapshot()))
    finally:
        fleet.close()
        conn.send(("done", index))


class FleetProcesses:
    """`procs` worker processes sharing `opts.count` VENs (consecutive ids)."""

    def __init__(self, opts: FleetOptions, procs: int) -> None:
        self.opts = opts
        self.procs = max(1, min(procs, opts.count))
        self.totals = Totals()
        self._conns: list[Connection] = []
        self._procs: list[mp.Process] = []
        self._logs: dict[int, list[tuple[str, float, float]]] = {}
        self._done: set[int] = set()

    def start(self) -> FleetProcesses:
        ctx = mp.get_context("fork")
        base, extra = divmod(self.opts.count, self.procs)
        first = self.opts.first_index
        for i in range(self.procs):
            n = base + (1 if i < extra else 0)
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(replace(self.opts, count=n, first_index=first), child, i),
                            daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
            first += n
        return self

    def pump(self, timeout: float = 0.0) -> None:
        for conn in wait(self._conns, timeout):
            while conn.poll():
                try:
                    msg = conn.recv()
                except EOFError:
                    break
                if msg[0] == "stats":
                    self.totals.add(msg[1], msg[2])
                elif msg[0] == "log":
                    self._logs[msg[1]] = msg[2]
                elif msg[0] == "done":
                    self._done.add(msg[1])

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if self.totals.connected_total >= self.opts.count:
                return True
        return False

    def drain_receipts(self, timeout: float = 10.0, ack_prefix: str | None = None) -> list[tuple[str, float, float]]:
        """Every (correlationId, arrived at the socket, read by the loop) recorded since the last drain (needs
        opts.record), both monotonic; with `ack_prefix` the VENs ack on <ack_prefix>/<venId> from then on."""
        self._logs = {}
        for conn in self._conns:
            conn.send(("drain", ack_prefix))
        deadline = time.monotonic() + timeout
        while len(self._logs) < len(self._conns) and time.monotonic() < deadline:
            self.pump(0.1)
        out: list[tuple[str, float, float]] = []
        for log in self._logs.values():
            out.extend(log)
        return out

    def stop(self, timeout: float = 15.0) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + timeout
        while len(self._done) < len(self._conns) and time.monotonic() < deadline:
            self.pump(0.1)
        for p in self._procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()


def _bare_publisher(host: str, port: int, qos: int, ack_filter: str, conn: Connection) -> None:
    """A plain paho client in a process of its own: publishes what it is given back to back (paho's own
    network thread, unlimited in-flight) and records acks arriving on `ack_filter`."""
    import json as _json
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    acks: list[tuple[str, float]] = []
    lock = threading.Lock()
    ready = threading.Event()

    def on_message(client, userdata, msg):
        now = time.monotonic()
        try:
            corr = _json.loads(msg.payload).get("correlationId")
        except ValueError:
            return
        with lock:
            acks.append((corr, now))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-publisher-{port}")
    client.max_inflight_messages_set(0)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe(ack_filter, qos=qos)
    client.on_subscribe = lambda *a: ready.set()
    client.connect(host, port, keepalive=600)
    client.loop_start()
    ready.wait(10)
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg[0] == "publish":
            items = msg[1]
            t0 = time.monotonic()
            for topic, payload in items:
                client.publish(topic, payload, qos=qos)
            conn.send(("published", t0, time.monotonic()))
        elif msg[0] == "acks":
            with lock:
                out, acks[:] = list(acks), []
            conn.send(("acks", out))
        elif msg[0] == "stop":
            break
    client.disconnect()
    client.loop_stop()


class BarePublisher:
    """The raw baseline: a bare paho publisher in its own process (started before gevent is imported)."""

    def __init__(self, host: str, port: int, qos: int = 1, ack_filter: str = "ven/ack/+") -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_bare_publisher, args=(host, port, qos, ack_filter, child), daemon=True)
        self._proc.start()
        child.close()

    def wait_ready(self, timeout: float = 15.0) -> None:
        if not self._conn.poll(timeout) or self._conn.recv()[0] != "ready":
            raise RuntimeError("the bare publisher did not connect")

    def publish(self, items: list[tuple[str, str]]) -> None:
        self._conn.send(("publish", items))

    def result(self, timeout: float = 60.0) -> tuple[float, float] | None:
        """(t0, t_end) of the last publish loop, or None if not finished yet (non-blocking with timeout 0)."""
        if not self._conn.poll(timeout):
            return None
        kind, t0, t_end = self._conn.recv()
        return t0, t_end

    def acks(self) -> list[tuple[str, float]]:
        self._conn.send(("acks",))
        return self._conn.recv()[1]

    def stop(self) -> None:
        try:
            self._conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()


def _counting_subscriber(host: str, port: int, filters: list[str], count: Any, ready: Any) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    def on_message(client, userdata, msg):
        with count.get_lock():
            count.value += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-counter-{port}")
    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe([(t, 1) for t in filters])
    client.on_subscribe = lambda *a: ready.set()
    client.connect(host, port, keepalive=600)
    client.loop_forever()


class CountingSubscriber:
    """The raw inbound baseline: a bare paho subscriber in a process of its own, counting what it receives."""

    def __init__(self, host: str, port: int, filters: list[str]) -> None:
        ctx = mp.get_context("fork")
        self._count = ctx.Value("q", 0)
        self._ready = ctx.Event()
        self._proc = ctx.Process(target=_counting_subscriber, args=(host, port, filters, self._count, self._ready),
                                 daemon=True)
        self._proc.start()

    def wait_ready(self, timeout: float = 15.0) -> None:
        if not self._ready.wait(timeout):
            raise RuntimeError("the counting subscriber did not subscribe")

    @property
    def count(self) -> int:
        return int(self._count.value)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.join(timeout=5)
