"""The bridge core against real Mosquitto brokers of the test's own: mutual TLS, and a 30 s broker outage
while 500 messages flow each way (store-and-forward, exactly once after dedup, order kept per VEN).

These run the bridge's core (everything but the thin VOLTTRON agent) in the test process; the bus side is a
recording port. test_mqtt_platform.py covers the agent on the real platform."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gevent
import pytest

try:  # run the core as it runs inside the agent: with gevent's socket/ssl/os patches of volttron.client
    import volttron.client  # noqa: F401
except ImportError:  # the plain-core tests also run without VOLTTRON installed
    pass

from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore

from dr_tools.fleet.brokers import Mosquitto, make_certs  # noqa: E402
from dr_tools.fleet.probe import Probe, tls_context  # noqa: E402

from tests.integration.test_broker_acl import ACL, CONF_DIR, ShippedBroker, fleet_certs

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]


class RecordingBus:
    def __init__(self) -> None:
        self.messages: list[tuple[str, object]] = []

    def publish(self, topic: str, message: object) -> None:
        self.messages.append((topic, message))

    def items(self, topic: str) -> list[dict]:
        out = []
        for t, m in self.messages:
            if t == topic:
                out.extend(m["items"])
        return out

    def on(self, topic: str) -> list[object]:
        return [m for t, m in self.messages if t == topic]


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        gevent.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _core(tmp_path: Path, name: str, bus: RecordingBus, **cfg) -> BridgeCore:
    cfg.setdefault("store", {"path": str(tmp_path / f"{name}.sqlite")})
    core = BridgeCore(parse_config(cfg), bus)
    core.start()
    return core


# --- mutual TLS -----------------------------------------------------------------------------------
def test_bridge_connects_with_mutual_tls_and_a_client_without_certificate_is_refused(tmp_path):
    # the broker runs the shipped configuration (platform-config/mosquitto: mutual TLS, CN as username, the ACL)
    fleet = fleet_certs(tmp_path / "certs", ["dr-vtn-bridge", "tls-ven"])
    broker = ShippedBroker(tmp_path / "broker", CONF_DIR / "volttron-dr-mtls.conf", {
        "cafile": fleet["ca"][0], "certfile": fleet["server"][0], "keyfile": fleet["server"][1],
        "acl_file": str(ACL)}).start()
    untrusted = make_certs(tmp_path / "other")
    cores: list[BridgeCore] = []
    probes: list[Probe] = []
    try:
        bus = RecordingBus()
        ca = fleet["ca"][0]
        tls = {"ca_file": ca, "cert_file": fleet["dr-vtn-bridge"][0], "key_file": fleet["dr-vtn-bridge"][1]}
        core = _core(tmp_path, "tls", bus, broker={"port": broker.port, "client_id": "dr-vtn-bridge", "tls": tls,
                                                    "reconnect_max_s": 1})
        cores.append(core)
        wait(lambda: core.connected, 15, "bridge connected with mTLS")
        assert core.status()["tls"] is True

        ven = Probe(port=broker.port, client_id="tls-ven", subscriptions=["ven/cmd/tls-ven"],
                    tls=tls_context(ca, *fleet["tls-ven"])).start()
        probes.append(ven)
        core.on_bus_message("dr/batch/cmd", {"commands": [{"venId": "tls-ven", "op": "ping", "correlationId": "t1"}]})
        wait(lambda: ven.snapshot("ven/cmd/"), 10, "command over mTLS")
        assert json.loads(ven.snapshot()[0][1])["correlationId"] == "t1"
        ven.publish("ven/ack/tls-ven", json.dumps({"correlationId": "t1", "ok": True, "op": "ping"}))
        acks = wait(lambda: bus.items("dr/batch/ack"), 10, "ack over mTLS on the bus")
        assert acks[0]["venId"] == "tls-ven" and acks[0]["correlationId"] == "t1"

        # a client without a certificate: the TLS handshake is refused
        anonymous = Probe(port=broker.port, client_id="no-cert", tls=tls_context(ca))
        with pytest.raises(OSError):
            anonymous.start(timeout=5)
        # the bridge configured without its certificate never gets connected, and says why
        bare = _core(tmp_path, "bare", RecordingBus(), broker={
            "port": broker.port, "client_id": "no-cert-bridge", "tls": {"ca_file": ca},
            "reconnect_min_s": 0.2, "reconnect_max_s": 0.5})
        cores.append(bare)
        wait(lambda: bare.status()["connectFailures"] + bare.status()["disconnects"] >= 2, 15,
             "the certificate-less bridge was refused")
        assert not bare.connected and bare.status()["connects"] == 0
        assert bare.health()["status"] == "BAD"
        # a server certificate from a CA the bridge does not trust is refused too
        wrong_ca = _core(tmp_path, "wrong", RecordingBus(), broker={
            "port": broker.port, "client_id": "wrong-ca-bridge", "reconnect_min_s": 0.2, "reconnect_max_s": 0.5,
            "tls": dict(tls, ca_file=str(untrusted.other_ca))})
        cores.append(wrong_ca)
        wait(lambda: wrong_ca.status()["connectFailures"] >= 2, 15, "untrusted server refused")
        assert wrong_ca.status()["connects"] == 0
        assert "peer did not return a certificate" in broker.log_tail(200)
    finally:
        for p in probes:
            p.stop()
        for c in cores:
            c.stop()
        broker.stop()


# --- 30 s outage, 500 messages each way ---------------------------------------------------------
VENS = [f"fault-{i}" for i in range(5)]
ROUNDS = 100            # per VEN, each way: 5 x 100 = 500 commands out and 500 acks in
ROUND_INTERVAL_S = 0.45  # the flow lasts ~45 s
OUTAGE_AT_S = 8.0
OUTAGE_S = 30.0


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_keeps_order(tmp_path, figure):
    broker = Mosquitto(tmp_path / "broker").start()
    common = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "port": broker.port}
    vtn_bus = RecordingBus()
    ven_buses = {v: RecordingBus() for v in VENS}
    vtn = _core(tmp_path, "vtn", vtn_bus, broker=dict(common, client_id="fault-vtn"),
                batch={"max_items": 50, "max_delay_ms": 20})
    vens = {v: _core(tmp_path, v, ven_buses[v], mode="ven", ven_id=v, broker=dict(common, client_id=f"fault-{v}"))
            for v in VENS}
    cores = [vtn, *vens.values()]
    try:
        wait(lambda: all(c.connected for c in cores), 15, "all bridges connected")
        max_backlog = {"vtn": 0, "ven": 0}
        t0 = time.monotonic()
        stopped_at = restarted_at = None
        for r in range(ROUNDS):
            elapsed = time.monotonic() - t0
            if stopped_at is None and elapsed >= OUTAGE_AT_S:
                broker.stop()
                stopped_at = time.monotonic()
            if stopped_at is not None and restarted_at is None and time.monotonic() - stopped_at >= OUTAGE_S:
                broker.start()
                restarted_at = time.monotonic()
            vtn.on_bus_message("dr/batch/cmd", {"commands": [
                {"venId": v, "op": "ping", "correlationId": f"cmd-{v}-{r}", "issuedAt": f"{r}"} for v in VENS]})
            for v in VENS:
                vens[v].on_bus_message(f"dr/ack/{v}", {"correlationId": f"ack-{v}-{r}", "op": "ping", "ok": True,
                                                       "ts": 1_790_000_000_000 + r})
            max_backlog["vtn"] = max(max_backlog["vtn"], vtn.status()["backlog"])
            max_backlog["ven"] = max(max_backlog["ven"], max(c.status()["backlog"] for c in vens.values()))
            gevent.sleep(max(0.0, t0 + (r + 1) * ROUND_INTERVAL_S - time.monotonic()))
        assert stopped_at is not None and restarted_at is not None, "the flow ended before the outage did"
        outage = restarted_at - stopped_at
        assert outage >= OUTAGE_S

        def complete():
            acks = vtn_bus.items("dr/batch/ack")
            cmds = sum(len(ven_buses[v].on(f"dr/cmd/{v}")) for v in VENS)
            return len(acks) >= ROUNDS * len(VENS) and cmds >= ROUNDS * len(VENS)

        t_restart = time.monotonic()
        wait(complete, 60, "every message delivered after the broker came back")
        catch_up = time.monotonic() - t_restart
        gevent.sleep(1.0)  # anything duplicated would arrive now

        acks = vtn_bus.items("dr/batch/ack")
        for v in VENS:
            got = [a["correlationId"] for a in acks if a["venId"] == v]
            assert got == [f"ack-{v}-{r}" for r in range(ROUNDS)], f"acks of {v}: lost, repeated or out of order"
            cmds = [m["correlationId"] for m in ven_buses[v].on(f"dr/cmd/{v}")]
            assert cmds == [f"cmd-{v}-{r}" for r in range(ROUNDS)], f"commands of {v}: lost, repeated or reordered"
            assert all(m["venId"] == v for m in ven_buses[v].on(f"dr/cmd/{v}"))
        # the outage really went through the SQLite outboxes, and they are empty again
        assert max_backlog["vtn"] > 0 and max_backlog["ven"] > 0
        wait(lambda: all(c.status()["backlog"] == 0 for c in cores), 15, "outboxes emptied")
        dups = vtn.status()["duplicates"] + sum(c.status()["duplicates"] for c in vens.values())
        figure("MQTT outage test: outage / catch-up after restart",
               f"{outage:.1f} s / {catch_up:.1f} s; peak outbox VTN {max_backlog['vtn']}, VEN {max_backlog['ven']}; "
               f"{dups} QoS 1 redeliveries dropped by dedup")
        for c in cores:
            assert c.status()["rejectsTotal"] == 0, c.status()["rejects"]
    finally:
        for c in cores:
            c.stop()
        broker.stop()


# --- the fleet simulator through the bridge ----------------------------------------------------
def test_fleet_simulator_answers_through_the_bridge(tmp_path, figure):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    bus = RecordingBus()
    core = _core(tmp_path, "fleet-vtn", bus, broker={"port": broker.port, "client_id": "fleet-vtn",
                                                      "clean_session": True}, batch={"max_items": 500})
    n = 300
    sim = subprocess.Popen([sys.executable, str(repo / "scripts" / "ven_fleet_sim.py"), "-n", str(n), "--port",
                            str(broker.port), "--prefix", "fl", "--telemetry-interval", "1", "--duration", "9",
                            "--json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: core.connected, 10, "bridge connected")
        # every VEN reports online through its telemetry before commands go out
        wait(lambda: len({t["venId"] for t in bus.items("dr/batch/telemetry")}) == n, 20, "telemetry from all VENs")
        ids = [f"fl-{i:05d}" for i in range(n)]
        core.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": v, "op": "event", "correlationId": f"ev:{v}", "eventId": "ev", "requestedReductionKw": 2.0,
             "until": "2099-01-01T00:00:00Z"} for v in ids]})
        acks = wait(lambda: (a := bus.items("dr/batch/ack")) and len(a) >= n and a, 20, "acks from every VEN")
        assert sorted(a["venId"] for a in acks) == ids
        assert all(a["ok"] and a["data"]["acceptedReduceKw"] > 0 for a in acks)
        wait(lambda: any(t["eventId"] == "ev" and t["shedPowerKw"] > 0 for t in bus.items("dr/batch/telemetry")),
             10, "telemetry showing the shed")
        wait(lambda: sim.poll() is not None, 30, "the simulator ends after --duration")
        out, err = sim.communicate(timeout=5)
        assert sim.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        sent = summary["counters"]["telemetry"] * 2 + n  # telemetry and meter copies, and the acks
        wait(lambda: core.status()["messagesIn"] >= sent, 15, "the bridge took in everything the fleet sent")
        assert summary["connected"] == n and summary["counters"]["commands"] == n
        assert summary["counters"]["acks_ok"] == n and summary["byOp"] == {"event": n}
        assert summary["counters"]["telemetry"] >= n * 5
        status = core.status()
        assert status["rejectsTotal"] == 0
        # telemetry arrives twice (ven/telemetry and oadr/meter); dedup keeps one of each report
        assert status["messagesIn"] == sent
        assert status["duplicates"] == summary["counters"]["telemetry"]
        figure("fleet sim through the bridge core", f"{n} VENs, {summary['counters']['telemetry']} telemetry reports, "
               f"{status['busPublished']} bus messages for {status['busItems']} items")
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        core.stop()
        broker.stop()


def test_ven_side_last_will_and_birth(tmp_path):
    import socket as _socket

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    watcher = Probe(port=broker.port, client_id="will-watcher", subscriptions=["ven/status/+"]).start()
    core = _core(tmp_path, "will-ven", RecordingBus(), mode="ven", ven_id="will-1",
                 broker={"port": broker.port, "client_id": "will-1", "keepalive_s": 5, "reconnect_min_s": 0.2,
                         "reconnect_max_s": 1})

    def states():
        return [json.loads(p)["online"] for t, p, _ in watcher.snapshot("ven/status/will-1") if p]

    try:
        wait(lambda: states() == [True], 10, "birth message")
        # the connection dies without a DISCONNECT (network loss): the broker publishes the last will
        core.out.link._client.socket().shutdown(_socket.SHUT_RDWR)
        wait(lambda: False in states(), 15, "last will on ven/status/will-1")
        wait(lambda: states()[-1] is True and core.connected, 15, "back online with a new birth message")
        assert states()[:2] == [True, False]
        assert core.status()["connects"] >= 2
    finally:
        watcher.stop()
        core.stop()
        broker.stop()


def test_stop_waits_for_the_broker_to_acknowledge_what_was_sent(tmp_path):
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    probe = Probe(port=broker.port, client_id="stop-probe", subscriptions=["ven/cmd/+"]).start()
    core = _core(tmp_path, "stop-vtn", RecordingBus(), broker={"port": broker.port, "client_id": "stop-vtn"})
    try:
        wait(lambda: core.connected, 10, "bridge connected")
        n = 3000
        result = core.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": f"s{i}", "op": "ping", "correlationId": f"p{i}"} for i in range(n)]})
        assert result["sent"] == n
        core.stop()  # right away: the 3,000 QoS 1 messages are still in flight
        assert core.status()["unacknowledged"] == 0 and core.status()["messagesAcked"] >= n
        wait(lambda: len(probe.snapshot("ven/cmd/")) >= n, 10, "every message reached the subscriber")
    finally:
        core.stop()
        probe.stop()
        broker.stop()


# --- large fan-outs and bursts: written in blocks, read in few wake-ups ---------------------------
def test_a_large_fan_out_is_written_in_blocks_and_a_burst_of_acks_read_in_few_wakes(tmp_path, figure):
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    bus = RecordingBus()
    core = _core(tmp_path, "bulk", bus, broker={"port": broker.port, "client_id": "bulk", "clean_session": True},
                 batch={"max_items": 1000})
    probe = Probe(port=broker.port, client_id="bulk-probe", subscriptions=["ven/cmd/+"]).start()
    client = core.out.link._client
    sends: list[int] = []
    wakes: list[int] = []
    real_send, real_read = client._sock_send, client.loop_read
    client._sock_send = lambda buf: sends.append(len(buf)) or real_send(buf)
    client.loop_read = lambda *a: wakes.append(1) or real_read(*a)
    n = 3000
    ids = [f"bulk-{i:05d}" for i in range(n)]
    try:
        wait(lambda: core.connected, 10, "bridge connected")
        sends.clear()
        shared = {"op": "event", "eventId": "bulk-ev", "requestedReductionKw": 1.0, "until": "2099-01-01T00:00:00Z"}
        result = core.send_batch([{"venId": v, "correlationId": f"bulk-ev:{v}"} for v in ids], shared)
        assert result["sent"] == n and result["rejected"] == 0
        got = wait(lambda: (m := probe.snapshot("ven/cmd/")) and len(m) >= n and m, 20, "every command at the broker")
        gevent.sleep(0.3)
        got = probe.snapshot("ven/cmd/")
        assert [t for t, _, _ in got] == [f"ven/cmd/{v}" for v in ids]  # each once, in order
        payloads = [json.loads(p) for _, p, _ in got]
        assert all(p["eventId"] == "bulk-ev" and p["op"] == "event" and p["until"] == "2099-01-01T00:00:00Z"
                   for p in payloads)
        assert [p["correlationId"] for p in payloads] == [f"bulk-ev:{v}" for v in ids]
        out_sends = len(sends)
        assert out_sends <= n // 20, f"{out_sends} socket writes for {n} commands"

        wakes.clear()
        sends.clear()
        fast_before = client.fast_packets
        for v in ids:
            probe.publish(f"ven/ack/{v}", json.dumps({"correlationId": f"bulk-ev:{v}", "op": "event", "ok": True}))
        acks = wait(lambda: (a := bus.items("dr/batch/ack")) and len(a) >= n and a, 20, "every ack on the bus")
        assert [a["correlationId"] for a in acks] == [f"bulk-ev:{v}" for v in ids]
        assert [a["venId"] for a in acks] == ids
        assert len(wakes) <= n // 2, f"{len(wakes)} read wake-ups for {n} acks"
        # every ack took the fast path but the first packet of each wake-up and those split across two recv()
        # calls (the buffer's boundary; more of them when the machine is loaded and recv returns less): at most 2%
        assert client.fast_packets - fast_before >= n - len(wakes) - n // 50
        in_sends = len(sends)  # the PUBACKs of a read go out together
        assert in_sends <= n // 5, f"{in_sends} socket writes of PUBACKs for {n} acks"
        wait(lambda: core.status()["unacknowledged"] == 0, 10, "the broker acknowledged every command")
        figure("bridge block writes and buffered reads",
               f"{n} commands in {out_sends} socket writes; {n} acks read in {len(wakes)} wake-ups, "
               f"their PUBACKs in {in_sends} writes")
    finally:
        probe.stop()
        core.stop()
        broker.stop()


def test_fleet_simulator_acks_after_its_ack_delay(tmp_path):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    probe = Probe(port=broker.port, client_id="delay-probe", subscriptions=["ven/ack/+"]).start()
    sim = subprocess.Popen([sys.executable, str(repo / "scripts" / "ven_fleet_sim.py"), "-n", "3", "--port",
                            str(broker.port), "--prefix", "dl", "--telemetry-interval", "0", "--duration", "6",
                            "--ack-delay-ms", "400", "--json", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        gevent.sleep(1.5)  # the three VENs connect and subscribe
        sent: dict[str, float] = {}
        for i in range(3):
            ven = f"dl-{i:05d}"
            sent[f"dl:{ven}"] = time.monotonic()
            probe.publish(f"ven/cmd/{ven}", json.dumps({"op": "event", "correlationId": f"dl:{ven}", "venId": ven,
                                                         "requestedReductionKw": 1.0,
                                                         "until": "2099-01-01T00:00:00Z"}))
        acks = wait(lambda: (m := probe.snapshot("ven/ack/")) and len(m) >= 3 and m, 10, "three acks")
        for _, payload, when in acks:
            ack = json.loads(payload)
            assert ack["ok"] is True
            delay = when - sent[ack["correlationId"]]
            assert 0.38 <= delay < 1.5, f"ack {delay * 1000:.0f} ms after the command"
        out, err = sim.communicate(timeout=15)
        assert sim.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["counters"]["acks_ok"] == 3
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        probe.stop()
        broker.stop()


_RECEIPTS_DRIVER = r'''
import json, os, signal, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from dr_tools.fleet.sim import FleetOptions
from dr_tools.fleet.workers import FleetProcesses

port = int(sys.argv[1])
fleet = FleetProcesses(FleetOptions(port=port, count=3, prefix="ts", telemetry_interval_s=0, record=True), 1).start()
assert fleet.wait_connected(20), "fleet did not connect"
acks = []
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="receipts-driver")
client.on_message = lambda c, u, m: acks.append(m.topic)
client.connect("127.0.0.1", port)
client.subscribe([("ven/ack/+", 1), ("bare/ack/+", 1)])
client.loop_start()
time.sleep(0.5)

def send(tag):
    sent = {}
    for i in range(3):
        corr = f"{tag}:ts-{i:05d}"
        sent[corr] = time.monotonic()
        client.publish(f"ven/cmd/ts-{i:05d}", json.dumps({"op": "ping", "correlationId": corr}), qos=1)
    return sent

worker = fleet._procs[0].pid
os.kill(worker, signal.SIGSTOP)  # the simulator is busy elsewhere: commands wait at its sockets
sent = send("a")
time.sleep(0.4)
os.kill(worker, signal.SIGCONT)
time.sleep(0.5)
first = fleet.drain_receipts(ack_prefix="bare/ack")
sent.update(send("b"))
time.sleep(0.5)
second = fleet.drain_receipts()
client.loop_stop()
fleet.stop()
print(json.dumps({"sent": sent, "first": first, "second": second, "acks": acks}))
'''


def test_fleet_records_when_commands_reach_the_socket_and_moves_its_acks(tmp_path):
    """The simulator's receipts carry the kernel's receive time of each command (not when its busy loop got to
    it), and a drain can move the VENs' acks to another prefix (the fan-out benchmark's bare path)."""
    import subprocess

    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    try:
        run = subprocess.run([sys.executable, "-c", _RECEIPTS_DRIVER, str(broker.port)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        broker.stop()
    sent = out["sent"]
    first = {corr: (arrived, read) for corr, arrived, read in out["first"]}
    assert sorted(first) == [f"a:ts-{i:05d}" for i in range(3)]
    for corr, (arrived, read) in first.items():
        assert sent[corr] - 0.002 <= arrived < sent[corr] + 0.1, "arrival is the kernel's receive time"
        assert read - sent[corr] >= 0.35, "the stopped simulator read the command only after SIGCONT"
    assert sorted(corr for corr, _, _ in out["second"]) == [f"b:ts-{i:05d}" for i in range(3)]
    assert sorted(out["acks"]) == ([f"bare/ack/ts-{i:05d}" for i in range(3)]
                                   + [f"ven/ack/ts-{i:05d}" for i in range(3)])
