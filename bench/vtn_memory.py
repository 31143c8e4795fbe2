#!/usr/bin/env python3
"""dr.vtn's memory with 100,000 VENs: resident memory after registration, after an event targeting all of them
is dispatched, and after every command is acked; next to a raw baseline measured in the same run.

Each figure comes from a process of its own (so one measurement's garbage is not the next one's baseline):
  ours   VtnService (the platform-free service dr.vtn runs, with its real store: SQLite in a temporary folder,
         or a throwaway PostgreSQL database) over N registered VENs (written to its store in bulk, as an import
         would, and loaded by `start()` like a restarted dr.vtn; --api-register registers each through
         `register_ven` instead, one transaction each). Then an event with allVens starts: N commands are built,
         handed to the sender (compacted and JSON-encoded as the bus would carry them, then dropped), and
         persisted; then N acks come back in batches of 1,000 (as dr.mqtt's dr/batch/ack brings them) and the
         journal is flushed.
  raw    the same N registrations as plain dicts, the N command payloads as dicts (what any dispatcher must hold
         at least once) and the N ack dicts, in a process with the same imports.
  trace  the `ours` steps under tracemalloc: the top allocation sites after registration and after the acks.
RSS = VmRSS of the process; each step's delta is against the process just before the VENs came in (imports
done, store open, service started over an empty registry).

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/vtn_memory.py [--vens 100000]
                                 [--no-postgres] [--no-trace] [--api-register]
Target: dr.vtn under 300 MB resident with 100,000 VENs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

T0 = 1_800_000_000.0
ACK_BATCH = 1000
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def rss_mib() -> float:
    """The process's resident memory (VmRSS), MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss() -> float:
    gc.collect()
    return rss_mib()


class PgDatabase:
    """A throwaway database on the local PostgreSQL (trust auth), dropped by `drop`."""

    def __init__(self, prefix: str) -> None:
        import psycopg2

        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
        self._admin.autocommit = True
        with self._admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{self.name}"

    def drop(self) -> None:
        with self._admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.close()


def pg_reachable() -> bool:
    import socket

    try:
        with socket.create_connection((PG["host"], PG["port"]), timeout=2):
            return True
    except OSError:
        return False


class EncodingSender:
    """Encodes what dr.vtn hands over as the bus would carry it, keeps nothing but counts."""

    def __init__(self) -> None:
        self.commands = 0
        self.batch_bytes = 0

    def send_local(self, ven_id: str, payload: dict[str, Any]) -> None:
        json.dumps(payload)

    def send_batch(self, payloads: list[dict[str, Any]]) -> None:
        from dr_common.batches import compact_batch

        self.batch_bytes = max(self.batch_bytes, len(json.dumps(compact_batch(payloads, "commands"))))
        self.commands += len(payloads)

    def publish_event(self, event: dict[str, Any]) -> None:
        json.dumps(event)

    def publish_telemetry(self, ven_id: str, payload: dict[str, Any]) -> None:
        json.dumps(payload)


def registration(i: int) -> dict[str, Any]:
    return {"venId": f"ven-{i:06d}", "name": f"Home {i}", "site": f"site-{i % 100}", "group": f"g{i % 10}",
            "transport": "mqtt", "maxShedKw": 5.0}


def iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


