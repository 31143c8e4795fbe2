#!/usr/bin/env python3
"""OpenADR 3.1 VEN agent: event created at the VTN -> first set_point at the building (dr.ven's engine), by the way
the VEN learns of it (polling, webhook, the VTN's MQTT notifier), next to the seed-contract path and raw baselines
measured in the same run.

Setup (one process, this machine): our VTN in-process as the unit tests run it (dr.web's OpenADR blueprint on a
werkzeug server on a free loopback port, the real dr.vtn service on SQLite behind it, its `WebhookNotifier`
with the callback policy allowing 127.0.0.1 and its `MqttNotifier` on the local Mosquitto 127.0.0.1:1883 under
a prefix of this run); dr.oadr's link and core (`Oadr31Link`, `VenCore`) with a VEN client, the link's
findings drained by this process's main thread as the agent's greenlet does; the building: dr.ven's
`VenEngine` in-process on the demo site's ven.json (venId set to the VEN's), fed the demo devices' readings
(physics of the site's driver configs, as bench/ven_latency.py's in-process mode), its state file in the run's
folder. Every command the VEN agent hands to its bus publish goes straight into the engine's `on_command`; the
figure stops when the engine returns the event's ops (its first set_point). Each path runs `--events` events
(one at a time, each created by the business logic with `POST /events`, 2 kW, starting now, after a random
pause of 0-1 s so that creations fall at random phases of the poll period; each deleted after); per event:

  poll     t0 = just before the POST -> dr.ven's engine returns the first set_point; `pollS` 1 (no notifications)
  webhook  the same with `notify: webhook` (pollS 3600: only the webhook can bring it)
  mqtt     the same with `notify: mqtt` (pollS 3600)
  seed     the seed contract: `POST /api/events/` (one registered bus VEN per event, an engine of its venId)
           -> dr.vtn hands the command to its bus sender (in-process `MemorySender`) -> the engine's first op
Raw baselines, same run: one HTTP round trip to the same server (`GET auth/server`), one bare MQTT publish ->
receive through the same broker (paho, QoS 1), one bare HTTP POST to the VEN's webhook receiver. The time to the
command's hand-off (the previous stop of this bench) is printed for each path too.

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/oadr_ven_latency.py [--events 50]
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from dr_common.timeutil import to_iso  # noqa: E402
from dr_oadr_ven.config import parse_config  # noqa: E402
from dr_oadr_ven.core import VenCore  # noqa: E402
from dr_oadr_ven.oadr31 import Oadr31Link  # noqa: E402
from dr_oadr_ven.state import StateFile  # noqa: E402
from dr_tools import webharness  # noqa: E402
from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier  # noqa: E402
from dr_vtn_dispatcher.oadr_notify import WebhookNotifier  # noqa: E402
from dr_tools.oadr3_server import BL, VEN1, Oadr3Server as Server  # noqa: E402
from dr_ven_load_control.config import parse_config as parse_ven_config  # noqa: E402
from dr_ven_load_control.engine import VenEngine  # noqa: E402
from dr_ven_load_control.store import StateStore  # noqa: E402
from ven_latency import DEMO, demo_readings  # noqa: E402  (bench/, the script's own folder)

PREFIX = f"bench-oadr-ven-{uuid.uuid4().hex[:8]}/OpenADR/3.1.0"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, ms: list[float]) -> str:
    if not ms:
        return f"{name:<34} no sample"
    return f"{name:<34} n={len(ms):<4} p50 {pct(ms, 0.5):8.2f} ms   p99 {pct(ms, 0.99):8.2f} ms   " \
           f"max {max(ms):8.2f} ms"


def vtn(folder: Path) -> Server:
    """Our VTN in-process with webhooks (loopback allowed) and the MQTT notifier on the local broker."""
    real_parse, real_service = webharness.parse_config, webharness.VtnService
    extra = {"openadr3": {"callbackPolicy": {"allowedHosts": ["127.0.0.1"]},
                          "mqtt": {"host": "127.0.0.1", "port": 1883, "topicPrefix": PREFIX,
                                   "clientId": f"bench-vtn-{uuid.uuid4().hex[:8]}"}}}
    webharness.parse_config = lambda raw: real_parse({**raw, **extra})
    webharness.VtnService = lambda store, clock, sender, config, rng=None: real_service(
        store, clock, sender, config, rng=rng, notifier=WebhookNotifier(workers=2),
        mqtt=MqttNotifier(config.openadr3.mqtt))
    try:
        return Server(folder)
    finally:
        webharness.parse_config, webharness.VtnService = real_parse, real_service


class Building:
    """dr.ven's engine on the demo site, in-process: `command` is what dr.ven receives on its bus topic."""

    READINGS = demo_readings()

    def __init__(self, ven_id: str, state: Path) -> None:
        raw = json.loads((DEMO / "ven.json").read_text())
        self.engine = VenEngine(parse_ven_config({**raw, "venId": ven_id}), StateStore(state))
        self.handed: dict[str, float] = {}       # eventId -> when the command was handed to dr.ven
        self.first_op: dict[str, float] = {}     # eventId -> when the engine returned its first set_point
        now = time.time()
        for k in range(6):                       # a meter history for the baseline, as the agent gathers it
            self.refresh(now - 30 + 5 * k)

    def refresh(self, now: float | None = None) -> None:
        """Feed every demo device's reading (off the clock, between events)."""
        now = time.time() if now is None else now
        self.engine.ops_done([(op, None) for op in self.engine.on_timer(now)], now=now)
        for device, values in self.READINGS.items():
            self.engine.ops_done([(op, None) for op in self.engine.on_device(device, values, now=now)], now=now)

    def command(self, payload: dict[str, Any]) -> None:
        at = time.perf_counter()
        outcome = self.engine.on_command(payload)
        done = time.perf_counter()
        event_id = payload.get("eventId")
        if payload.get("op") == "event" and event_id and event_id not in self.handed:
            self.handed[event_id] = at
            if outcome.ops:
                self.first_op[event_id] = done
            else:
                _log.error("event %s gave no set_point: %s", event_id, outcome.ack.to_payload())
        self.engine.ops_done([(op, None) for op in outcome.ops])


