"""Load-control VEN figures: command received -> first set_point sent, planner time, resident memory.

    /var/lib/volttron-dr/venv/bin/python bench/ven_latency.py [--commands 100] [--rounds 2000] [--in-process-only]

Each figure is printed next to a raw baseline measured in the same run.

1. In process (no platform): a VenEngine on the demo site (ven.json, readings from the demo devices' physics),
   its state file in a temporary folder. Commands alternate event (2 kW) / restore, 1 s apart on the engine's
   clock; the figure is on_command()
   entry -> its ops ready, i.e. what the agent does between receiving a command and sending its first set_point
   (parse, plan, save the state file, build the ack). Raw baseline: Command.from_payload of the same payloads.
2. Planner, a site of 50 loads (10 each of EV charger, water heater, HVAC, circuit, battery): plan() for half
   the capacity, and a whole event command (views of 50 loads, closed-loop step, ops). Raw baseline: sorting the
   50 candidates by priority, the floor of any priority planner.
3. On a real platform (site `bench-ven`, started and removed by this script): platform.driver with the demo
   devices and the VEN agent with the demo ven.json. Commands are published on dr/cmd/<venId> one at a time;
   figures: the agent's own log of command received -> first set_point sent, bus publish -> ack received at the
   client, and the agent's resident memory (VmRSS of its process) after the run. Raw baselines: a set_point RPC
   round trip client -> platform.driver, a bus message published and received by the client itself, and the
   RSS of a bare Python process that imports VOLTTRON's Agent (the floor of any agent process).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from dr_ven_load_control.config import parse_config  # noqa: E402
from dr_ven_load_control.engine import VenEngine  # noqa: E402
from dr_ven_load_control.latency import percentile  # noqa: E402
from dr_ven_load_control.planner import Candidate, plan  # noqa: E402
from dr_ven_load_control.store import StateStore  # noqa: E402

from dr_common.payloads import Command  # noqa: E402

DEMO = ROOT / "platform-config" / "sites" / "demo"
BENCH_SITE = "bench-ven"
DRIVER = "platform.driver"


def summary(values_ms: list[float]) -> str:
    return (f"p50 {percentile(values_ms, 50):8.3f}  p99 {percentile(values_ms, 99):8.3f}  "
            f"max {max(values_ms):8.3f} ms  (n={len(values_ms)})")


def demo_readings() -> dict[str, dict[str, Any]]:
    """Every demo device's points, from the devices' physics built from the site's driver configs."""
    from dr_devices import build_device

    out = {}
    for path in sorted((DEMO / "driver" / "devices").rglob("*.json")):
        remote = dict(json.loads(path.read_text())["remote_config"])
        kind = remote.pop("driver_type")
        for key in ("site", "time_scale", "seed", "start_hour"):
            remote.pop(key, None)
        model = build_device(kind, remote, start_hour=14.0, seed=1)
        device = str(path.relative_to(DEMO / "driver" / "devices").with_suffix(""))
        out[device] = {name: model.read(name) for name in model.points}
    meter = out["demo/meter"]
    meter["PowerKw"] = 0.5 + sum(v["PowerKw"] for d, v in out.items() if d != "demo/meter")
    return out


# --- 1. in process ----------------------------------------------------------------------------------------------