# ------------------------------------------------------------------------------------------ children ----
def child_ours(n: int, url: str, api_register: bool, trace: bool) -> dict[str, Any]:
    import tracemalloc

    from dr_common.payloads import Ack
    from dr_vtn_dispatcher.config import parse_config
    from dr_vtn_dispatcher.lifecycle import ManualScheduler
    from dr_vtn_dispatcher.service import VtnService
    from dr_vtn_dispatcher.store import Store

    out: dict[str, Any] = {"steps": {}, "took": {}, "top": {}}
    store = Store(url)
    clock = ManualScheduler(T0)
    sender = EncodingSender()
    config = parse_config({"maxRequestedKw": max(10_000.0, n * 2.0)})
    svc = VtnService(store, clock, sender, config)
    if api_register:
        svc.start()
    base = settled_rss()
    if trace:
        tracemalloc.start(1)

    def top(label: str) -> None:
        if not trace:
            return
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snap.statistics("lineno")
        total = sum(s.size for s in stats)
        out["top"][label] = {"totalMiB": total / 2**20,
                             "sites": [(f"{s.traceback[0].filename.rsplit('/', 2)[-2:][-1]}:{s.traceback[0].lineno}",
                                        s.size / 2**20, s.count) for s in stats[:8]]}

    t = time.perf_counter()
    if api_register:
        for i in range(n):
            svc.register_ven(registration(i))
        svc.flush()
    else:
        svc.start()
    out["took"]["registerS"] = time.perf_counter() - t
    assert len(svc.vens) == n, len(svc.vens)
    out["steps"]["registered"] = settled_rss() - base
    top("registered")

    start = clock.now() + 10
    event = svc.create_event({"startTime": iso(start), "durationS": 3600, "requestedReductionKw": n * 1.5,
                              "allVens": True})
    clock.advance_to(start - 0.001)
    t = time.perf_counter()
    clock.advance_to(start)  # activation: allocation, N commands, hand-off
    out["took"]["dispatchS"] = time.perf_counter() - t
    assert sender.commands == n, sender.commands
    t = time.perf_counter()
    svc.flush()
    out["took"]["persistS"] = time.perf_counter() - t
    out["steps"]["dispatched"] = settled_rss() - base
    book = svc.book.records
    by_ven = {rec.ven_id: cid for cid, rec in book.items() if rec.op == "event"}
    t = time.perf_counter()
    for lo in range(0, n, ACK_BATCH):
        acks = []
        for i in range(lo, min(n, lo + ACK_BATCH)):
            ven_id = registration(i)["venId"]
            acks.append(Ack(correlation_id=by_ven[ven_id], ok=True, op="event", ven_id=ven_id,
                            accepted_reduce_kw=1.5))
        svc.on_acks(acks)
    out["took"]["acksS"] = time.perf_counter() - t
    del by_ven
    t = time.perf_counter()
    svc.flush()
    out["took"]["ackFlushS"] = time.perf_counter() - t
    assert svc.book.pending_count() == 0, svc.book.pending_count()
    acked = sum(1 for p in svc.participants[event["eventId"]].values() if p.state == "acked")
    assert acked == n, acked
    out["steps"]["acked"] = settled_rss() - base
    top("acked")
    out["baseMiB"] = base
    out["batchKiB"] = sender.batch_bytes / 1024
    svc.stop()
    store.close()
    return out


def child_seed(n: int, url: str) -> dict[str, Any]:
    """An import: N VENs written to the store in bulk (5,000 per transaction) before dr.vtn starts over them."""
    from dr_vtn_dispatcher.model import Ven
    from dr_vtn_dispatcher.store import Store

    store = Store(url)
    t = time.perf_counter()
    for lo in range(0, n, 5000):
        regs = [registration(i) for i in range(lo, min(n, lo + 5000))]
        store.save(vens=[Ven(ven_id=p["venId"], name=p["name"], site=p["site"], group=p["group"],
                             max_shed_kw=p["maxShedKw"], transport=p["transport"], registered_at=T0, updated_at=T0)
                         for p in regs])
    store.close()
    return {"took": time.perf_counter() - t}


def child_raw(n: int) -> dict[str, Any]:
    from dr_common.payloads import Command  # the same imports as `ours`, so the base is comparable
    from dr_vtn_dispatcher.service import VtnService  # noqa: F401
    from datetime import datetime, timezone

    out: dict[str, Any] = {"steps": {}}
    base = settled_rss()
    regs = [registration(i) for i in range(n)]
    out["steps"]["registered"] = settled_rss() - base
    now = datetime.fromtimestamp(T0, timezone.utc)
    template = Command(op="event", correlation_id="", ven_id="", event_id="evt-x", requested_reduction_kw=1.5,
                       start_time=now, until=now, issued_at=now).to_payload()
    commands = [dict(template, correlationId=f"evt-x:m0:r0:event:{r['venId']}:{uuid.uuid4().hex[:16]}",
                     venId=r["venId"]) for r in regs]
    out["steps"]["dispatched"] = settled_rss() - base
    acks = [{"correlationId": c["correlationId"], "venId": c["venId"], "ok": True, "op": "event",
             "acceptedReduceKw": 1.5} for c in commands]
    out["steps"]["acked"] = settled_rss() - base
    out["held"] = len(regs) + len(commands) + len(acks)
    out["baseMiB"] = base
    return out


