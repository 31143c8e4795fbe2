"""The fleet simulator's command line (scripts/ven_fleet_sim.py). Simulate a fleet of VENs on an MQTT broker: the seeds' VEN contract for N VENs in one process.

Each VEN subscribes to ven/cmd/<venId> (QoS 1), answers event / shedPanel / restore / ping commands with acks on
ven/ack/<venId>, and publishes telemetry (load, shed, baseline) every few seconds on ven/telemetry/<venId> and
oadr/meter/<venId>. All clients share one epoll loop (no thread per client); connects are paced. A progress
line shows while it runs; a summary (commands seen, acks, latencies) prints at the end (Ctrl-C or --duration).

examples:
  scripts/ven_fleet_sim.py -n 100                      # 100 VENs sim-00000 .. sim-00099 on 127.0.0.1:1883
  scripts/ven_fleet_sim.py -n 10000 --duration 120     # 10,000 VENs for two minutes
  scripts/ven_fleet_sim.py -n 10000 --procs 2          # the same fleet over two worker processes
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from dr_tools.fleet.sim import Fleet, FleetOptions
from dr_tools.fleet.workers import FleetProcesses, Totals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(". ", 1)[1], epilog=__doc__.split("examples:")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--count", type=int, default=100, help="number of VENs (1-10000 tested; default 100)")
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="MQTT broker port (default 1883)")
    p.add_argument("--prefix", default="sim", help="venId prefix: <prefix>-00000 ... (default sim)")
    p.add_argument("--first-index", type=int, default=0, help="number of the first VEN (default 0)")
    p.add_argument("--telemetry-interval", type=float, default=5.0,
                   help="seconds between two telemetry reports of a VEN; 0 turns telemetry off (default 5)")
    p.add_argument("--no-meter", action="store_true", help="do not copy telemetry to oadr/meter/<venId>")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of subscriptions and publishes (default 1)")
    p.add_argument("--connect-window", type=int, default=200,
                   help="connects awaiting their CONNACK at once (paces the start; default 200)")
    p.add_argument("--persistent-session", action="store_true",
                   help="clean_session false (the broker keeps each VEN's session and queues for it)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 runs until Ctrl-C (default)")
    p.add_argument("--procs", type=int, default=1, help="worker processes sharing the fleet (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed of loads and baselines (default 1)")
    p.add_argument("--ack-delay-ms", type=float, default=0.0,
                   help="each VEN acks this long after receiving a command (default 0: at once)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.count <= 50_000:
        p.error("--count must be between 1 and 50000")
    if args.procs < 1:
        p.error("--procs must be at least 1")
    return args


class Progress:
    def __init__(self, vens: int, quiet: bool) -> None:
        self.vens = vens
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last: tuple[float, int, int] = (self.t0, 0, 0)
        self._printed = 0.0

    def show(self, connected: int, counters: dict[str, int]) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        cmds, tel = counters.get("commands", 0), counters.get("telemetry", 0)
        t_last, c_last, tel_last = self._last
        dt = max(1e-6, now - t_last)
        self._last = (now, cmds, tel)
        acks = counters.get("acks_ok", 0) + counters.get("acks_failed", 0)
        line = (f"[{now - self.t0:7.1f} s] connected {connected:,}/{self.vens:,} | commands {cmds:,} "
                f"({(cmds - c_last) / dt:,.0f}/s) | acks {acks:,}"
                f" | telemetry {tel:,} ({(tel - tel_last) / dt:,.0f}/s) | reconnects {counters.get('reconnects', 0):,}")
        if self.tty:
            sys.stderr.write("\r" + line.ljust(120)[:160])
            sys.stderr.flush()
        elif now - self._printed >= 5.0:
            self._printed = now
            print(line, file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = FleetOptions(host=args.host, port=args.port, count=args.count, prefix=args.prefix,
                        first_index=args.first_index, telemetry_interval_s=args.telemetry_interval,
                        meter=not args.no_meter, qos=args.qos, connect_window=args.connect_window,
                        clean_session=not args.persistent_session, seed=args.seed,
                        ack_delay_s=max(0.0, args.ack_delay_ms) / 1000.0)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    progress = Progress(args.count, args.quiet)
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration > 0 else float("inf")
    totals = Totals()

    def done() -> bool:
        return stop["now"] or time.monotonic() >= deadline

    if args.procs == 1:
        fleet = Fleet(opts)

        def tick(f: Fleet) -> None:
            totals.add(0, f.snapshot())
            progress.show(totals.connected_total, totals.counters)

        try:
            fleet.run(done, tick, 1.0)
            totals.add(0, fleet.snapshot())
        finally:
            fleet.close()
    else:
        procs = FleetProcesses(opts, args.procs).start()
        totals = procs.totals
        try:
            while not done():
                procs.pump(1.0)
                progress.show(totals.connected_total, totals.counters)
        finally:
            procs.stop()
    progress.end()
    ran = time.monotonic() - t0
    if args.json:
        c = totals.counters
        print(json.dumps({"vens": args.count, "procs": args.procs, "ranS": round(ran, 2),
                          "connected": totals.connected_total, "counters": dict(c), "byOp": dict(totals.by_op)}))
    else:
        print("\n".join(totals.summary_lines(args.count, args.procs, ran)))
    return 0