def in_process_commands(rounds: int) -> None:
    cfg = parse_config(json.loads((DEMO / "ven.json").read_text()))
    readings = demo_readings()
    clock = [1_800_000_000.0]
    folder = Path(tempfile.mkdtemp(prefix="ven-bench-"))
    try:
        engine = VenEngine(cfg, StateStore(folder / "ven_state.json"), clock=lambda: clock[0])
        for _ in range(6):
            clock[0] += 5
            for device, values in readings.items():
                engine.on_device(device, values)
        payloads = []
        for i in range(rounds):
            if i % 2 == 0:
                payloads.append({"op": "event", "correlationId": f"b{i}", "eventId": f"e{i}",
                                 "requestedReductionKw": "2.0", "startTime": clock[0], "until": clock[0] + 3600})
            else:
                payloads.append({"op": "restore", "correlationId": f"b{i}"})
        raw, ours = [], []
        for payload in payloads:
            t0 = time.perf_counter()
            Command.from_payload(payload)
            raw.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            outcome = engine.on_command(payload)
            first_op = outcome.ops[0] if outcome.ops else None
            ours.append((time.perf_counter() - t0) * 1000)
            if first_op is None:
                raise SystemExit(f"command {payload['correlationId']} produced no op: {outcome.ack.to_payload()}")
            engine.ops_done([(op, None) for op in outcome.ops])
            clock[0] += 1.0
        print("1. command received -> first set_point ready, in process (demo site, state file saved each time)")
        print(f"   VEN engine            {summary(ours)}")
        print(f"   raw: parse only       {summary(raw)}")
        print(f"   ratio p50             {percentile(ours, 50) / percentile(raw, 50):8.1f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- 2. planner, 50 loads ---------------------------------------------------------------------------------------

KINDS = ("ev_charger", "water_heater", "hvac", "circuit", "battery")


def fifty_load_site() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    loads, readings = [], {}
    for i in range(50):
        kind = KINDS[i % 5]
        path = f"big/{kind}_{i}"
        entry: dict[str, Any] = {"name": f"{kind}_{i}", "kind": kind, "path": path, "priority": 10 * (i % 5) + i}
        if kind == "ev_charger":
            readings[path] = {"PowerKw": 7.2, "PowerLimitKw": 7.2, "RatedPowerKw": 7.2, "PluggedIn": True,
                              "SocPercent": 40.0, "EnergyNeededKwh": 30.0, "DepartureHours": 9.0}
        elif kind == "water_heater":
            readings[path] = {"PowerKw": 4.5, "TankTempC": 50.0, "SetpointC": 55.0, "DeadbandC": 5.0,
                              "ElementEnable": True, "RatedPowerKw": 4.5}
        elif kind == "hvac":
            entry["kwPerDegC"] = 2.3
            readings[path] = {"PowerKw": 2.5, "ZoneTempC": 24.0, "CoolingSetpointC": 24.0, "OutdoorTempC": 33.0,
                              "RatedPowerKw": 3.5}
        elif kind == "circuit":
            entry["circuit"] = f"C{i}"
            readings[path] = {f"C{i}PowerKw": 1.0, f"C{i}Enable": True, f"C{i}Critical": False}
        else:
            readings[path] = {"PowerKw": 0.0, "PowerSetpointKw": 0.0, "SocPercent": 80.0, "ReserveSocPercent": 20.0,
                              "MaxPowerKw": 5.0, "CapacityKwh": 13.5}
        loads.append(entry)
    readings["big/meter"] = {"PowerKw": 250.0}
    return ({"venId": "bench-50", "meter": {"path": "big/meter"}, "loads": loads,
             "limits": {"maxRequestedKw": 1000}}, readings)


def planner(rounds: int) -> None:
    config, readings = fifty_load_site()
    cfg = parse_config(config)
    engine = VenEngine(cfg, None, clock=lambda: 1_800_000_000.0)
    for device, values in readings.items():
        engine.on_device(device, values, now=1_800_000_000.0)
    views = engine.control.views(engine.event, 1_800_000_000.0)
    candidates = [Candidate(v.load_id, v.priority, v.capacity_kw, v.continuous, v.step_kw) for v in views.values()]
    need = sum(c.available_kw for c in candidates) / 2
    raw, ours, full = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sorted(candidates, key=lambda c: (c.priority, c.load_id))
        raw.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        result = plan(candidates, need, margin_kw=0.5)
        ours.append((time.perf_counter() - t0) * 1000)
    if result.shortfall_kw > 0.01:
        raise SystemExit(f"planner fell short by {result.shortfall_kw} kW")
    for _ in range(max(50, rounds // 20)):
        fresh = VenEngine(cfg, None, clock=lambda: 1_800_000_000.0)
        for device, values in readings.items():
            fresh.on_device(device, values, now=1_800_000_000.0)
        t0 = time.perf_counter()
        outcome = fresh.on_command({"op": "event", "correlationId": "p", "requestedReductionKw": need,
                                    "startTime": 1_800_000_000.0, "until": 1_800_003_600.0})
        full.append((time.perf_counter() - t0) * 1000)
        if not outcome.ops:
            raise SystemExit("the 50-load event produced no op")
    print(f"2. planner, 50 loads, need {need:.1f} kW -> {len(result.allocations)} actions")
    print(f"   plan()                {summary(ours)}")
    print(f"   event command (views + step + ops, no state file)  {summary(full)}")
    print(f"   raw: sort 50 by prio  {summary(raw)}")
    print(f"   ratio p50 plan/sort   {percentile(ours, 50) / percentile(raw, 50):8.1f}x")


# --- 3. real platform -------------------------------------------------------------------------------------------

def bare_agent_rss_kb(python: str) -> int:
    code = ("import time, volttron.client.vip.agent, gevent\n"
            "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0], flush=True)\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1])


def on_platform(commands: int) -> None:
    import gevent

    from dr_common import topics
    from dr_common.topics import DriverRpc, VenRpc
    from dr_ops.busclient import BusClient, wait_for
    from dr_ops.install_site import install_site
    from dr_ops.platformctl import SitePlatform
    from dr_ops.sitespec import load_site

    config = json.loads((DEMO / "ven.json").read_text())
    ven_id = config["venId"]
    identity = topics.ven_identity(ven_id)
    plat = SitePlatform(BENCH_SITE, ROOT)
    if plat.site_dir.exists():
        plat.stop()
        shutil.rmtree(plat.site_dir)
    try:
        plat.start()
        plat.install_lib("drivers")
        install_site(load_site(ROOT, "demo"), plat, {DRIVER})
        plat.install_agent(identity, path="agents/ven_load_control", config=config)
        bus = BusClient(plat, "bench.client").connect()
        acks: dict[str, float] = {}
        echo: list[float] = []

        def on_ack(peer, sender, bus_, topic, headers, message):
            acks[message.get("correlationId")] = time.perf_counter()

        def on_echo(peer, sender, bus_, topic, headers, message):
            echo.append(time.perf_counter())

        bus.subscribe(topics.bus_ack(ven_id), on_ack)
        bus.subscribe("bench/echo", on_echo)
        wait_for(lambda: bus.rpc(identity, VenRpc.STATUS).get("meterKw") is not None, timeout=60,
                 what="the VEN's first meter reading")
        rpc_raw, echo_raw, acked = [], [], []
        for i in range(commands):
            t0 = time.perf_counter()
            bus.rpc(DRIVER, DriverRpc.GET_POINT, "demo/meter", "BaseLoadKw")
            rpc_raw.append((time.perf_counter() - t0) * 1000)
            seen = len(echo)
            t0 = time.perf_counter()
            bus.publish("bench/echo", {"i": i})
            wait_for(lambda seen=seen: len(echo) > seen, timeout=10, step=0.0005, what="echo")
            echo_raw.append((echo[-1] - t0) * 1000)
            now = time.time()
            payload = ({"op": "event", "correlationId": f"bench-{i}", "eventId": f"bench-e{i}",
                        "requestedReductionKw": 2.0, "startTime": now, "until": now + 600}
                       if i % 2 == 0 else {"op": "restore", "correlationId": f"bench-{i}"})
            t0 = time.perf_counter()
            bus.publish(topics.bus_cmd(ven_id), payload)
            wait_for(lambda key=f"bench-{i}": key in acks, timeout=10, step=0.0005, what=f"ack of bench-{i}")
            acked.append((acks[f"bench-{i}"] - t0) * 1000)
            gevent.sleep(0.05)
        status = bus.rpc(identity, VenRpc.STATUS)
        latency = status["latencyMs"]
        python = str(Path(sys.executable))
        bare = bare_agent_rss_kb(python)
        print(f"3. real platform, demo site, {commands} commands (event / restore alternating)")
        print(f"   command received -> first set_point sent (agent's log): p50 {latency['p50']:.3f}  "
              f"p99 {latency['p99']:.3f}  max {latency['max']:.3f} ms  (n={latency['count']})")
        print(f"   bus publish -> ack at the client  {summary(acked)}")
        print(f"   raw: set_point-class RPC round trip client -> platform.driver  {summary(rpc_raw)}")
        print(f"   raw: bus publish -> received by the publisher itself           {summary(echo_raw)}")
        print(f"   VEN agent resident memory {int(status['rssKb']) / 1024:.1f} MiB;"
              f" raw: bare Python + VOLTTRON Agent import {bare / 1024:.1f} MiB")
        bus.close()
    finally:
        plat.stop()
        shutil.rmtree(plat.site_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="in-process commands and planner runs")
    parser.add_argument("--commands", type=int, default=100, help="commands sent on the real platform")
    parser.add_argument("--in-process-only", action="store_true")
    args = parser.parse_args()
    in_process_commands(args.rounds)
    planner(args.rounds)
    if not args.in_process_only:
        on_platform(args.commands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
