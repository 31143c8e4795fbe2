#!/usr/bin/env python3
"""OpenADR 3 MQTT notifier: event create -> notification received by each of N subscribed paho clients (one per
VEN, each on its own `vens/{venID}/events/create` topic), against bare paho publishing the same payloads.

Setup (all on this machine): a private Mosquitto on a free port; the N subscribers in a process of their own
(N paho clients, QoS 1, driven by one selector loop; each notes the arrival time of its message); dr.vtn's service
in this process as the agent builds it (SQLite store, `MqttNotifier` on the private broker) with N VEN objects
registered by the business logic.

For each N and round, two paths, one after the other:
  notifier: t0 = just before `oadr_create("events", ...)` of an untargeted event (the API call: validation, the
            dr.vtn event, the store, the routing to every VEN's topic, the queueing) -> each subscriber receives it
            (published by the notifier's thread through paho's network thread, QoS 1).
  bare:     t0 -> one paho client (its network thread, QoS 1) publishes the same notification bytes to the same N
            topics in a plain loop -> each subscriber receives it. The floor of paho, the broker and loopback.
Per delivery latency = arrival - t0; p50/p99/max over every delivery of every measured round (one warm-up round
per N, not counted). `caller` is how long `oadr_create` kept the caller (the notifier only queues).

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/oadr_mqtt_notify.py [--sizes 1,100,1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import random
import selectors
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from dr_tools.fleet.brokers import Mosquitto
from dr_tools.fleet.workers import percentile
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier, notification
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url

BL = {"clientId": "bench-bl", "role": "bl", "venName": None}
EVENT = {"programID": "default", "intervalPeriod": {"start": "0001-01-01", "duration": "PT10M"},
         "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-1]}]}]}


def _subscribers(conn, port: int, topics: list[str]) -> None:
    """The subscriber process: one paho client per topic, one selector loop; answers `reset`, `times`, `stop`."""
    arrivals: list[float] = []
    clients: dict[int, mqtt.Client] = {}
    pending_subacks = len(topics)

    def on_message(client, userdata, message) -> None:
        arrivals.append(time.time())

    def on_subscribe(client, userdata, mid, reasons, properties) -> None:
        nonlocal pending_subacks
        pending_subacks -= 1

    selector = selectors.DefaultSelector()
    for index, topic in enumerate(topics):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:8]}-{index}")
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.on_connect = lambda c, u, f, rc, p, t=topic: c.subscribe(t, qos=1)
        client.connect("127.0.0.1", port, keepalive=300)
        selector.register(client.socket(), selectors.EVENT_READ, client)
        clients[index] = client

    def pump(seconds: float) -> None:
        for key, _mask in selector.select(timeout=seconds):
            client = key.data
            client.loop_read()
            if client.want_write():     # a SUBSCRIBE or PUBACK queued from inside a callback
                client.loop_write()

    while pending_subacks:
        pump(0.1)
    conn.send("ready")
    while True:
        if conn.poll(0):
            command = conn.recv()
            if command == "reset":
                arrivals.clear()
                conn.send("ok")
            elif command == "times":
                conn.send(list(arrivals))
            else:
                break
        pump(0.002)
    for client in clients.values():
        client.disconnect()


class Fleet:
    """The subscriber process, driven over a pipe."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context("spawn").Process(target=_subscribers, args=(child, port, topics), daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the subscribers did not get their SUBACKs")

    def reset(self) -> None:
        self.conn.send("reset")
        self.conn.recv()

    def wait(self, count: int, timeout: float = 30.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while True:
            self.conn.send("times")
            times = self.conn.recv()
            if len(times) >= count or time.monotonic() > deadline:
                return times
            time.sleep(0.002)

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(10)


def _vtn(folder: Path, port: int, prefix: str) -> VtnService:
    config = parse_config({"openadr3": {"mqtt": {"host": "127.0.0.1", "port": port, "topicPrefix": prefix,
                                                 "clientId": f"bench-vtn-{uuid.uuid4().hex[:8]}"}}})
    clock = ManualScheduler(time.time())
    store = Store(sqlite_url(str(folder / "vtn.sqlite")))
    service = VtnService(store, clock, MemorySender(clock.now), config, rng=random.Random(3),
                         mqtt=MqttNotifier(config.openadr3.mqtt))
    service.start()
    deadline = time.monotonic() + 10
    while not service.mqtt.counters()["mqttConnected"]:
        if time.monotonic() > deadline:
            raise RuntimeError("dr.vtn's notifier did not connect")
        time.sleep(0.01)
    return service


def _bare_publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _line(name: str, lat_ms: list[float], extra: str = "") -> str:
    return (f"  {name:<9} p50 {percentile(lat_ms, 50):8.1f} ms   p99 {percentile(lat_ms, 99):8.1f} ms   "
            f"max {max(lat_ms):8.1f} ms{extra}")


def run_size(folder: Path, port: int, n: int, rounds: int) -> dict[str, list[float]]:
    prefix = f"b{uuid.uuid4().hex[:6]}/OpenADR/3.1.0"
    vtn = _vtn(folder, port, prefix)
    bare = _bare_publisher(port)
    fleet = None
    try:
        ids = [vtn.oadr_create("vens", {"objectType": "BL_VEN_REQUEST", "venName": f"ven-{i}",
                                        "clientID": f"client-{i}"}, BL)["id"] for i in range(n)]
        topics = [f"{prefix}/vens/{ven_id}/events/create" for ven_id in ids]
        fleet = Fleet(port, topics)
        out: dict[str, list[float]] = {"notifier": [], "bare": [], "caller": [], "missing": []}
        payload = b""
        for r in range(rounds + 1):
            fleet.reset()
            t0 = time.time()
            event = vtn.oadr_create("events", EVENT, BL)
            caller_ms = (time.time() - t0) * 1000
            got = fleet.wait(n)
            payload = json.dumps(notification("EVENT", "CREATE", event), separators=(",", ":")).encode()
            fleet.reset()
            t1 = time.time()
            for topic in topics:
                bare.publish(topic, payload, qos=1)
            got_bare = fleet.wait(n)
            if r == 0:
                continue            # warm-up
            out["caller"].append(caller_ms)
            out["notifier"] += [(t - t0) * 1000 for t in got]
            out["bare"] += [(t - t1) * 1000 for t in got_bare]
            out["missing"].append(float(2 * n - len(got) - len(got_bare)))
        out["payload"] = [float(len(payload))]
        return out
    finally:
        if fleet is not None:
            fleet.close()
        bare.disconnect()
        bare.loop_stop()
        vtn.stop()
        vtn.store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,100,1000", help="subscribed VEN clients per run (default 1,100,1000)")
    ap.add_argument("--rounds", type=int, default=0, help="measured rounds per size (default: 30, 10, 5 by size)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dr_vtn_dispatcher.participation").setLevel(logging.ERROR)  # no seed VENs: nothing allocated
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="oadr-mqtt-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker", persistence=False).start()
        try:
            print("event create -> MQTT notification received by each of N subscribed paho clients "
                  "(private Mosquitto, QoS 1, one topic per VEN)")
            for n in sizes:
                rounds = args.rounds or (30 if n <= 1 else 10 if n <= 100 else 5)
                folder = Path(tmp) / f"n{n}"
                folder.mkdir()
                res = run_size(folder, broker.port, n, rounds)
                missing = int(sum(res["missing"]))
                print(f"N = {n:>5}  ({rounds} rounds, {len(res['notifier'])} deliveries; payload "
                      f"{int(res['payload'][0])} B; missing {missing})")
                print(_line("notifier", res["notifier"],
                            f"   (caller held {statistics.median(res['caller']):.1f} ms median)"))
                print(_line("bare paho", res["bare"]))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
