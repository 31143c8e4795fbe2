"""The bridge's MQTT link with paho's private internals overridden (`link._NativeSocketClient`: block writes,
buffered reads, the fast PUBACK/PUBLISH path) against paho's public API only (`link.PublicApiClient`), in one
run, rounds alternating.

Per round and variant, with a private Mosquitto on a free port:
  * fan-out: `send_batch` of N commands -> all N at a bare subscriber (another process), and -> every PUBACK back;
  * fan-in: N acks published by another process as fast as it can -> all N items on the (recording) bus;
  * the CPU the bridge's process spent on both (hub and paho's thread).
Run with the platform's Python:  /var/lib/volttron-dr/venv/bin/python bench/mqtt_link_variants.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

import gevent
import paho.mqtt.client as mqtt
from dr_tools.fleet.brokers import Mosquitto
from dr_tools.fleet.workers import CountingSubscriber
from paho.mqtt.enums import CallbackAPIVersion

from dr_common.mqtt import link as link_mod
from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore

VARIANTS = {"private-internals": None, "public-api": getattr(link_mod, "PublicApiClient", None)}


class CountingBus:
    def __init__(self) -> None:
        self.items = 0

    def publish(self, topic: str, message: dict) -> None:
        self.items += len(message.get("items", ()))


def _ack_publisher(port: int, n: int, go, done, started) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-acks", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    payloads = [(f"ven/ack/v-{i:05d}", json.dumps({"correlationId": f"c{i}", "ok": True, "op": "ping"}).encode())
                for i in range(n)]
    while True:
        go.wait()
        go.clear()
        started.value = time.time()
        infos = [client.publish(t, p, qos=1) for t, p in payloads]
        for info in infos:
            info.wait_for_publish(30)
        done.set()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.0005)
    return False


def run(n: int, rounds: int, variants: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="linkbench-"))
    broker = Mosquitto(folder / "broker", persistence=False).start()
    sub = CountingSubscriber("127.0.0.1", broker.port, ["ven/cmd/+"])
    sub.wait_ready()
    ctx = mp.get_context("fork")
    go, done, started = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    pub = ctx.Process(target=_ack_publisher, args=(broker.port, n, go, done, started), daemon=True)
    pub.start()
    chosen = {v: VARIANTS[v] for v in variants}
    figures: dict[str, dict[str, list[float]]] = {v: {"fanoutMs": [], "pubackMs": [], "faninMs": [], "cpuMs": []}
                                                  for v in chosen}
    commands = [{"venId": f"v-{i:05d}", "correlationId": f"c{i}"} for i in range(n)]
    shared = {"op": "event", "eventId": "bench", "requestedReductionKw": 1.0, "until": "2099-01-01T00:00:00Z"}
    try:
        for _ in range(rounds):
            for variant, client_class in chosen.items():
                bus = CountingBus()

                def factory(*args, _cls=client_class, **kwargs):
                    if _cls is not None:
                        kwargs["client_class"] = _cls
                    return link_mod.MqttLink(*args, **kwargs)

                core = BridgeCore(parse_config({
                    "broker": {"port": broker.port, "client_id": f"bench-{variant}", "clean_session": True},
                    "batch": {"max_items": 1000, "max_delay_ms": 20}, "dedup": {"window_s": 0},
                    "store": {"path": str(folder / f"{variant}.sqlite")}}), bus, link_factory=factory)
                core.start()
                assert _wait(lambda: core.connected, 10), "bridge did not connect"
                gevent.sleep(0.3)  # subscriptions granted
                cpu0 = _cpu()
                base = sub.count
                t0 = time.perf_counter()
                result = core.send_batch(commands, shared)
                assert result["sent"] == n, result
                assert _wait(lambda: sub.count - base >= n, 60), "commands did not all arrive"
                fanout = time.perf_counter() - t0
                assert _wait(lambda: core.status()["unacknowledged"] == 0, 60), "PUBACKs missing"
                puback = time.perf_counter() - t0
                gevent.sleep(2.2)  # the fan-out's hold on inbound messages has passed
                done.clear()
                go.set()
                assert _wait(lambda: bus.items >= n, 60), f"acks did not all reach the bus ({bus.items})"
                fanin = time.time() - started.value
                cpu = _cpu() - cpu0 - 0.0
                core.stop()
                f = figures[variant]
                f["fanoutMs"].append(fanout * 1000)
                f["pubackMs"].append(puback * 1000)
                f["faninMs"].append(fanin * 1000)
                f["cpuMs"].append(cpu * 1000)
                done.wait(30)
    finally:
        pub.terminate()
        sub.stop()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return {v: {k: round(median(vals), 1) for k, vals in f.items()} for v, f in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="commands per fan-out and acks per fan-in (1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant, alternating (5)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: both)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args()
    out = run(args.n, args.rounds, [v for v in args.variants.split(",") if v])
    print(f"N={args.n}, median of {args.rounds} rounds (CPU includes the 2.2 s idle wait between the two halves)")
    print(f"{'variant':<20}{'fan-out ms':>12}{'all PUBACKs ms':>16}{'fan-in ms':>12}{'CPU ms':>10}")
    for variant, f in out.items():
        print(f"{variant:<20}{f['fanoutMs']:>12}{f['pubackMs']:>16}{f['faninMs']:>12}{f['cpuMs']:>10}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "rounds": args.rounds, "figures": out}, indent=2))


if __name__ == "__main__":
    main()