_log = logging.getLogger("oadr_ven_latency")


class Bench:
    def __init__(self, server: Server, folder: Path) -> None:
        self.server = server
        self.folder = folder
        token = httpx.post(server.base + "/auth/token", data={"grant_type": "client_credentials",
                                                              "client_id": BL[0], "client_secret": BL[1]})
        self.bl = httpx.Client(headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=10)
        self.program = self.bl.post(server.base + "/programs", json={"programName": "bench"}).json()["id"]

    def ven_path(self, notify: str, events: int) -> tuple[list[float], list[float], Oadr31Link]:
        config = parse_config({"venId": "ven-1", "statePath": str(self.folder / f"{notify}.json"),
                               "vtn": {"baseUrl": self.server.base, "clientId": VEN1[0], "clientSecret": VEN1[1],
                                       "notify": notify, "pollS": 1 if notify == "poll" else 3600}})
        building = Building("ven-1", self.folder / f"dr-ven-{notify}.json")
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        link = Oadr31Link(config, {})
        core = VenCore(config, StateFile(config.state_path).load(), building.command, link)

        class Handoff:
            put = inbox.put

        link.start(Handoff)
        ready = time.monotonic() + 15
        while time.monotonic() < ready and not (core.enrolment and (
                notify != "mqtt" or (link.status().get("mqtt") or {}).get("connected"))):
            self.drain(inbox, core, 0.05)
        out, handed = [], []
        try:
            for _ in range(events):
                building.refresh()
                body = {"programID": self.program, "eventName": "bench", "targets": ["ven-1"],
                        "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "PT1H"},
                        "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE",
                                                              "values": [-2.0]}]}]}
                pause = time.monotonic() + random.uniform(0.0, 1.0)  # a random phase against the poll period
                while time.monotonic() < pause:
                    self.drain(inbox, core, 0.01)
                t0 = time.perf_counter()
                event_id = self.bl.post(self.server.base + "/events", json=body).json()["id"]
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    self.drain(inbox, core, 0.002)
                    if event_id in building.handed:
                        handed.append((building.handed[event_id] - t0) * 1000)
                        if event_id in building.first_op:
                            out.append((building.first_op[event_id] - t0) * 1000)
                        break
                self.bl.delete(self.server.base + f"/events/{event_id}")
                restored = time.monotonic() + 10  # the next event starts from a building at rest
                while time.monotonic() < restored and building.engine.event is not None:
                    self.drain(inbox, core, 0.01)
        finally:
            link.stop()
        return out, handed, link

    @staticmethod
    def drain(inbox: queue.SimpleQueue, core: VenCore, timeout: float) -> None:
        try:
            core.on_item(inbox.get(timeout=timeout))
        except queue.Empty:
            return
        while True:
            try:
                core.on_item(inbox.get_nowait())
            except queue.Empty:
                return

    def seed_path(self, events: int) -> tuple[list[float], list[float]]:
        web, out, handed = self.server.web, [], []
        buildings: dict[str, Building] = {}
        real_send = web.sender.send_local

        def send_local(ven_id: str, payload: dict[str, Any]) -> None:  # dr.vtn's bus hand-off -> dr.ven
            real_send(ven_id, payload)
            if ven_id in buildings:
                buildings[ven_id].command(payload)

        web.sender.send_local = send_local
        for n in range(events):
            ven_id = f"seed-{n}"
            web.vtn.register_ven({"venId": ven_id, "transport": "bus", "status": "online", "maxShedKw": 10})
            buildings = {ven_id: Building(ven_id, self.folder / f"dr-ven-{ven_id}.json")}
            before = len(web.sender.local)
            t0 = time.perf_counter()
            answer = httpx.post(self.server.base.replace("/openadr3/3.1.0", "/api/events/"), json={
                "requestedReductionKw": 2, "venIds": [ven_id], "durationS": 3600,
                "startTime": to_iso(datetime.fromtimestamp(web.clock.now(), timezone.utc))},
                headers={"Authorization": f"Bearer {webharness.TOKEN}"})
            building = buildings[ven_id]
            if answer.status_code in (200, 201) and len(web.sender.local) > before and building.handed:
                handed.extend((at - t0) * 1000 for at in building.handed.values())
                out.extend((at - t0) * 1000 for at in building.first_op.values())
        web.sender.send_local = real_send
        return out, handed

    def http_baseline(self, n: int) -> list[float]:
        out = []
        with httpx.Client() as client:
            for _ in range(n):
                t0 = time.perf_counter()
                client.get(self.server.base + "/auth/server")
                out.append((time.perf_counter() - t0) * 1000)
        return out


