#!/usr/bin/env python3
"""OpenADR 3 webhooks: event create -> webhook received at each of N subscriptions, against a bare HTTP POST loop.

Setup (all on this machine): a webhook receiver in a process of its own (Python's threading HTTP server,
HTTP/1.1 keep-alive, a listen backlog of 1024, answers 204, notes the arrival time of each POST); dr.vtn's
service in this process as the agent builds it: SQLite store, `WebhookNotifier` with its store keep (every
delivery written before it is sent, removed once delivered), the callback policy allowing 127.0.0.1. N VEN
clients each subscribe to EVENT CREATE with a callback on the receiver (one host, a path per VEN).

For each N, the paths below, each on a VTN of its own; every webhooks round is followed by a bare round:
  webhooks: t0 = just before `oadr_create("events", ...)` by the business logic (the API call: validation, the
            dr.vtn event, the store, the fan-out to the matching subscriptions) -> each POST arrives at the
            receiver.
  bare:     t0 -> a plain loop in one thread POSTs the same N bodies (one pre-encoded JSON body, the token
            header) over one persistent `http.client` connection -> each POST arrives. The floor of the
            receiver and the loopback, with none of the VTN's work.
  fresh:    the webhooks path with a new connection per POST (no connection kept), as it is when every
            subscriber is a host of its own and this is the first change they are told of.
Per delivery latency = arrival (time.time in the receiver) - t0; p50/p99/max over every delivery of every
measured round (after one warm-up round per N, not counted). CPU per delivery: this process's CPU time over
the rounds (the VTN's whole path, store writes included, vs the bare loop) / deliveries; unlike the latencies
it hardly depends on what else the machine runs. The target: webhooks p99 < 1 s at N = 1,000.

Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/oadr_webhooks.py [--sizes 1,100,1000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dr_vtn_dispatcher.config import ConfigError, parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.oadr_notify import StoreKeep, WebhookNotifier

try:
    from dr_vtn_dispatcher.oadr_callbacks import PooledPoster
except ImportError:      # an earlier dr.vtn (new connections only): the `fresh` path is its only path
    PooledPoster = None
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url

BL = {"clientId": "bench-bl", "role": "bl", "venName": None}
EVENT = {"programID": "default", "intervalPeriod": {"start": "0001-01-01", "duration": "PT10M"},
         "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-1]}]}]}


def _serve(conn) -> None:
    """The receiver process: serves POSTs, answers the parent's `reset` / `times` / `stop` over the pipe."""
    arrivals: list[float] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            now = time.time()
            with lock:
                arrivals.append(now)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024      # the listen backlog of a real server; 5 (the default) drops SYNs (+1 s)

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    conn.send(server.server_port)
    while True:
        command = conn.recv()
        if command == "stop":
            server.shutdown()
            return
        with lock:
            if command == "reset":
                arrivals.clear()
                conn.send(True)
            elif command == "count":
                conn.send(len(arrivals))
            elif command == "times":
                conn.send(list(arrivals))


class ReceiverProcess:
    def __init__(self) -> None:
        self.conn, child = mp.Pipe()
        self.process = mp.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        self.port = self.conn.recv()

    def ask(self, command: str):
        self.conn.send(command)
        return self.conn.recv()

    def wait_for(self, n: int, timeout: float = 60.0) -> list[float]:
        deadline = time.monotonic() + timeout
        while self.ask("count") < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.ask('count')} of {n} webhooks arrived in {timeout:.0f} s")
            time.sleep(0.002)
        return self.ask("times")

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def fmt(values_ms: list[float]) -> str:
    return (f"p50 {percentile(values_ms, 50):8.1f}  p99 {percentile(values_ms, 99):8.1f}  max {max(values_ms):8.1f}"
            f"  (n={len(values_ms)})")


def make_vtn(folder: Path, workers: int | None, fresh: bool) -> tuple[VtnService, WebhookNotifier]:
    clock = ManualScheduler(time.time())
    store = Store(sqlite_url(str(folder / "vtn.sqlite")))
    options: dict = {"workers": workers} if workers else {}
    notifier = WebhookNotifier(keep=StoreKeep(store), **options)
    if fresh:
        notifier.post = PooledPoster(lambda: notifier.policy, max_hosts=0)
    try:
        config = parse_config({"openadr3": {"callbackPolicy": {"allowedHosts": ["127.0.0.1"]}}})
    except ConfigError:     # a dr.vtn without a callback policy (to measure an earlier version the same way)
        config = parse_config({})
    vtn = VtnService(store, clock, MemorySender(clock.now), config, rng=random.Random(1), notifier=notifier)
    vtn.start()
    return vtn, notifier


