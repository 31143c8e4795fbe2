#!/usr/bin/env python3
"""dr.vtn scaled out: two dr.vtn, each owning half of a fleet, on one PostgreSQL and one broker, next to one
dr.vtn with the whole fleet, in the same run.

Setup: a throwaway PostgreSQL database (one schema per dr.vtn: its databaseUrl sets the search_path), a private
Mosquitto, --vens simulated VENs (dr_tools.fleet) split in two halves by venId range; each half acks on the
topic root of its partition (<part>/ven/ack/<venId>), so each dr.vtn's bridge subscribes to its own VENs'
acks only. Commands go to ven/cmd/<venId> as always.
Each dr.vtn runs in a process of its own: the platform-free `VtnService` (gevent timers, the real PostgreSQL
store, VENs imported in bulk into its schema) with the bridge's `BridgeCore` in the same process (VTN mode;
dr.vtn's batch handed to it as the bus would bring it, its ack batches fed back through dr.vtn's intake as
from the trusted bridge `dr.mqtt`). Per round, every dr.vtn of the layout starts an event (allVens, 0.5 kW per
VEN) at the same instant; each simulated VEN acks 50 ms after a command.

  one   a single dr.vtn with all --vens VENs (its bridge subscribed to both partitions' acks)
  two   dr.vtn A with the first half, dr.vtn B with the second, same broker, same database server
Latency per VEN = the command's arrival at its socket (kernel receive time, CLOCK_MONOTONIC) - the start instant;
commands/s = commands of the round / the round's makespan (start -> last arrival); ack round trip = start ->
dr.vtn holding every ack (its pendingCommands back to 0).

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/vtn_scaleout.py [--vens 2000]
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vtn_memory import PgDatabase, pg_reachable  # the memory bench (in this script's folder): a throwaway database

T_REF = 1_800_000_000.0
PARTS = ("a", "b")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


# ------------------------------------------------------------------------------------------ dr.vtn child ----
def child_vtn(args: argparse.Namespace) -> dict[str, Any]:
    import gevent

    from dr_common import topics
    from dr_common.batches import compact_batch
    from dr_common.mqtt.config import parse_config as bridge_config
    from dr_common.mqtt.core import BridgeCore
    from dr_vtn_dispatcher.config import parse_config
    from dr_vtn_dispatcher.model import Ven
    from dr_vtn_dispatcher.service import VtnService
    from dr_vtn_dispatcher.store import Store

    class Timer:
        def __init__(self, greenlet: Any) -> None:
            self._greenlet = greenlet

        def cancel(self) -> None:
            self._greenlet.kill(block=False)

    class GeventScheduler:
        """Wall clock and timers on the gevent hub (one thread of control, as dr.vtn's agent runs it)."""

        def now(self) -> float:
            return time.time()

        def call_at(self, when: float, callback: Any) -> Timer:
            return Timer(gevent.spawn_later(max(0.0, when - time.time()), callback))

    class BridgeSender:
        """dr.vtn's hand-off to dr.mqtt, in process: the batch compacted as on the bus, then `send_batch`."""

        def __init__(self) -> None:
            self.core: Any = None
            self.handoff: list[tuple[float, int]] = []

        def send_local(self, ven_id: str, payload: dict[str, Any]) -> None:
            raise RuntimeError("no bus VENs in this bench")

        def send_batch(self, payloads: list[dict[str, Any]]) -> None:
            batch = json.loads(json.dumps(compact_batch(payloads, "commands")))  # as the bus carries it
            self.core.on_bus_message(topics.BUS_CMD_BATCH, batch)
            self.handoff.append((time.time(), len(payloads)))

        def publish_event(self, event: dict[str, Any]) -> None:
            json.dumps(event)

        def publish_telemetry(self, ven_id: str, payload: dict[str, Any]) -> None:
            json.dumps(payload)

    lo, hi = (int(x) for x in args.range.split(":"))
    store = Store(args.url)
    store.save(vens=[Ven(ven_id=f"so-{i:05d}", transport="mqtt", max_shed_kw=5.0, registered_at=T_REF,
                         updated_at=T_REF) for i in range(lo, hi)])
    sender = BridgeSender()
    svc = VtnService(store, GeventScheduler(), sender, parse_config({"maxRequestedKw": 1e6}))

    class AckPort:
        def publish(self, topic: str, message: Any) -> None:
            if topic.startswith("dr/batch/ack"):
                svc.ingest("ack", json.loads(json.dumps(message)), sender="dr.mqtt")

    inbound = [{"mqtt": f"{p}/ven/ack/{{venId}}", "kind": "ack", "bus": "dr/batch/ack", "batch": True}
               for p in args.acks.split(",")]
    outbox = str(Path(args.folder) / f"{args.name}.db")
    core = BridgeCore(bridge_config({"broker": {"port": args.port, "client_id": f"so-bridge-{args.name}",
                                                "clean_session": True},
                                     "inbound": inbound, "store": {"path": outbox}}), AckPort())
    sender.core = core
    core.start()
    svc.start()
    deadline = time.monotonic() + 15
    while not core.connected and time.monotonic() < deadline:
        gevent.sleep(0.05)
    gevent.sleep(0.5)
    rounds = []
    for r in range(args.rounds):
        start = args.t0 + r * args.period
        event = svc.create_event({"startTime": iso(start), "durationS": args.period * 0.6,
                                  "requestedReductionKw": 0.5 * (hi - lo), "allVens": True})
        rounds.append({"eventId": event["eventId"], "start": start})
    for rnd in rounds:
        while time.time() < rnd["start"]:
            gevent.sleep(0.01)
        while not sender.handoff or sender.handoff[-1][0] < rnd["start"]:
            gevent.sleep(0.001)
        rnd["handoffMs"] = (sender.handoff[-1][0] - rnd["start"]) * 1000
        rnd["insideMs"] = svc.dispatcher.last_round.get("handOffMs")
        while svc.book.pending_count() and time.time() < rnd["start"] + args.period * 0.55:
            gevent.sleep(0.002)
        rnd["allAckedMs"] = (time.time() - rnd["start"]) * 1000 if not svc.book.pending_count() else None
    end = rounds[-1]["start"] + args.period * 0.6 + 3
    while time.time() < end or svc.book.pending_count():  # the last restores go out and are acked
        gevent.sleep(0.05)
        if time.time() > end + 20:
            break
    health = svc.health()
    svc.stop()
    core.stop()
    store.close()
    return {"rounds": rounds, "counters": health["counters"], "vens": hi - lo}


# ------------------------------------------------------------------------------------------ parent ----
def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-int(pct * len(ordered)) // 100) - 1))]


def run_layout(name: str, layout: list[tuple[str, int, int, str]], args, port: int, db: PgDatabase,
               folder: Path, fleets) -> dict[str, Any]:
    """Start one dr.vtn process per (name, lo, hi, ack partitions); returns their outputs and the receipts."""
    import psycopg2

    for fleet in fleets:
        fleet.drain_receipts()
    t0 = time.time() + args.lead_s
    mono0 = time.monotonic() + (t0 - time.time())
    procs = []
    for vtn, lo, hi, acks in layout:
        schema = f"vtn_{name}_{vtn}"
        with psycopg2.connect(dbname=db.name, host="127.0.0.1", port=5432, user="postgres") as conn:
            conn.cursor().execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        url = f"{db.url}?options=-csearch_path%3D{schema}"
        cmd = [sys.executable, __file__, "--child", "--name", f"{name}-{vtn}", "--url", url, "--range",
               f"{lo}:{hi}", "--acks", acks, "--port", str(port), "--t0", repr(t0), "--period", str(args.period),
               "--rounds", str(args.rounds), "--folder", str(folder)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    while any(p.poll() is None for p in procs):
        for fleet in fleets:
            fleet.pump(0.1)
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"dr.vtn child failed:\n{err[-3000:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    first: dict[str, float] = {}  # a resend (dr.vtn's retry of a command not yet acked) is not a new command
    resends = 0
    for corr, arrived, _read in (r for fleet in fleets for r in fleet.drain_receipts()):
        resends += corr in first
        first[corr] = min(arrived, first.get(corr, arrived))
    per_round: list[list[float]] = [[] for _ in range(args.rounds)]
    starts = {rnd["eventId"]: (i, rnd["start"]) for o in outs for i, rnd in enumerate(o["rounds"])}
    for corr, arrived in first.items():
        event_id = corr.split(":")[0]
        if ":event:" in corr and event_id in starts:
            i, start = starts[event_id]
            per_round[i].append((arrived - (mono0 + (start - t0))) * 1000)
    return {"outs": outs, "perRound": per_round, "expected": sum(o["vens"] for o in outs), "resends": resends}


def summarize(label: str, result: dict[str, Any], rounds_skip: int) -> None:
    lat = [v for rnd in result["perRound"][rounds_skip:] for v in rnd]
    counts = [len(rnd) for rnd in result["perRound"]]
    makespans = [max(rnd) for rnd in result["perRound"][rounds_skip:] if rnd]
    rate = [len(rnd) / (max(rnd) / 1000) for rnd in result["perRound"][rounds_skip:] if rnd]
    acked = [rnd["allAckedMs"] for o in result["outs"] for rnd in o["rounds"][rounds_skip:]]
    inside = [rnd["insideMs"] for o in result["outs"] for rnd in o["rounds"][rounds_skip:] if rnd["insideMs"]]
    acked_txt = "/".join("-" if a is None else f"{a:.0f}" for a in acked)
    print(f"  {label:<34} p50 {percentile(lat, 50):7.1f}  p99 {percentile(lat, 99):7.1f}  max {max(lat):7.1f} ms;"
          f" {statistics_median(rate):8,.0f} commands/s (makespan median {statistics_median(makespans):.0f} ms);"
          f" received per round {counts} of {result['expected']}, resends {result['resends']}")
    print(f"  {'':<34} dr.vtn timer -> batch handed to the bridge, median {statistics_median(inside):.1f} ms;"
          f" all acked at (ms after start, per dr.vtn and round) {acked_txt}")


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="events per layout (the first is a warm-up)")
    parser.add_argument("--period", type=float, default=6.0, help="seconds between two events' starts")
    parser.add_argument("--lead-s", type=float, default=8.0, help="from the processes' start to the first event")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--name", "--url", "--range", "--acks", "--folder"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_vtn(args)))
        return 0
    if not pg_reachable():
        print("PostgreSQL is not reachable at 127.0.0.1:5432")
        return 1
    from dr_tools.fleet.brokers import Mosquitto
    from dr_tools.fleet.sim import FleetOptions
    from dr_tools.fleet.workers import FleetProcesses

    half = args.vens // 2
    folder = Path(tempfile.mkdtemp(prefix="vtn-scaleout-"))
    broker = Mosquitto(folder / "broker", persistence=False).start()
    fleets = [FleetProcesses(FleetOptions(port=broker.port, count=count, prefix="so", first_index=first,
                                          telemetry_interval_s=3600.0, meter=False, record=True,
                                          ack_delay_s=0.05, ack_prefix=f"{part}/ven/ack"), 1).start()
              for part, first, count in (("a", 0, half), ("b", half, args.vens - half))]
    db = PgDatabase("vtn_scaleout")
    results = {}
    try:
        for fleet in fleets:
            if not fleet.wait_connected(60):
                raise RuntimeError("the simulated VENs did not all connect")
        layouts = {"one": [("all", 0, args.vens, "a,b")],
                   "two": [("a", 0, half, "a"), ("b", half, args.vens, "b")]}
        for name in ("one", "two"):
            results[name] = run_layout(name, layouts[name], args, broker.port, db, folder, fleets)
    finally:
        for fleet in fleets:
            fleet.stop()
        broker.stop()
        db.drop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.vens:,} simulated VENs (2 processes), one Mosquitto, one PostgreSQL; {args.rounds - 1} measured"
          f" events per layout (after a warm-up), VENs ack 50 ms after a command; activation -> command at the VEN")
    summarize("one dr.vtn, whole fleet", results["one"], 1)
    summarize("two dr.vtn, half each (together)", results["two"], 1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
