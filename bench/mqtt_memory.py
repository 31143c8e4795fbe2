#!/usr/bin/env python3
"""dr.mqtt's resident memory at 10,000 connected VENs' traffic (VTN mode), next to a bare paho client carrying
the same traffic, measured in the same run.

Setup: a private Mosquitto on a free port; 10,000 simulated VENs (dr_tools.fleet, --procs worker processes)
that stay connected for the whole run, publish telemetry every 5 s (on ven/telemetry/<venId> and
oadr/meter/<venId>) and ack every command on ven/ack/<venId>.
Then, one after the other, each in a process of its own (so neither inherits the other's heap):
  dr.mqtt  the bridge as the agent runs it without the platform (`BridgeCore`, VTN mode, its default routes,
           batching, dedup and SQLite outbox), with the VOLTTRON client library imported as in the agent;
           the bus is a port that JSON-encodes every batch (as the bus would carry it) and counts the items.
  bare     one paho client (its own network thread, unlimited in-flight) subscribed to the same topics,
           decoding every message's JSON and counting it.
Each runs --rounds dispatch rounds (10,000 commands out, as one `send_batch` for dr.mqtt and 10,000 publishes
for bare paho; every VEN's ack back in) and takes the VENs' telemetry for --seconds in all.
Printed: the process's RSS before connecting, its peak (VmHWM) and its RSS at the end; the messages each took in.

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/mqtt_memory.py [--vens 10000]
Target: dr.mqtt under 200 MB resident.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

INBOUND_FILTERS = ["ven/ack/+", "ven/telemetry/+", "oadr/meter/+", "ven/status/+"]


def proc_status(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def shared_fields(round_no: int) -> dict[str, Any]:
    return {"op": "event", "eventId": f"evt-mem-{round_no}", "requestedReductionKw": 1.5,
            "until": "2099-01-01T00:00:00+00:00", "issuedAt": "2026-01-01T00:00:00+00:00"}


def commands(ven_ids: list[str], round_no: int) -> list[dict[str, str]]:
    return [{"venId": v, "correlationId": f"evt-mem-{round_no}:m0:r0:event:{v}"} for v in ven_ids]


# ------------------------------------------------------------------------------------------ children ----
def child_bridge(port: int, ven_ids: list[str], rounds: int, seconds: float, folder: str) -> dict[str, Any]:
    import gevent
    import volttron.client.vip.agent  # noqa: F401  (the agent's process holds the VOLTTRON client library)

    from dr_common.mqtt.config import parse_config
    from dr_common.mqtt.core import BridgeCore

    class CountingBus:
        def __init__(self) -> None:
            self.items: dict[str, int] = {}

        def publish(self, topic: str, message: Any) -> None:
            json.dumps(message)
            self.items[topic] = self.items.get(topic, 0) + len(message.get("items", ()))

    bus = CountingBus()
    core = BridgeCore(parse_config({"broker": {"port": port, "client_id": "mem-bridge", "clean_session": True},
                                    "store": {"path": str(Path(folder) / "bridge-outbox.sqlite")}}), bus)
    core.prepare()
    base = proc_status("VmRSS")
    core.start()
    deadline = time.monotonic() + 15
    while not core.connected and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if not core.connected:
        raise RuntimeError("the bridge did not connect")
    gevent.sleep(0.5)  # subscriptions granted

    def acks() -> int:
        return sum(n for topic, n in bus.items.items() if "ack" in topic)

    return _drive(lambda r: core.send_batch(commands(ven_ids, r), shared_fields(r)), acks,
                  lambda: dict(bus.items), gevent.sleep, len(ven_ids), rounds, seconds, base,
                  stop=core.stop)


def child_bare(port: int, ven_ids: list[str], rounds: int, seconds: float) -> dict[str, Any]:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    counts: dict[str, int] = {}
    lock = threading.Lock()
    ready = threading.Event()

    def on_message(client, userdata, msg) -> None:
        json.loads(msg.payload)
        kind = msg.topic.split("/", 2)[1]
        with lock:
            counts[kind] = counts.get(kind, 0) + 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mem-bare")
    client.max_inflight_messages_set(0)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe([(t, 1) for t in INBOUND_FILTERS])
    client.on_subscribe = lambda *a: ready.set()
    base = proc_status("VmRSS")
    client.connect("127.0.0.1", port, keepalive=600)
    client.loop_start()
    if not ready.wait(15):
        raise RuntimeError("the bare client did not subscribe")

    def send(round_no: int) -> None:
        shared = shared_fields(round_no)
        for item in commands(ven_ids, round_no):
            client.publish(f"ven/cmd/{item['venId']}", json.dumps({**shared, **item}), qos=1)

    def snapshot() -> dict[str, int]:
        with lock:
            return dict(counts)

    def stop() -> None:
        client.disconnect()
        client.loop_stop()

    return _drive(send, lambda: snapshot().get("ack", 0), snapshot, time.sleep, len(ven_ids), rounds, seconds,
                  base, stop=stop)


def _drive(send, acks, counts, sleep, n: int, rounds: int, seconds: float, base: float, stop) -> dict[str, Any]:
    """The same schedule for both: `rounds` dispatch rounds spread over `seconds`, sampling RSS as it goes."""
    started = time.monotonic()
    peak = base
    ack_ms = []
    for r in range(rounds):
        before = acks()
        t0 = time.monotonic()
        send(r)
        while acks() - before < n and time.monotonic() - t0 < 60:
            sleep(0.05)
            peak = max(peak, proc_status("VmRSS"))
        ack_ms.append((time.monotonic() - t0) * 1000)
        until = started + seconds * (r + 1) / rounds
        while time.monotonic() < until:
            sleep(0.25)
            peak = max(peak, proc_status("VmRSS"))
    end = proc_status("VmRSS")
    result = {"baseMiB": base, "peakMiB": max(peak, end), "hwmMiB": proc_status("VmHWM"), "endMiB": end,
              "counts": counts(), "ranS": time.monotonic() - started, "ackRoundMs": ack_ms}
    stop()
    return result


# ------------------------------------------------------------------------------------------ parent ----
def run_variant(variant: str, args: argparse.Namespace, port: int, folder: Path, fleet) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--port", str(port), "--vens", str(args.vens),
           "--rounds", str(args.rounds), "--seconds", str(args.seconds), "--folder", str(folder)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        fleet.pump(0.2)  # the workers' stats keep flowing (their pipes never fill)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} child failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vens", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=2, help="simulator worker processes")
    parser.add_argument("--rounds", type=int, default=3, help="dispatch rounds per variant")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each variant takes the traffic")
    parser.add_argument("--child", choices=("bridge", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from dr_tools.fleet.sim import FleetOptions, ven_ids

    ids = ven_ids("mem", 0, args.vens)
    if args.child == "bridge":
        print(json.dumps(child_bridge(args.port, ids, args.rounds, args.seconds, args.folder)))
        return 0
    if args.child == "bare":
        print(json.dumps(child_bare(args.port, ids, args.rounds, args.seconds)))
        return 0

    from dr_tools.fleet.brokers import Mosquitto
    from dr_tools.fleet.workers import FleetProcesses

    folder = Path(tempfile.mkdtemp(prefix="mqtt-memory-"))
    broker = Mosquitto(folder / "broker", persistence=False).start()
    fleet = FleetProcesses(FleetOptions(port=broker.port, count=args.vens, prefix="mem"), args.procs).start()
    results: dict[str, dict[str, Any]] = {}
    try:
        if not fleet.wait_connected(max(60.0, args.vens / 100)):
            raise RuntimeError(f"only {fleet.totals.connected_total} of {args.vens} VENs connected")
        print(f"{args.vens:,} simulated VENs connected to a private Mosquitto on port {broker.port}; telemetry"
              f" every 5 s on two topics each ({2 * args.vens / 5:,.0f} msg/s), {args.rounds} dispatch rounds"
              f" of {args.vens:,} commands per variant, {args.seconds:.0f} s each")
        for variant in ("bridge", "bare"):
            results[variant] = run_variant(variant, args, broker.port, folder, fleet)
    finally:
        fleet.stop()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n  {'':<28}{'before MiB':>11}{'peak MiB':>10}{'end MiB':>9}{'grew MiB':>10}  messages in")
    for variant, label in (("bridge", "dr.mqtt (BridgeCore, vtn)"), ("bare", "raw: bare paho client")):
        r = results[variant]
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(r["counts"].items()))
        print(f"  {label:<28}{r['baseMiB']:>11.1f}{r['hwmMiB']:>10.1f}{r['endMiB']:>9.1f}"
              f"{r['hwmMiB'] - r['baseMiB']:>10.1f}  {counts}")
    b, raw = results["bridge"], results["bare"]
    print(f"\n  dr.mqtt peak resident {b['hwmMiB']:.0f} MiB (target < 200 MB = {200e6 / 2**20:.0f} MiB);"
          f" growth under traffic {b['hwmMiB'] - b['baseMiB']:.1f} MiB vs bare paho's"
          f" {raw['hwmMiB'] - raw['baseMiB']:.1f} MiB")
    print("  all acks back per round, ms: dr.mqtt " + ", ".join(f"{v:.0f}" for v in b["ackRoundMs"])
          + "; bare " + ", ".join(f"{v:.0f}" for v in raw["ackRoundMs"]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