def run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ report ----
def print_rows(n: int, label: str, ours: dict[str, Any], raw: dict[str, Any]) -> None:
    print(f"\n== {label}: {n:,} VENs (RSS delta over the process before the VENs came in; base"
          f" {ours['baseMiB']:.0f} MiB ours, {raw['baseMiB']:.0f} MiB raw)")
    print(f"  {'step':<34}{'dr.vtn MiB':>12}{'raw MiB':>10}{'ratio':>8}{'dr.vtn B/VEN':>14}")
    for step, text in (("registered", "VENs registered"), ("dispatched", "+ event dispatched to all"),
                       ("acked", "+ every command acked")):
        o, r = ours["steps"][step], raw["steps"][step]
        print(f"  {text:<34}{o:>12.1f}{r:>10.1f}{o / r if r else float('nan'):>8.2f}{o * 2**20 / n:>14.0f}")
    total = ours["baseMiB"] + ours["steps"]["acked"]
    print(f"  dr.vtn process resident at the end: {total:.0f} MiB (target < 300 MB = {300e6 / 2**20:.0f} MiB)")
    took = ours["took"]
    print("  took: " + ", ".join(f"{k} {v:.2f} s" for k, v in took.items()) + f"; batch {ours['batchKiB']:.0f} KiB")


def print_top(label: str, trace: dict[str, Any]) -> None:
    for step, data in trace["top"].items():
        print(f"\n  tracemalloc ({label}, {step}): {data['totalMiB']:.1f} MiB traced; top sites:")
        for site, mib, count in data["sites"]:
            print(f"    {site:<34}{mib:>8.1f} MiB {count:>10,} blocks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vens", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--api-register", action="store_true",
                        help="register each VEN through register_ven, one transaction each (slower on PostgreSQL)")
    parser.add_argument("--child", choices=("ours", "raw", "seed"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "ours":
        print(json.dumps(child_ours(args.vens, args.url, args.api_register, args.trace)))
        return 0
    if args.child == "seed":
        print(json.dumps(child_seed(args.vens, args.url)))
        return 0
    if args.child == "raw":
        print(json.dumps(child_raw(args.vens)))
        return 0
    n = str(args.vens)
    extra = ["--api-register"] if args.api_register else []
    dbs: list[tuple[str, Any]] = [("SQLite", None)]
    if not args.no_postgres:
        if pg_reachable():
            dbs.append(("PostgreSQL", "pg"))
        else:
            print("PostgreSQL is not reachable at 127.0.0.1:5432: its rows are skipped")
    for label, kind in dbs:
        with tempfile.TemporaryDirectory() as tmp:
            def url() -> tuple[str, PgDatabase | None]:
                if kind is None:
                    return f"sqlite:///{Path(tmp) / f'vtn-{uuid.uuid4().hex[:6]}.sqlite'}", None
                db = PgDatabase("vtn_memory")
                return db.url, db

            results = {}
            for mode in (["ours", "raw"] + ([] if args.no_trace else ["trace"])):
                target, db = url()
                try:
                    if mode == "raw":
                        results[mode] = run_child(["--child", "raw", "--vens", n])
                    else:
                        if not args.api_register:
                            run_child(["--child", "seed", "--vens", n, "--url", target])
                        results[mode] = run_child(["--child", "ours", "--vens", n, "--url", target, *extra,
                                                   *(["--trace"] if mode == "trace" else [])])
                finally:
                    if db is not None:
                        db.drop()
            print_rows(args.vens, f"dr.vtn on {label}", results["ours"], results["raw"])
            if "trace" in results:
                print_top(label, results["trace"])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
