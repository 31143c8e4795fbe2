"""The bridge core against a clusterable broker: nats-server's MQTT listener (JetStream, started by each test on
free ports). QoS 1 both ways, a persistent session that keeps commands for a VEN bridge while it is away, and
a broker outage with store-and-forward (nothing lost, nothing repeated, order kept per VEN); then the limits of
NATS's MQTT that a deployment meets (QoS 2, `$share`, characters in topics), asserted so that a NATS release
that changes them shows up here.

As in test_mqtt_link.py the core runs in the test process (everything but the thin VOLTTRON agent) and the
bus side is a recording port."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import gevent
import pytest

try:  # run the core as it runs inside the agent: with gevent's socket/ssl/os patches of volttron.client
    import volttron.client  # noqa: F401
except ImportError:
    pass

from paho.mqtt.enums import CallbackAPIVersion

from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore
from dr_tools.fleet.probe import NativeClient, Probe

from tests.integration.test_mqtt_link import RecordingBus, wait
from tests.support.nats import NatsServer, require_nats_server

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]


@pytest.fixture
def nats(tmp_path):
    require_nats_server()
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def _core(tmp_path: Path, name: str, bus: RecordingBus, port: int, **cfg) -> BridgeCore:
    cfg.setdefault("store", {"path": str(tmp_path / f"{name}.sqlite")})
    broker = {"port": port, "client_id": name, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
    broker.update(cfg.pop("broker", {}))
    core = BridgeCore(parse_config(dict(cfg, broker=broker)), bus)
    core.start()
    return core


class QosRecorder:
    """A paho subscriber that records (topic, payload, QoS of delivery)."""

    def __init__(self, port: int, client_id: str, filters: list[str]) -> None:
        self.got: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = NativeClient(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in filters])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), f"{client_id} did not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.got.append((msg.topic, msg.payload, msg.qos))

    def snapshot(self) -> list[tuple[str, bytes, int]]:
        with self._lock:
            return list(self.got)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_qos1_both_ways_through_nats(tmp_path, nats):
    vens = ["nq-1", "nq-2", "nq-3"]
    vtn_bus, ven_buses = RecordingBus(), {v: RecordingBus() for v in vens}
    vtn = _core(tmp_path, "nats-vtn", vtn_bus, nats.port, batch={"max_items": 50, "max_delay_ms": 20})
    ven_cores = {v: _core(tmp_path, v, ven_buses[v], nats.port, mode="ven", ven_id=v) for v in vens}
    watcher = QosRecorder(nats.port, "nats-watcher", ["ven/cmd/+", "ven/ack/+"])
    cores = [vtn, *ven_cores.values()]
    try:
        wait(lambda: all(c.connected for c in cores), 15, "bridges connected to nats-server")
        gevent.sleep(0.5)  # the VEN bridges' subscriptions are in place (NATS makes a JetStream consumer each)
        result = vtn.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": v, "op": "ping", "correlationId": f"q:{v}:{i}", "issuedAt": f"{i}"}
            for i in range(20) for v in vens]})
        assert result["sent"] == 60 and result["rejected"] == 0
        for v in vens:
            wait(lambda v=v: len(ven_buses[v].on(f"dr/cmd/{v}")) >= 20, 15, f"commands at {v}'s bus")
            ven_cores[v].on_bus_message(f"dr/ack/{v}", {"correlationId": f"q:{v}:19", "op": "ping", "ok": True,
                                                        "ts": 1_790_000_000_000})
        acks = wait(lambda: (a := vtn_bus.items("dr/batch/ack")) and len(a) >= 3 and a, 15, "acks on the VTN's bus")
        gevent.sleep(0.5)  # anything repeated would arrive now
        for v in vens:
            cmds = ven_buses[v].on(f"dr/cmd/{v}")
            assert [c["correlationId"] for c in cmds] == [f"q:{v}:{i}" for i in range(20)]
            assert all(c["venId"] == v for c in cmds)
        assert sorted((a["venId"], a["correlationId"]) for a in vtn_bus.items("dr/batch/ack")) == \
            [(v, f"q:{v}:19") for v in vens]
        assert all(a["ok"] is True for a in acks)
        seen = watcher.snapshot()
        assert len([t for t, _, _ in seen if t.startswith("ven/cmd/")]) == 60
        assert len([t for t, _, _ in seen if t.startswith("ven/ack/")]) == 3
        assert {q for _, _, q in seen} == {1}, "NATS delivered at another QoS than 1"
        wait(lambda: all(c.status()["unacknowledged"] == 0 for c in cores), 10, "every publish acknowledged")
        assert vtn.status()["messagesAcked"] >= 60
        for c in cores:
            assert c.status()["rejectsTotal"] == 0, c.status()["rejects"]
            assert c.status()["backlog"] == 0
    finally:
        watcher.stop()
        for c in cores:
            c.stop()


def test_persistent_session_keeps_commands_for_an_absent_ven_bridge(tmp_path, nats, figure):
    ven_id = "np-1"
    vtn_bus = RecordingBus()
    vtn = _core(tmp_path, "nats-vtn-p", vtn_bus, nats.port)
    first_bus = RecordingBus()
    ven = _core(tmp_path, ven_id, first_bus, nats.port, mode="ven", ven_id=ven_id)
    cores = [vtn, ven]
    try:
        wait(lambda: vtn.connected and ven.connected, 15, "bridges connected")
        gevent.sleep(0.5)
        vtn.on_bus_message("dr/batch/cmd", {"commands": [{"venId": ven_id, "op": "ping", "correlationId": "before"}]})
        wait(lambda: first_bus.on(f"dr/cmd/{ven_id}"), 10, "a command while the VEN bridge is up")
        ven.stop()  # the VEN's platform goes away; its session (clean_session false) stays at the broker

        n = 200
        vtn.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": ven_id, "op": "ping", "correlationId": f"away-{i}"} for i in range(n)]})
        wait(lambda: vtn.status()["unacknowledged"] == 0 and vtn.status()["backlog"] == 0, 10,
             "NATS acknowledged the commands for the absent VEN")
        # nats-server restarts while the VEN is still away: the session and its queue are in JetStream's store
        nats.stop()
        nats.start()
        wait(lambda: vtn.connected, 15, "VTN bridge back on the restarted server")

        back_bus = RecordingBus()
        t = time.monotonic()
        back = _core(tmp_path, ven_id, back_bus, nats.port, mode="ven", ven_id=ven_id)
        cores.append(back)
        got = wait(lambda: (m := back_bus.on(f"dr/cmd/{ven_id}")) and len(m) >= n and m, 20,
                   "the queued commands after the VEN bridge returned")
        took = time.monotonic() - t
        gevent.sleep(0.5)
        got = back_bus.on(f"dr/cmd/{ven_id}")
        assert [m["correlationId"] for m in got] == [f"away-{i}" for i in range(n)]
        assert [m["correlationId"] for m in first_bus.on(f"dr/cmd/{ven_id}")] == ["before"]
        figure("NATS persistent session", f"{n} commands queued for an absent VEN bridge across a nats-server "
               f"restart, all delivered in order {took:.2f} s after it reconnected")
    finally:
        for c in cores:
            c.stop()


def test_a_ven_id_with_a_dot_is_refused_by_config_not_by_a_reconnect_loop(tmp_path, nats):
    """nats-server closes the connection of a client publishing to a topic with '.'; paho resends the message
    after each reconnect, so without broker.refused_topic_chars one such command would hold up the link."""
    watcher = QosRecorder(nats.port, "dot-watcher", ["ven/cmd/+"])
    bus = RecordingBus()
    core = _core(tmp_path, "nats-vtn-dot", bus, nats.port, broker={"refused_topic_chars": ". "})
    try:
        wait(lambda: core.connected, 15, "bridge connected")
        result = core.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": v, "op": "ping", "correlationId": f"d:{v}"} for v in ("ok-1", "site.a", "ok-2")]})
        assert result == {"sent": 2, "queued": 0, "refused": 0, "rejected": 1}
        got = wait(lambda: (m := watcher.snapshot()) and len(m) >= 2 and m, 10, "the two commands NATS accepts")
        assert [t for t, _, _ in got] == ["ven/cmd/ok-1", "ven/cmd/ok-2"]
        gevent.sleep(1.0)
        status = core.status()
        assert status["connects"] == 1 and status["disconnects"] == 0
        assert status["rejects"] == {"topic_refused": 1} and status["unacknowledged"] == 0
    finally:
        watcher.stop()
        core.stop()


VENS = [f"nout-{i}" for i in range(4)]
ROUNDS = 60
ROUND_INTERVAL_S = 0.2
OUTAGE_AT_S = 3.0
OUTAGE_S = 6.0


@pytest.mark.slow
def test_nats_outage_loses_nothing_and_repeats_nothing(tmp_path, nats, figure):
    vtn_bus = RecordingBus()
    ven_buses = {v: RecordingBus() for v in VENS}
    vtn = _core(tmp_path, "nats-vtn-o", vtn_bus, nats.port, batch={"max_items": 50, "max_delay_ms": 20})
    vens = {v: _core(tmp_path, v, ven_buses[v], nats.port, mode="ven", ven_id=v) for v in VENS}
    cores = [vtn, *vens.values()]
    try:
        wait(lambda: all(c.connected for c in cores), 15, "all bridges connected")
        gevent.sleep(0.5)
        peak = {"vtn": 0, "ven": 0}
        t0 = time.monotonic()
        stopped_at = restarted_at = None
        for r in range(ROUNDS):
            if stopped_at is None and time.monotonic() - t0 >= OUTAGE_AT_S:
                nats.stop()
                stopped_at = time.monotonic()
            if stopped_at is not None and restarted_at is None and time.monotonic() - stopped_at >= OUTAGE_S:
                nats.start()
                restarted_at = time.monotonic()
            vtn.on_bus_message("dr/batch/cmd", {"commands": [
                {"venId": v, "op": "ping", "correlationId": f"cmd-{v}-{r}", "issuedAt": f"{r}"} for v in VENS]})
            for v in VENS:
                vens[v].on_bus_message(f"dr/ack/{v}", {"correlationId": f"ack-{v}-{r}", "op": "ping", "ok": True,
                                                       "ts": 1_790_000_000_000 + r})
            peak["vtn"] = max(peak["vtn"], vtn.status()["backlog"])
            peak["ven"] = max(peak["ven"], max(c.status()["backlog"] for c in vens.values()))
            gevent.sleep(max(0.0, t0 + (r + 1) * ROUND_INTERVAL_S - time.monotonic()))
        assert stopped_at is not None and restarted_at is not None, "the flow ended before the outage did"

        expected = ROUNDS * len(VENS)

        def complete() -> bool:
            cmds = sum(len(ven_buses[v].on(f"dr/cmd/{v}")) for v in VENS)
            return len(vtn_bus.items("dr/batch/ack")) >= expected and cmds >= expected

        t = time.monotonic()
        wait(complete, 60, "every message delivered after nats-server came back")
        catch_up = time.monotonic() - t
        gevent.sleep(1.0)  # anything duplicated would arrive now
        acks = vtn_bus.items("dr/batch/ack")
        for v in VENS:
            assert [a["correlationId"] for a in acks if a["venId"] == v] == [f"ack-{v}-{r}" for r in range(ROUNDS)], \
                f"acks of {v}: lost, repeated or out of order"
            cmds = ven_buses[v].on(f"dr/cmd/{v}")
            assert [m["correlationId"] for m in cmds] == [f"cmd-{v}-{r}" for r in range(ROUNDS)], \
                f"commands of {v}: lost, repeated or out of order"
        assert peak["vtn"] > 0 and peak["ven"] > 0, "the outage did not go through the outboxes"
        wait(lambda: all(c.status()["backlog"] == 0 for c in cores), 15, "outboxes emptied")
        dups = sum(c.status()["duplicates"] for c in cores)
        figure("NATS outage test: outage / catch-up after restart",
               f"{restarted_at - stopped_at:.1f} s / {catch_up:.1f} s; peak outbox VTN {peak['vtn']}, "
               f"VEN {peak['ven']}; {dups} QoS 1 redeliveries dropped by dedup")
        for c in cores:
            assert c.status()["rejectsTotal"] == 0, c.status()["rejects"]
    finally:
        for c in cores:
            c.stop()


def _disconnects(client_id: str, port: int, action) -> bool:
    """Runs `action(probe)` on a fresh connection; True when the server then closed the connection."""
    lost = threading.Event()
    probe = Probe(port=port, client_id=client_id)
    probe.client.on_disconnect = lambda *a: lost.set()
    probe.client.reconnect_delay_set(60, 60)  # no resend of the offending packet within the check
    probe.start()
    try:
        action(probe)
        return lost.wait(3)
    finally:
        probe.stop()


def test_limits_of_nats_mqtt_the_readme_names(tmp_path, nats):
    watcher = QosRecorder(nats.port, "limits-watcher", ["lim/#", "ven/status/+"])
    try:
        # QoS 2 is refused: the server closes the connection of a client that publishes at QoS 2
        assert _disconnects("lim-qos2", nats.port, lambda p: p.publish("lim/q2", "x", qos=2))
        # a topic with '.' or ' ' is refused the same way ('.' separates NATS subject tokens)
        assert _disconnects("lim-dot", nats.port, lambda p: p.publish("lim/a.b", "x", qos=1))
        assert not _disconnects("lim-ok", nats.port, lambda p: p.publish("lim/a-b_c:d", "x", qos=1))
        # retained messages are kept (the VEN bridge's online status)
        publisher = Probe(port=nats.port, client_id="lim-pub").start()
        probes = [publisher]
        publisher.publish("ven/status/r1", '{"online": true}', retain=True)
        wait(lambda: any(t == "ven/status/r1" for t, _, _ in watcher.snapshot()), 5, "the retained publish")
        late = Probe(port=nats.port, client_id="lim-late", subscriptions=["ven/status/+"]).start()
        probes.append(late)
        wait(lambda: late.snapshot("ven/status/r1"), 5, "the retained message for a later subscriber")
        # a shared subscription ($share/<group>/...) is a plain filter that matches nothing in NATS 2.9
        shared = Probe(port=nats.port, client_id="lim-share", subscriptions=["$share/g/lim/+"]).start()
        probes.append(shared)
        publisher.publish("lim/s1", "to the group")
        wait(lambda: any(t == "lim/s1" for t, _, _ in watcher.snapshot()), 5, "the publish to lim/s1")
        gevent.sleep(0.5)
        assert shared.snapshot() == []
        # a second connection with a client id in use takes over the session (MQTT's rule)
        first = Probe(port=nats.port, client_id="lim-dup")
        first.client.reconnect_delay_set(60, 60)
        probes.append(first.start())
        second = Probe(port=nats.port, client_id="lim-dup").start()
        probes.append(second)
        wait(lambda: not first.client.is_connected(), 5, "the first connection replaced")
        assert second.client.is_connected()
        for probe in probes:
            probe.stop()
    finally:
        watcher.stop()
