#!/usr/bin/env python3
"""dr.vtn dispatch and memory figures, each next to a raw baseline measured in the same run.

1. In process (always): activation instant -> 1,000 commands handed to the bridge sender for 1,000
   registered MQTT VENs (VtnService with its real SQLite store; the sender JSON-encodes the batch as the
   bus would), then -> persisted. Raw baselines: json.dumps of 1,000 prebuilt commands (the least any
   dispatcher must do) and 1,000 `Command.to_payload()` + json.dumps (a naive build).
   Memory: tracemalloc of the VTN's state with 10,000 VENs registered vs. the 10,000 registration dicts.
2. On a real platform (unless --no-platform): a throwaway site with dr.vtn installed; 1,000 MQTT VENs
   registered over RPC; an event starting 2 s ahead; a subscriber on dr/batch/cmd (where dr.mqtt listens)
   times the batch's arrival against the start instant. Raw baseline: one 1,000-command batch published
   by a plain client agent -> the same subscriber. Then dr.vtn's resident memory (VmRSS) with 0 and with
   10,000 VENs registered.

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/vtn_dispatch.py
Targets: activation -> batch handed over < 50 ms for 1,000 VENs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

from dr_vtn_dispatcher.config import parse_config  # noqa: E402
from dr_vtn_dispatcher.lifecycle import ManualScheduler  # noqa: E402
from dr_vtn_dispatcher.service import VtnService  # noqa: E402
from dr_vtn_dispatcher.store import Store, sqlite_url  # noqa: E402

from dr_common.payloads import Ack, Command  # noqa: E402

from dr_common.batches import batch_items

T0 = 1_800_000_000.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def fmt(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values):7.2f} ms  [min {values[0]:.2f} - max {values[-1]:.2f}]"


class TimingSender:
    """Hands batches over like the bus would (JSON-encoded) and notes when each hand-off finished."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, int, int, str]] = []

    def send_local(self, ven_id, payload) -> None:
        json.dumps(payload)

    def send_batch(self, payloads) -> None:
        data = json.dumps({"commands": payloads})
        self.batches.append((time.perf_counter(), len(payloads), len(data), payloads[0]["op"]))

    def publish_event(self, event) -> None:
        json.dumps(event)