def webhook_round(vtn: VtnService, notifier: WebhookNotifier, receiver: ReceiverProcess, n: int,
                  out: dict) -> None:
    receiver.ask("reset")
    cpu0 = time.process_time()
    t0 = time.time()
    vtn.oadr_create("events", EVENT, BL)
    out["calls"].append((time.time() - t0) * 1000)
    out["hooks"] += [(t - t0) * 1000 for t in receiver.wait_for(n)]
    while not notifier.idle():                  # store rows of delivered ones removed
        time.sleep(0.005)
    out["cpu"] += time.process_time() - cpu0


def bare_round(receiver: ReceiverProcess, n: int, body: bytes, out: dict | None = None) -> list[float]:
    receiver.ask("reset")
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-token"}
    cpu0 = time.process_time()
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    for index in range(n):
        conn.request("POST", f"/ven-{index}", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
    conn.close()
    if out is not None:
        out["bare_cpu"] += time.process_time() - cpu0
    return [(t - t0) * 1000 for t in receiver.wait_for(n)]


def measure(n: int, rounds: int, workers: int | None, fresh: bool, receiver: ReceiverProcess) -> dict:
    """One VTN with N subscriptions: `rounds` events (after a warm-up one), each followed by a bare round."""
    with tempfile.TemporaryDirectory(prefix="oadr-webhooks-") as tmp:
        vtn, notifier = make_vtn(Path(tmp), workers, fresh)
        try:
            for index in range(n):
                who = {"clientId": f"ven-{index}", "role": "ven", "venName": f"ven-{index}"}
                vtn.oadr_create("subscriptions", {"clientName": who["clientId"], "objectOperations": [
                    {"objects": ["EVENT"], "operations": ["CREATE"], "bearerToken": f"token-{index}",
                     "callbackUrl": f"http://127.0.0.1:{receiver.port}/ven-{index}"}]}, who)
            receiver.ask("reset")
            sample = vtn.oadr_create("events", EVENT, BL)   # warm-up, not counted
            receiver.wait_for(n)
            body = json.dumps({"objectType": "EVENT", "operation": "CREATE", "object": sample, "targets": None},
                              separators=(",", ":")).encode()
            bare_round(receiver, n, body)
            out: dict = {"hooks": [], "bare": [], "calls": [], "cpu": 0.0, "bare_cpu": 0.0}
            for _ in range(rounds):
                webhook_round(vtn, notifier, receiver, n, out)
                out["bare"] += bare_round(receiver, n, body, out)
            out["counts"] = notifier.counters()
            return out
        finally:
            vtn.stop()
            vtn.store.close()


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000", help="subscription counts (default 1,100,1000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured events per size (default 5)")
    parser.add_argument("--workers", type=int, default=0, help="notifier worker threads (default: the notifier's)")
    args = parser.parse_args()
    receiver = ReceiverProcess()
    worst = None
    modes = [("webhooks", False)] + ([("fresh", True)] if PooledPoster is not None else [])
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for name, fresh in modes:
                got = measure(n, args.rounds, args.workers or None, fresh, receiver)
                counts = got["counts"]
                print(f"N={n:>5}  {name:8} {fmt(got['hooks'])}   create call "
                      f"{statistics.median(got['calls']):6.1f} ms; delivered {counts['webhooksDelivered']}, "
                      f"failed attempts {counts['webhookAttemptsFailed']}",
                      flush=True)
                deliveries = max(1, len(got["hooks"]))
                print(f"N={n:>5}  {'  bare':8} {fmt(got['bare'])}   (the bare rounds between those)", flush=True)
                print(f"         CPU of this process per delivery: {name} {got['cpu'] / deliveries * 1e6:6.0f} µs, "
                      f"bare {got['bare_cpu'] / deliveries * 1e6:6.0f} µs", flush=True)
                if n >= 1000 and name == "webhooks":
                    worst = max(worst or 0.0, percentile(got["hooks"], 99))
    finally:
        receiver.stop()
    if worst is not None:
        print(f"target webhooks p99 < 1000 ms at N >= 1000: {'met' if worst < 1000 else 'NOT met'} ({worst:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
