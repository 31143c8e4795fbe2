#!/usr/bin/env python3
"""Inbound telemetry through dr.mqtt: N simulated VENs reporting every 5 s on ven/telemetry/<venId> and
oadr/meter/<venId> (2 x N / 5 messages per second), coalesced by the bridge into dr/batch/telemetry bus
messages on a real VOLTTRON platform. Raw baseline in the same run: a bare paho subscriber on the same topics.

Prints per 5 s window: MQTT messages/s taken in by the bridge and by the bare subscriber, reports/s delivered
on the bus (each report once: the meter copy is recognised as a duplicate), bus messages/s, the paho -> hub
hand-off p99, and at the end the report latency (telemetry `ts` -> batch received on the bus) p50/p99/max.

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/mqtt_ingest.py [-n 10000] [--seconds 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from dr_tools.fleet.brokers import Mosquitto  # noqa: E402
from dr_tools.fleet.sim import FleetOptions  # noqa: E402
from dr_tools.fleet.workers import CountingSubscriber, FleetProcesses, percentile  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--vens", type=int, default=10_000, help="simulated VENs (default 10000)")
    ap.add_argument("--seconds", type=float, default=40.0, help="measured seconds (default 40)")
    ap.add_argument("--procs", type=int, default=2, help="fleet worker processes (default 2)")
    ap.add_argument("--site", default="mqttingest", help="throwaway VOLTTRON site (default mqttingest)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mqtt-ingest-"))
    broker = Mosquitto(work / "broker", persistence=False).start()
    fleet = FleetProcesses(FleetOptions(port=broker.port, count=args.vens, prefix="ing", telemetry_interval_s=5.0,
                                        keepalive_s=600), args.procs).start()
    raw = CountingSubscriber("127.0.0.1", broker.port, ["ven/telemetry/+", "oadr/meter/+"])
    raw.wait_ready()

    import gevent

    from dr_common import topics
    from dr_ops.busclient import BusClient
    from dr_ops.platformctl import SitePlatform

    plat = SitePlatform(args.site)
    if plat.site_dir.exists():
        plat.stop()
        shutil.rmtree(plat.site_dir)
    client = None
    try:
        plat.start()
        plat.install_agent(topics.MQTT_BRIDGE_IDENTITY, path="agents/mqtt_bridge", config={
            "mode": "vtn", "broker": {"port": broker.port, "client_id": "ingest-dr-mqtt", "clean_session": True},
            "batch": {"max_items": 500, "max_delay_ms": 50}, "store": {"path": "ingest-outbox.sqlite"}})
        client = BusClient(plat, "bench.ingest").connect()
        items = [0]
        bus_msgs = [0]
        lat_ms: list[float] = []

        def on_batch(peer, sender, bus, topic, headers, message):
            now = time.time()
            bus_msgs[0] += 1
            batch = message.get("items", [])
            items[0] += len(batch)
            for item in batch[:: max(1, len(batch) // 20)]:  # a sample keeps this subscriber light
                try:
                    stamp = datetime.fromisoformat(item["ts"].replace("Z", "+00:00")).timestamp()
                except (KeyError, ValueError, AttributeError):
                    continue
                lat_ms.append((now - stamp) * 1000.0)

        client.subscribe(topics.BUS_TELEMETRY_BATCH, on_batch)
        deadline = time.monotonic() + 60
        while fleet.totals.connected_total < args.vens and time.monotonic() < deadline:
            fleet.pump(0)
            gevent.sleep(0.2)
        print(f"{fleet.totals.connected_total:,} VENs connected; warming up one telemetry interval", flush=True)
        end_warm = time.monotonic() + 6
        while time.monotonic() < end_warm:
            fleet.pump(0)
            gevent.sleep(0.2)
        lat_ms.clear()

        def snap():
            st = client.rpc(topics.MQTT_BRIDGE_IDENTITY, "status")
            return time.monotonic(), st, raw.count, items[0], bus_msgs[0]

        first = prev = snap()
        end = time.monotonic() + args.seconds
        print(f"{'t s':>5} {'bridge in/s':>11} {'raw in/s':>9} {'reports/s on bus':>16} {'bus msgs/s':>10} "
              f"{'hand-off p99 ms':>15}")
        while time.monotonic() < end:
            t_next = time.monotonic() + 5
            while time.monotonic() < t_next:
                fleet.pump(0)
                gevent.sleep(0.1)
            cur = snap()
            dt = cur[0] - prev[0]
            print(f"{cur[0] - first[0]:5.0f} {(cur[1]['messagesIn'] - prev[1]['messagesIn']) / dt:11,.0f} "
                  f"{(cur[2] - prev[2]) / dt:9,.0f} {(cur[3] - prev[3]) / dt:16,.0f} {(cur[4] - prev[4]) / dt:10,.1f} "
                  f"{cur[1]['handoff']['p99Ms']:15}", flush=True)
            prev = cur
        dt = prev[0] - first[0]
        st = prev[1]
        print(f"\n{args.vens:,} VENs, every report on ven/telemetry and oadr/meter every 5 s "
              f"(nominal {2 * args.vens / 5:,.0f} MQTT msg/s), {dt:.0f} s measured:")
        print(f"  bridge took in {(st['messagesIn'] - first[1]['messagesIn']) / dt:,.0f} msg/s; "
              f"raw paho subscriber {(prev[2] - first[2]) / dt:,.0f} msg/s")
        print(f"  on the bus: {(prev[3] - first[3]) / dt:,.0f} reports/s in {(prev[4] - first[4]) / dt:.1f} "
              f"messages/s; duplicates dropped {st['duplicates']:,}; rejects {st['rejectsTotal']}")
        if lat_ms:
            print(f"  report ts -> on the bus (sampled): p50 {percentile(lat_ms, 50):.0f} ms, "
                  f"p99 {percentile(lat_ms, 99):.0f} ms, max {max(lat_ms):.0f} ms (n={len(lat_ms):,})")
        print(f"  paho -> hub hand-off: {st['handoff']}")
    finally:
        raw.stop()
        if client is not None:
            client.close()
        plat.stop()
        shutil.rmtree(plat.site_dir, ignore_errors=True)
        fleet.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