def inprocess_dispatch(n: int, rounds: int) -> None:
    print(f"\n== in process: activation -> {n} commands handed to the bridge sender ({rounds} rounds)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(sqlite_url(str(Path(tmp) / "vtn.sqlite")))
        clock = ManualScheduler(T0)
        sender = TimingSender()
        svc = VtnService(store, clock, sender, parse_config({}), rng=random.Random(1))
        svc.start()
        for i in range(n):
            svc.register_ven({"venId": f"ven-{i:05d}", "transport": "mqtt", "maxShedKw": 5.0})
        handoff, persisted = [], []
        size = 0
        for _ in range(rounds):
            start = clock.now() + 10
            event = svc.create_event({"startTime": iso(start), "durationS": 600, "requestedReductionKw": n * 1.5,
                                      "allVens": True})
            clock.advance_to(start - 0.001)  # whatever is due before the start instant runs first
            sender.batches.clear()
            t_fire = time.perf_counter()
            clock.advance_to(start)  # the lifecycle timer fires: activation, allocation, render, hand-off, persist
            t_done = time.perf_counter()
            [(t_batch, count, size, _)] = [b for b in sender.batches if b[3] == "event"]
            assert count == n
            handoff.append((t_batch - t_fire) * 1000)
            persisted.append((t_done - t_fire) * 1000)
            sender.batches.clear()
            svc.stop_event(event["eventId"])
            # the bridge's batched acks of the restores come back (as dr/batch/ack would bring them)
            restores = [cid for cid, rec in svc.book.records.items() if rec.op == "restore" and rec.pending]
            svc.on_acks([Ack(correlation_id=cid, ok=True, op="restore", ven_id=svc.book.records[cid].ven_id)
                         for cid in restores])
            clock.advance(1)
        svc.stop()
        store.close()
    prebuilt = [Command(op="event", correlation_id=f"evt-x:m0:r0:event:ven-{i:05d}", ven_id=f"ven-{i:05d}",
                        event_id="evt-x", requested_reduction_kw=1.5, start_time=datetime.now(timezone.utc),
                        until=datetime.now(timezone.utc)).to_payload() for i in range(n)]
    raw_json, naive = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        json.dumps({"commands": prebuilt})
        raw_json.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        now = datetime.now(timezone.utc)
        built = [Command(op="event", correlation_id=f"evt-y:m0:r0:event:ven-{i:05d}", ven_id=f"ven-{i:05d}",
                         event_id="evt-y", requested_reduction_kw=1.5, start_time=now, until=now).to_payload()
                 for i in range(n)]
        json.dumps({"commands": built})
        naive.append((time.perf_counter() - t) * 1000)
    print(f"  dr.vtn activation -> batch handed over : {fmt(handoff)}   (target < 50 ms;"
          f" batch {size / 1024:.0f} KiB)")
    print(f"  dr.vtn activation -> handed + persisted: {fmt(persisted)}")
    print(f"  raw: json.dumps of {n} prebuilt commands  : {fmt(raw_json)}")
    print(f"  raw: {n} x Command.to_payload + json.dumps: {fmt(naive)}")
    ratio = statistics.median(handoff) / statistics.median(raw_json)
    print(f"  ratio dr.vtn hand-off / raw json.dumps   : {ratio:.1f}x")


def inprocess_memory(n: int) -> None:
    print(f"\n== in process: memory of the VTN's state with {n} VENs registered")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(sqlite_url(str(Path(tmp) / "vtn.sqlite")))
        svc = VtnService(store, ManualScheduler(T0), TimingSender(), parse_config({}))
        svc.start()
        payloads = [{"venId": f"ven-{i:05d}", "name": f"Home {i}", "site": f"site-{i % 100}",
                     "group": f"g{i % 10}", "transport": "mqtt", "maxShedKw": 5.0} for i in range(n)]
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        raw = [dict(p) for p in payloads]
        raw_bytes = tracemalloc.get_traced_memory()[0] - base
        del raw
        base = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        with store.engine.begin():  # one connection warm; each register is still its own transaction
            pass
        for payload in payloads:
            svc.register_ven(payload)
        took = time.perf_counter() - t
        state_bytes = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        svc.stop()
        store.close()
    print(f"  dr.vtn registry of {n} VENs: {state_bytes / 2**20:6.2f} MiB ({state_bytes / n:.0f} B per VEN);"
          f" registering took {took:.1f} s ({took / n * 1e3:.2f} ms per VEN incl. its SQLite write)")
    print(f"  raw: {n} registration dicts: {raw_bytes / 2**20:6.2f} MiB ({raw_bytes / n:.0f} B per VEN)")


def on_platform(site: str, n: int, rounds: int, memory_vens: int, keep: bool) -> None:
    import shutil

    import gevent

    from dr_common import topics
    from dr_ops.busclient import BusClient
    from dr_ops.platformctl import SitePlatform

    print(f"\n== real platform (site {site}): activation -> {n} commands on {topics.BUS_CMD_BATCH}")
    plat = SitePlatform(site)
    if plat.site_dir.exists():
        plat.stop()
        shutil.rmtree(plat.site_dir)
    plat.start()
    client = None
    try:
        plat.install_agent(topics.VTN_IDENTITY, path="agents/vtn_dispatcher",
                           config={"retryInitialS": 5.0, "flushIntervalS": 1.0})
        client = BusClient(plat, "bench.client").connect()

        def rpc(method, *args, **kwargs):
            result = client.rpc(topics.VTN_IDENTITY, method, *args, timeout=30, **kwargs)
            if isinstance(result, dict) and "error" in result:
                raise RuntimeError(f"{method}: {result}")
            return result

        deadline = time.time() + 30
        while True:
            try:
                if rpc("health").get("ok"):
                    break
            except (gevent.Timeout, RuntimeError):
                pass
            if time.time() > deadline:
                raise RuntimeError("dr.vtn did not become healthy")
            gevent.sleep(0.5)
        rss_empty = rpc("health")["rssKb"]

        def register(ids):
            for i in ids:
                rpc("register_ven", {"venId": f"ven-{i:05d}", "transport": "mqtt", "maxShedKw": 5.0})

        def register_range(lo, hi, workers=8):
            t = time.perf_counter()
            chunks = [range(lo + k, hi, workers) for k in range(workers)]
            gevent.joinall([gevent.spawn(register, c) for c in chunks], raise_error=True)
            return time.perf_counter() - t

        took = register_range(0, n)
        print(f"  registered {n} VENs over RPC in {took:.1f} s")
        arrivals: list[tuple[float, int]] = []

        def on_batch(peer, sender, bus, topic, headers, message):
            commands = batch_items(message, "commands") or [{}]
            if commands[0].get("op") == "event":  # restores of the previous round are not this round's
                arrivals.append((time.time(), len(commands)))

        client.subscribe(topics.BUS_CMD_BATCH, on_batch)
        raw_arrivals: list[float] = []
        client.subscribe("bench/raw/batch", lambda *a: raw_arrivals.append(time.time()))
        template = {"op": "event", "eventId": "evt-raw", "requestedReductionKw": 1.5,
                    "startTime": iso(time.time()), "until": iso(time.time() + 600), "issuedAt": iso(time.time())}
        raw_batch = {"commands": [dict(template, correlationId=f"evt-raw:{i}", venId=f"ven-{i:05d}")
                                  for i in range(n)]}
        vtn_ms, raw_ms, rpc_ms, inside_ms = [], [], [], []
        for _ in range(rounds):
            t = time.time()
            not_found = client.rpc(topics.VTN_IDENTITY, "update_ven", "no-such-ven", raw_batch, timeout=30)
            rpc_ms.append((time.time() - t) * 1000)
            assert not_found["code"] == "not_found"
            raw_arrivals.clear()
            t = time.time()
            client.publish("bench/raw/batch", raw_batch)
            while not raw_arrivals:
                gevent.sleep(0.001)
            raw_ms.append((raw_arrivals[0] - t) * 1000)

            arrivals.clear()
            start = time.time() + 2.0
            event = rpc("create_event", {"startTime": iso(start), "durationS": 600, "requestedReductionKw": n,
                                         "allVens": True})
            while not arrivals:
                gevent.sleep(0.001)
            arrived, count = arrivals[0]
            assert count == n, count
            vtn_ms.append((arrived - start) * 1000)
            gevent.sleep(0.3)
            inside_ms.append(rpc("health")["lastRound"]["handOffMs"])
            rpc("stop_event", event["eventId"])
            gevent.sleep(1.0)
        print(f"  dr.vtn start instant -> batch of {n} on the bus: {fmt(vtn_ms)}   (target < 50 ms)")
        print(f"  of which inside dr.vtn (timer fired -> publish returned): {fmt(inside_ms)}")
        print(f"  raw: client publish of a {n}-command batch -> same subscriber: {fmt(raw_ms)}")
        print(f"  raw: RPC carrying a {n}-command batch, round trip      : {fmt(rpc_ms)}")
        rss_n = rpc("health")["rssKb"]
        took = register_range(n, memory_vens)
        rss_big = rpc("health")["rssKb"]
        print(f"  registered {memory_vens - n} more VENs in {took:.1f} s")
        print(f"  dr.vtn resident memory: {rss_empty / 1024:.1f} MiB with 0 VENs (raw: the agent process"
              f" itself), {rss_n / 1024:.1f} MiB with {n}, {rss_big / 1024:.1f} MiB with {memory_vens}"
              f" (+{(rss_big - rss_empty) / 1024:.1f} MiB, {(rss_big - rss_empty) * 1024 / memory_vens:.0f} B per VEN)")
    finally:
        if client is not None:
            client.close()
        plat.stop()
        if not keep:
            shutil.rmtree(plat.site_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-vens", type=int, default=10_000)
    parser.add_argument("--no-platform", action="store_true", help="only the in-process figures")
    parser.add_argument("--site", default="bench-vtn", help="throwaway site name for the platform part")
    parser.add_argument("--keep-site", action="store_true")
    args = parser.parse_args()
    inprocess_dispatch(args.vens, args.rounds)
    inprocess_memory(args.memory_vens)
    if not args.no_platform:
        on_platform(args.site, args.vens, args.rounds, args.memory_vens, args.keep_site)
    return 0


if __name__ == "__main__":
    sys.exit(main())
