"""Every baseline preset for one meter over 60 days (+ the event day) of 1-minute data on SQLite (a 60-day
look-back), next to a raw SELECT of the same rows, and the accuracy backcast of every preset on 60 days.

    /var/lib/volttron-dr/venv/bin/python bench/mv_presets.py [--repeat 7] [--days 60]

1. raw: `SELECT ts, value_num FROM data WHERE topic_id = ? AND ts >= ? AND ts < ?` of all the rows (sqlite3);
2. all presets: dr_historian.mv.performance.topic_methods with every preset, a fresh Store read each run (the
   SQL aggregation of the hours the presets read on each day, then every preset's days, adjustment, energy);
   at 60- and 15-minute intervals; target: all presets together under 200 ms; the regression preset
   (opendsm-caltrack-dr, OpenDSM's model fitted on the look-back's hourly load and outdoor temperature) timed
   apart and with the others, since it fits a model where the others average days;
3. accuracy: dr_historian.mv.accuracy.site_accuracy, every preset backcast on the 60 days before the event
   (the database holds 2 x 60 days so each backcast day has its full look-back).
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dr_historian.mv.accuracy import format_ranking, site_accuracy
from dr_historian.mv.performance import MvOptions, topic_methods
from dr_historian.mv.engine import KIND_REGRESSION
from dr_historian.mv.presets import PRESETS
from dr_historian.mv.series import Window
from dr_historian.schema import Point
from dr_historian.store import Store
from dr_historian.values import to_micros
from dr_tools.synth import readings

UTC = timezone.utc
TOPIC = "demo/meter/PowerKw"
TEMPERATURE = "demo/weather/OutdoorTempF"
COVARIATES = {name: {"covariateTopic": TEMPERATURE} for name, spec in PRESETS.items() if spec.kind == KIND_REGRESSION}


def timed_presets(path: Path, methods: tuple[str, ...], minutes: int, lookback: int, repeat: int,
                  event_start: datetime) -> tuple[list[float], dict]:
    """Seconds of each run of topic_methods (a fresh Store each time: no cached series) and the last answer."""
    options = MvOptions(methods=methods, interval_minutes=minutes, lookback_days=lookback, overrides=COVARIATES)
    times = []
    for _ in range(repeat):
        fresh = Store(f"sqlite:///{path}")
        t = time.perf_counter()
        result = topic_methods(fresh, TOPIC, event_start, event_start + timedelta(hours=1), options)
        times.append(time.perf_counter() - t)
        fresh.dispose()
    errors = {m: r["error"] for m, r in result["methods"].items() if r.get("error")}
    assert not errors, errors
    return times, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--days", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mv-presets-") as tmp:
        path = Path(tmp) / "meter.sqlite"
        store = Store(f"sqlite:///{path}")
        store.setup()
        event_start = datetime(2026, 7, 15, 14, tzinfo=UTC)
        history_start = event_start.replace(hour=0) - timedelta(days=args.days)
        t0 = time.perf_counter()
        rows = list(readings(history_start - timedelta(days=args.days + 2), event_start + timedelta(hours=4), 60,
                             seed=11))
        points = [Point(TOPIC, ts, kw) for ts, kw, _ in rows]
        store.write(points + [Point(TEMPERATURE, ts, temp) for ts, _, temp in rows[::15]])
        print(f"{len(PRESETS)} presets, one meter, 1-minute readings: {args.days} days + the event day read "
              f"({len(points)} rows stored; generated and loaded in {time.perf_counter() - t0:.1f} s), "
              f"median of {args.repeat}")
        conn = sqlite3.connect(path)
        raw = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = conn.execute("SELECT ts, value_num FROM data WHERE topic_id = 1 AND ts >= ? AND ts < ?",
                                (to_micros(history_start), to_micros(event_start + timedelta(hours=4)))).fetchall()
            raw.append(time.perf_counter() - t)
        assert len(rows) == (args.days * 24 + 18) * 60
        conn.close()
        print(f"  raw SELECT of all {len(rows)} rows:          median {statistics.median(raw) * 1000:7.1f} ms")
        lookback = args.days
        averaging = tuple(n for n in PRESETS if n not in COVARIATES)
        for minutes in (60, 15):
            runs = [(f"{len(averaging)} day-matching and meter presets", averaging)]
            if COVARIATES:
                runs += [(", ".join(COVARIATES) + " alone", tuple(COVARIATES)), ("all presets", tuple(PRESETS))]
            for label, methods in runs:
                times, result = timed_presets(path, methods, minutes, lookback, args.repeat, event_start)
                print(f"  {label}, {minutes:>2}-min intervals: median {statistics.median(times) * 1000:7.1f} ms, "
                      f"max {max(times) * 1000:7.1f} ms" + (" (target < 200 ms)" if methods == averaging else ""))
        print("  baseline kWh of the 14:00-15:00 event per preset (60-min intervals): " + ", ".join(
            f"{m} {r['baselineKwh']:.2f}" for m, r in result["methods"].items()))
        options = MvOptions(interval_minutes=60, lookback_days=lookback, overrides=COVARIATES)
        t = time.perf_counter()
        report = site_accuracy(store, TOPIC, Window(event_start, event_start + timedelta(hours=1)), options,
                               days=args.days)
        print(f"  accuracy backcast of every preset: {time.perf_counter() - t:.2f} s\n")
        print(format_ranking(report))
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
