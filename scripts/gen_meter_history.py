#!/usr/bin/env python3
"""Load realistic synthetic meter history into a historian database (seeded: the same arguments give the same data).

Daily shape (residential or office), weekdays vs weekends and holidays, cooling load from a synthetic outdoor
temperature, noise. The outdoor temperature (deg F) is stored too, every 15 minutes, on SITE/weather/OutdoorTempF
(SITE: the meter topic's first level), the covariate of the regression baseline opendsm-caltrack-dr. Optionally
the same series as a VEN's telemetry plus recorded DR events, so that scripts/mv_report.py has 45 days of
history to compute baselines from.

Examples:
  scripts/gen_meter_history.py --db /tmp/h.sqlite --days 45                      # demo/meter/PowerKw, 1-minute data
  scripts/gen_meter_history.py --site demo --topic demo/meter/PowerKw --days 45 --seed 7
  scripts/gen_meter_history.py --db /tmp/h.sqlite --ven demo-home \\
      --event 2026-07-15T14:00/60/1.5 --event-id ev-synth-1                      # shed 1.5 kW for an hour
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401,E402
from dr_historian.store import Point, Store, StoreError  # noqa: E402
from dr_historian.writer import Writer  # noqa: E402
from dr_tools import sitedb  # noqa: E402
from dr_tools.synth import KINDS, MeterProfile, readings  # noqa: E402

from dr_common.timeutil import parse_time  # noqa: E402
from dr_common.topics import bus_cmd, telemetry_field  # noqa: E402

UTC = timezone.utc
BATCH = 20_000
TEMPERATURE_STEP_S = 900
F_META = {"units": "degF", "type": "float", "tz": "UTC"}


def temperature_topic(meter_topic: str) -> str:
    """Where the outdoor temperature of a meter's site goes: SITE/weather/OutdoorTempF."""
    return f"{meter_topic.split('/', 1)[0]}/weather/OutdoorTempF"


def parse_event(text: str) -> tuple[datetime, datetime, float]:
    try:
        start_text, minutes, kw = text.split("/")
        start = parse_time(start_text)
        return start, start + timedelta(minutes=float(minutes)), float(kw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected START/MINUTES/KW like 2026-07-15T14:00/60/1.5 ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLAlchemy URL or SQLite file path")
    where.add_argument("--site", help="the database of platform-config/sites/SITE/historian.json")
    parser.add_argument("--topic", default="demo/meter/PowerKw", help="meter topic (default %(default)s)")
    parser.add_argument("--days", type=float, default=45.0, help="days of history (default %(default)s)")
    parser.add_argument("--step", type=int, default=60, help="seconds between readings (default %(default)s)")
    parser.add_argument("--end", type=parse_time, help="end of the history (default: now, to the minute)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", choices=KINDS, default="residential")
    parser.add_argument("--base-kw", type=float, default=0.5)
    parser.add_argument("--shape-kw", type=float, default=2.0)
    parser.add_argument("--tz", default="UTC", help="local time zone of the daily shape (default %(default)s)")
    parser.add_argument("--temperature-topic", help="topic of the outdoor temperature (deg F, every 15 minutes; "
                        "default SITE/weather/OutdoorTempF from --topic; '' stores none)")
    parser.add_argument("--ven", help="also store the series as dr/telemetry/VEN/usedPowerKw")
    parser.add_argument("--event", type=parse_event, action="append", default=[],
                        help="START/MINUTES/KW: the VEN sheds KW for MINUTES (needs --ven; repeatable)")
    parser.add_argument("--event-id", default="ev-synth", help="eventId of the first --event (others get -2, -3 ...)")
    args = parser.parse_args(argv)
    if args.event and not args.ven:
        parser.error("--event needs --ven")
    try:
        config = sitedb.resolve(args.db, args.site)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    end = args.end or datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    profile = MeterProfile(kind=args.kind, base_kw=args.base_kw, shape_kw=args.shape_kw)
    temp_topic = temperature_topic(args.topic) if args.temperature_topic is None else args.temperature_topic
    temp_every = max(1, TEMPERATURE_STEP_S // args.step)
    events = [(f"{args.event_id}" if i == 0 else f"{args.event_id}-{i + 1}", *ev) for i, ev in enumerate(args.event)]
    store = Store(config.url)
    t0 = time.perf_counter()
    written = 0
    try:
        store.setup()
        batch: list[Point] = []
        for n, (ts, kw, temp_f) in enumerate(readings(start, end, args.step, profile, args.tz, args.seed)):
            if temp_topic and n % temp_every == 0:
                batch.append(Point(temp_topic, ts, temp_f, F_META))
            batch.append(Point(args.topic, ts, kw, {"units": "kW", "type": "float", "tz": "UTC"}))
            if args.ven:
                shed = sum(ev_kw for _, ev_start, ev_end, ev_kw in events if ev_start <= ts < ev_end)
                used = max(0.0, kw - shed)
                batch[-1] = Point(args.topic, ts, round(used, 4), batch[-1].meta)
                batch.append(Point(telemetry_field(args.ven, "usedPowerKw"), ts, round(used, 4), {"units": "kW"}))
                batch.append(Point(telemetry_field(args.ven, "baselinePowerKw"), ts, kw, {"units": "kW"}))
            if len(batch) >= BATCH:
                written += store.write(batch)
                batch = []
        if batch:
            written += store.write(batch)
        writer = Writer(store)
        for event_id, ev_start, ev_end, ev_kw in events:
            command = {"op": "event", "correlationId": f"{event_id}-{args.ven}", "eventId": event_id,
                       "venId": args.ven, "requestedReductionKw": ev_kw, "startTime": ev_start.isoformat(),
                       "until": ev_end.isoformat(), "issuedAt": ev_start.isoformat()}
            if not writer.publish([{"timestamp": ev_start, "topic": bus_cmd(args.ven), "value": command,
                                    "meta": {}}]):
                raise StoreError(writer.stats.last_error or "event command not stored")
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.dispose()
        sitedb.give_to_folder_owner(config.url)
    elapsed = time.perf_counter() - t0
    print(f"{written} readings ({args.days:g} days every {args.step} s of {args.topic}"
          f"{' and ' + args.ven + ' telemetry' if args.ven else ''}"
          f"{', outdoor temperature on ' + temp_topic if temp_topic else ''}) into {config.display_url} "
          f"in {elapsed:.1f} s ({written / elapsed:,.0f} readings/s)")
    for event_id, ev_start, ev_end, ev_kw in events:
        print(f"event {event_id}: {args.ven} sheds {ev_kw} kW {ev_start.isoformat()} - {ev_end.isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
