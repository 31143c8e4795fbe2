"""Cost of dr.web's live state and of its REST handlers, in process (no platform).

    /var/lib/volttron-dr/venv/bin/python bench/web_livestate.py [--vens 1000] [--rounds 30]

1. Telemetry ingest: a bridge batch (`dr/batch/telemetry`, one item per VEN, every VEN reporting once per
   5 s round) into LiveState, per item. Raw baseline in the same run: parsing the same items with
   `Telemetry.from_payload` alone (what any consumer of the batch pays).
2. Memory of the live state once every VEN's history is full (tracemalloc), against the raw payload dicts
   of one round (what holding only the latest message per VEN would cost).
3. A flood of made-up venIds (`--flood`, default 100,000 in batches of 1,000) once the registry is known:
   cost per refused item and what the live state grew by (nothing should be held).
4. REST: GET /api/dashboard and POST /api/events/ (refused at the edge, and accepted by the in-process
   dr.vtn) through Flask's test client; raw baseline: a Flask route returning a constant JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask import Flask, jsonify  # noqa: E402

from dr_common.payloads import Telemetry  # noqa: E402
from dr_web.livestate import LiveState  # noqa: E402

T0 = 1_800_000_000.0


def batch(vens: int, ts: float) -> dict:
    return {"items": [{"venId": f"ven-{i:05d}", "ts": ts + i * 0.001, "usedPowerKw": 4.0 + i % 7 * 0.1,
                       "shedPowerKw": 0.5, "baselinePowerKw": 4.5 + i % 7 * 0.1, "requestedReductionKw": 0.5,
                       "eventId": "evt-bench"} for i in range(vens)]}


def ingest(vens: int, rounds: int) -> None:
    batches = [batch(vens, T0 + 5 * r) for r in range(rounds)]
    t0 = time.perf_counter()
    for b in batches:
        for item in b["items"]:
            Telemetry.from_payload(item)
    raw = (time.perf_counter() - t0) / (vens * rounds)
    live = LiveState()
    t0 = time.perf_counter()
    for b in batches:
        live.on_message("dr/batch/telemetry", b)
    ours = (time.perf_counter() - t0) / (vens * rounds)
    assert live.received == vens * rounds and len(live.latest) == vens
    print(f"ingest, {vens} VENs x {rounds} rounds: LiveState {ours * 1e6:.1f} us/item "
          f"(raw Telemetry.from_payload {raw * 1e6:.1f} us/item, x{ours / raw:.2f}); "
          f"one 5 s round of {vens} VENs costs {ours * vens * 1000:.1f} ms of the agent's time")


def memory(vens: int) -> None:
    now = [T0]
    tracemalloc.start()
    live = LiveState(clock=lambda: now[0])
    for r in range(max(live.ven_history_len, live.history_len)):
        now[0] = T0 + 5 * r
        live.on_message("dr/batch/telemetry", batch(vens, now[0]))
    ours, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    one_round = batch(vens, T0)  # noqa: F841  (held while measured)
    raw, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"memory, {vens} VENs with {live.ven_history_len} points each and {len(live.site)} site points: "
          f"{ours / 1e6:.1f} MB (raw: one round of payload dicts {raw / 1e6:.1f} MB)")


def flood(n: int) -> None:
    live = LiveState(clock=lambda: T0)
    live.set_registered(f"ven-{i:05d}" for i in range(1000))
    batches = [{"items": [{"venId": f"fake-{b:04d}-{i:04d}", "usedPowerKw": 1e6} for i in range(1000)]}
               for b in range(max(1, n // 1000))]
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    t0 = time.perf_counter()
    refused = sum(live.on_message("dr/batch/telemetry", b) for b in batches)
    elapsed = time.perf_counter() - t0
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    total = len(batches) * 1000
    assert refused == total and not live.latest
    print(f"flood of {total} made-up venIds: {elapsed / total * 1e6:.1f} us/item refused, live state grew "
          f"{grown / 1e3:.0f} kB, VENs held {len(live.latest)}, site total "
          f"{live.site_series()[-1]['usedPowerKw'] if live.site else 0.0} kW")


def timed(client, method: str, path: str, n: int, **kwargs) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.open(path, method=method, **kwargs)
        samples.append(time.perf_counter() - t0)
        assert response.status_code < 500, response.get_data(as_text=True)
    return statistics.median(samples) * 1000


def rest(vens: int) -> None:
    from dr_tools.webharness import TOKEN, WebHarness

    raw_app = Flask("raw")
    raw_app.add_url_rule("/raw", "raw", lambda: jsonify({"ok": True, "n": 1}))
    raw_ms = timed(raw_app.test_client(), "GET", "/raw", 500)
    with tempfile.TemporaryDirectory() as folder:
        web = WebHarness(Path(folder))
        try:
            for i in range(vens):
                web.vtn.register_ven({"venId": f"ven-{i:05d}", "transport": "mqtt"})
            web.live.on_message("dr/batch/telemetry", batch(vens, time.time()))
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            dash_ms = timed(web.client, "GET", "/api/dashboard", 50)
            bad_ms = timed(web.client, "POST", "/api/events/", 500, headers=headers,
                           data=json.dumps({"startTime": "soon", "durationS": 60, "kw": 1}))
            start = datetime.now(timezone.utc) + timedelta(hours=1)
            good = [json.dumps({"startTime": (start + timedelta(minutes=i)).isoformat(), "durationS": 60, "kw": 1,
                                "allVens": True})
                    for i in range(100)]
            samples = []
            for body in good:
                t0 = time.perf_counter()
                assert web.client.post("/api/events/", data=body, headers=headers).status_code == 201
                samples.append(time.perf_counter() - t0)
            create_ms = statistics.median(samples) * 1000
        finally:
            web.close()
    print(f"REST (median, Flask test client): GET /api/dashboard with {vens} VENs {dash_ms:.2f} ms, "
          f"POST /api/events/ refused at the edge {bad_ms:.3f} ms, created by dr.vtn (SQLite) {create_ms:.2f} ms "
          f"(raw Flask JSON route {raw_ms:.3f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--flood", type=int, default=100_000)
    args = parser.parse_args()
    ingest(args.vens, args.rounds)
    memory(args.vens)
    flood(args.flood)
    rest(args.vens)


if __name__ == "__main__":
    main()