def mqtt_baseline(n: int) -> list[float]:
    topic = f"{PREFIX}/raw/{uuid.uuid4().hex[:6]}"
    got: queue.SimpleQueue = queue.SimpleQueue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    subscribed = threading.Event()
    sub.on_message = lambda c, u, m: got.put(time.perf_counter())
    sub.on_subscribe = lambda *a: subscribed.set()
    for client in (sub, pub):
        client.connect("127.0.0.1", 1883)
        client.loop_start()
    sub.subscribe(topic, qos=1)
    subscribed.wait(5)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        pub.publish(topic, b'{"objectType": "EVENT"}', qos=1)
        out.append((got.get(timeout=5) - t0) * 1000)
    for client in (sub, pub):
        client.disconnect()
        client.loop_stop()
    return out


def webhook_baseline(n: int) -> list[float]:
    from dr_oadr_ven.webhook import WebhookServer

    server = WebhookServer("127.0.0.1", 0, "/raw", "raw-token-0001", lambda op, obj: None)
    server.start()
    out = []
    try:
        with httpx.Client() as client:
            for _ in range(n):
                t0 = time.perf_counter()
                client.post(f"http://127.0.0.1:{server.port}/raw", headers={"Authorization": "Bearer raw-token-0001"},
                            json={"objectType": "EVENT", "operation": "CREATE", "object": {"id": "x"}})
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        server.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, force=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = vtn(Path(tmp))
        try:
            bench = Bench(server, Path(tmp))
            rows, handed_rows = [], []
            for notify in ("poll", "webhook", "mqtt"):
                ms, handed, link = bench.ven_path(notify, args.events)
                rows.append(line(f"OpenADR 3.1 VEN, {notify} (-> {link.stats['notify']})", ms))
                handed_rows.append(line(f"OpenADR 3.1 VEN, {notify}", handed))
            ms, handed = bench.seed_path(args.events)
            rows.append(line("seed contract (POST /api/events/)", ms))
            handed_rows.append(line("seed contract (POST /api/events/)", handed))
            rows.append(line("raw: HTTP round trip, same server", bench.http_baseline(args.events)))
            rows.append(line("raw: MQTT publish -> receive", mqtt_baseline(args.events)))
            rows.append(line("raw: HTTP POST to the VEN webhook", webhook_baseline(args.events)))
        finally:
            server.close()
    print("event created at the VTN -> first set_point at the building (dr.ven's engine; one process, loopback)")
    for row in rows:
        print(row)
    print("the same events, created -> command handed to dr.ven (before its engine)")
    for row in handed_rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
