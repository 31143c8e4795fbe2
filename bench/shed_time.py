"""Shed time of the load-control VEN: command -> the VEN's reported shed at 95 % of the request.

    /var/lib/volttron-dr/venv/bin/python bench/shed_time.py [--events 12] [--kw 2] [--site bench-shed-ven]
                                                            [--set KEY=JSON ...]

On a real platform (its own site, started and removed by this script): platform.driver with the demo site's
simulated devices (5 s scrapes) and dr.ven.ven-demo with the demo ven.json (`--set` overrides keys of it).
Each event is a `requestedReductionKw` command published on dr/cmd/<venId>; the figure is the time from the
publish to the client receiving the first telemetry report of that event whose `shedPowerKw` is at least 95 %
of the request. Each event is restored and the next one waits until every load is back and two scrapes
have shown it, then a random 0-5 s, so commands fall at every phase of the driver's scrape and of the telemetry period.

Printed next to it, measured in the same run (the raw baselines): the get_point round trip client ->
platform.driver (the floor of any live read), the driver's publish period (the floor of a design that waits
for the next scrape), platform.driver's CPU (percent of one core) over a window with no event and over the
events, and the largest reported shed above the request during each event's first 10 s (over-shedding).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from dr_ops.procstat import agent_pid, cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "platform-config" / "sites" / "demo"
DRIVER = "platform.driver"
FRACTION = 0.95
PERIOD_S = 5.0  # the demo driver config's scrape and publish interval


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float], unit: str = "s") -> str:
    if not values:
        return "no values"
    return (f"p50 {percentile(values, 50):7.3f}  p99 {percentile(values, 99):7.3f}  "
            f"max {max(values):7.3f} {unit}  (n={len(values)})")


def driver_pid(home: Path) -> int:
    return agent_pid(home, DRIVER)


def parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = json.loads(value)
    return out


def run(args: argparse.Namespace) -> None:
    import gevent

    from dr_common import topics
    from dr_common.topics import DriverRpc, VenRpc
    from dr_ops.busclient import BusClient, wait_for
    from dr_ops.install_site import install_site
    from dr_ops.platformctl import SitePlatform
    from dr_ops.sitespec import load_site

    config = json.loads((DEMO / "ven.json").read_text())
    config.update(parse_sets(args.set))
    ven_id = config["venId"]
    identity = topics.ven_identity(ven_id)
    plat = SitePlatform(args.site, Path(args.repo))
    if plat.site_dir.exists():
        plat.stop()
        shutil.rmtree(plat.site_dir)
    rng = random.Random(args.seed)
    bus = None
    try:
        plat.start()
        plat.install_lib("drivers")
        install_site(load_site(ROOT, "demo"), plat, {DRIVER})
        plat.install_agent(identity, path=args.ven_path, config=config)
        bus = BusClient(plat, "bench.client").connect()
        reports: list[tuple[float, dict[str, Any]]] = []
        acks: dict[str, float] = {}

        def on_telemetry(peer, sender, bus_, topic, headers, message):
            if isinstance(message, dict):
                reports.append((time.perf_counter(), message))

        def on_ack(peer, sender, bus_, topic, headers, message):
            if isinstance(message, dict):
                acks[str(message.get("correlationId"))] = time.perf_counter()

        bus.subscribe(topics.bus_telemetry(ven_id), on_telemetry)
        bus.subscribe(topics.bus_ack(ven_id), on_ack)
        meters = bus.subscribe(topics.device_all_topic(config["meter"]["path"]))
        wait_for(lambda: bus.rpc(identity, VenRpc.STATUS).get("meterKw") is not None, timeout=90,
                 what="the VEN's first meter reading")
        wait_for(lambda: len(meters) >= 3, timeout=30, what="three meter publishes")
        pid = driver_pid(plat.home)

        rtt = []
        for _ in range(50):
            t0 = time.perf_counter()
            bus.rpc(DRIVER, DriverRpc.GET_POINT, config["meter"]["path"], config["meter"]["powerPoint"])
            rtt.append((time.perf_counter() - t0) * 1000.0)
            gevent.sleep(0.02)
        c0, w0 = cpu_seconds(pid), time.monotonic()
        gevent.sleep(args.idle_s)
        idle_cpu = 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - w0)

        shed_s: list[float] = []
        over_kw: list[float] = []
        misses = 0
        c0, w0 = cpu_seconds(pid), time.monotonic()
        for i in range(args.events):
            gevent.sleep(rng.uniform(0.0, PERIOD_S))
            event_id = f"shed-{i}-{int(time.time())}"
            start_at = len(reports)
            t0 = time.perf_counter()
            bus.publish(topics.bus_cmd(ven_id), {"op": "event", "correlationId": f"c-{event_id}",
                                                 "eventId": event_id, "requestedReductionKw": args.kw,
                                                 "durationS": args.duration_s})
            reached: float | None = None
            peak = float("-inf")
            deadline = t0 + args.timeout_s
            while time.perf_counter() < deadline:
                for at, msg in reports[start_at:]:
                    if msg.get("eventId") != event_id:
                        continue
                    shed = float(msg.get("shedPowerKw") or 0.0)
                    if at - t0 <= 10.0:
                        peak = max(peak, shed)
                    if reached is None and shed >= FRACTION * args.kw:
                        reached = at - t0
                start_at = len(reports)
                if reached is not None and time.perf_counter() - t0 > 10.0:
                    break
                gevent.sleep(0.02)
            if reached is None:
                misses += 1
                print(f"   event {i}: no report at {FRACTION:.0%} of {args.kw} kW within {args.timeout_s:.0f} s")
            else:
                shed_s.append(reached)
            if peak > float("-inf"):
                over_kw.append(peak - args.kw)
            bus.publish(topics.bus_cmd(ven_id), {"op": "restore", "correlationId": f"r-{event_id}",
                                                 "eventId": event_id})
            wait_for(lambda: not bus.rpc(identity, VenRpc.STATUS).get("actions"), timeout=60, step=0.2,
                     what="every load restored")
            gevent.sleep(2 * PERIOD_S + 0.5)  # until the driver's publishes show the restored site
        events_cpu = 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - w0)
        status = bus.rpc(identity, VenRpc.STATUS)
        counters = status.get("counters", {})
        print(f"shed time on a real platform (site {args.site}, demo devices, {args.kw:g} kW events, "
              f"config overrides {parse_sets(args.set) or 'none'})")
        print(f"   command publish -> reported shed >= {FRACTION:.0%} of request  {summary(shed_s)}"
              f"  misses {misses}")
        print(f"   largest reported shed above the request (first 10 s)      {summary(over_kw, 'kW')}")
        print(f"   raw: get_point round trip client -> platform.driver        {summary(rtt, 'ms')}")
        print(f"   raw: the driver's scrape / publish period                   {PERIOD_S:.1f} s")
        print(f"   platform.driver CPU: no event {idle_cpu:5.2f} %, during the events {events_cpu:5.2f} % of one core"
              f" ({events_cpu / idle_cpu if idle_cpu > 0 else float('nan'):.2f}x)")
        print(f"   VEN counters: meter_live_reads {counters.get('meter_live_reads', 0)}, "
              f"commands {counters.get('commands', 0)}, events_started {counters.get('events_started', 0)}")
    finally:
        if bus is not None:
            bus.close()
        plat.stop()
        shutil.rmtree(plat.site_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=12)
    parser.add_argument("--kw", type=float, default=2.0)
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--timeout-s", type=float, default=30.0, help="longest wait for one event's shed")
    parser.add_argument("--idle-s", type=float, default=30.0, help="driver CPU window with no event")
    parser.add_argument("--site", default="bench-shed-ven", help="the site name of this run's platform")
    parser.add_argument("--ven-path", default="agents/ven_load_control", help="the VEN agent folder to install")
    parser.add_argument("--repo", default=str(ROOT),
                        help="the checkout to install from (e.g. a `git worktree` of an older commit)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a key of the demo ven.json (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    run(parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
