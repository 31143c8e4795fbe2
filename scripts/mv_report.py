#!/usr/bin/env python3
"""M&V report of one DR event from the historian's database: a table of baseline and actual energy, average
and peak reduction and percent of requested per VEN, total and site meter for each method, and a PNG of
baseline vs metered power with the event window shaded; the days each method used and excluded (why) and its
adjustment; CSV and JSON for settlement systems; and the accuracy of every baseline preset at the event's hours.

Examples:
  scripts/mv_report.py ev-1234                                  # the demo site's historian database
  scripts/mv_report.py ev-1234 --site office --method caiso-10in10 --method pjm-high4of5
  scripts/mv_report.py ev-synth-1 --db /tmp/h.sqlite --png /tmp/ev.png --plot demo-home
  scripts/mv_report.py ev-1234 --json                           # the full result as JSON
  scripts/mv_report.py ev-1234 --csv ev.csv --png-dir charts/   # settlement CSV, a chart per VEN, total, meter
  scripts/mv_report.py ev-1234 --accuracy [--days 60]           # every preset backcast on non-event days, ranked
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401,E402
from dr_historian.mv.accuracy import event_accuracy, format_ranking  # noqa: E402
from dr_historian.mv.baselines import METHODS  # noqa: E402
from dr_historian.mv.performance import UnknownEvent, used_power_topic  # noqa: E402
from dr_historian.mv.performance import MvOptions, event_performance  # noqa: E402
from dr_historian.mv.series import MvError  # noqa: E402
from dr_historian.store import Store, StoreError  # noqa: E402
from dr_tools import sitedb  # noqa: E402
from dr_tools.mv_export import accuracy_csv_text, csv_text, details, write_charts  # noqa: E402
from dr_tools.mv_plot import PlotError, chart_from_report, write_png  # noqa: E402

PLOT_MARGIN_MIN = 120


def fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def method_note(m: dict[str, Any]) -> str:
    if m.get("error"):
        return m["error"]
    detail = m.get("baseline", {})
    notes = []
    if detail.get("variant"):
        notes.append(detail["variant"])
    adj = detail.get("adjustment")
    capped = " (capped)" if detail.get("adjustmentCapped") else ""
    if adj is not None:
        notes.append((f"x{adj:.3f}" if _multiplicative(detail) else f"{adj:+.2f} kW") + capped)
    if detail.get("selectedDays"):
        notes.append(f"{len(detail['selectedDays'])} days")
    return ", ".join(notes)


def _multiplicative(detail: dict[str, Any]) -> bool:
    from dr_historian.mv.presets import PRESETS

    spec = PRESETS.get(detail.get("method", ""))
    return spec is not None and spec.adjustment.kind == "multiplicative"


def table(report: dict[str, Any]) -> str:
    head = ("who", "method", "baseline kWh", "actual kWh", "avg red kW", "peak red kW", "% of req", "notes")
    rows: list[tuple[str, ...]] = []

    def add(who: str, methods: dict[str, Any]) -> None:
        for name, m in methods.items():
            rows.append((who, name, fmt(m.get("baselineKwh"), 3), fmt(m.get("actualKwh"), 3),
                         fmt(m.get("avgReductionKw")), fmt(m.get("peakReductionKw")),
                         fmt(m.get("percentOfRequested"), 1), method_note(m)))
            who = ""

    for ven, run in report["vens"].items():
        add(f"{ven} (req {fmt(run['requestedKw'])} kW)", run["methods"])
    if len(report["vens"]) > 1:
        add(f"total (req {fmt(report['requestedKw'])} kW)", report["total"]["methods"])
    for topic, run in report["meters"].items():
        add(f"meter {topic}", run["methods"])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), "  ".join("-" * w for w in widths)]
    for row in rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i in (0, 1, 7) else c.rjust(w) for i, (c, w) in enumerate(cells)))
    start, end = datetime.fromisoformat(report["window"]["start"]), datetime.fromisoformat(report["window"]["end"])
    title = (f"Event {report['eventId']}: {start:%Y-%m-%d %H:%M} - {end:%H:%M} UTC "
             f"({(end - start).total_seconds() / 60:.0f} min), {len(report['vens'])} VEN(s), "
             f"requested {fmt(report['requestedKw'])} kW, {report['intervalMinutes']}-minute intervals, "
             f"days in {report['timezone']}")
    return title + "\n\n" + "\n".join(lines)


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """--set PRESET.PARAM[.PARAM]=JSON items as {preset: {param: {...: value}}}, checked against the presets."""
    from dr_historian.mv.presets import preset

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        parts = path.split(".")
        if not sep or len(parts) < 2:
            raise ValueError(f"{item!r}: expected PRESET.PARAM=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = out.setdefault(parts[0], {})
        for key in parts[1:-1]:
            node = node.setdefault(key, {})
        node[parts[-1]] = value
    for name, params in out.items():
        try:
            preset(name, params)
        except MvError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("event_id")
    parser.add_argument("--method", action="append", choices=METHODS, help="repeatable (default: every method)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", help="SQLAlchemy URL or SQLite file path of a historian database")
    where.add_argument("--site", help="the database of platform-config/sites/SITE/historian.json (default demo)")
    parser.add_argument("--interval", type=int, help="interval minutes (default: the site's mv.interval_minutes)")
    parser.add_argument("--tz", help="time zone of day matching and the plot (default: the site's mv.timezone)")
    parser.add_argument("--meter", action="append", help="site meter topic (default: the site's mv.meter_topics)")
    parser.add_argument("--plot", metavar="WHO", help="VEN id or meter topic to plot (default: meter, else total); "
                        "with --accuracy the one to backcast (default: the first meter, else the first VEN)")
    parser.add_argument("--png", help="PNG path (default: mv_EVENT_ID.png)")
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON instead of the table")
    parser.add_argument("--csv", metavar="PATH", help="write the settlement CSV (summary and interval rows; with "
                        "--accuracy the ranking)")
    parser.add_argument("--png-dir", metavar="DIR", help="write one chart per VEN, the total and each meter")
    parser.add_argument("--accuracy", action="store_true",
                        help="rank every baseline preset by its accuracy on the non-event days at the event's hours")
    parser.add_argument("--days", type=int, default=60, help="days backcast by --accuracy (default 60)")
    parser.add_argument("--outage", action="append", default=[], type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="a day the site's load was abnormal (an outage): never a baseline day (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="PRESET.PARAM=JSON",
                        help="override a preset parameter, e.g. caiso-10in10.adjustment.cap=0.3 (repeatable)")
    args = parser.parse_args(argv)
    try:
        config = sitedb.resolve(args.db, args.site or (None if args.db else "demo"))
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    mv = config.mv
    try:
        overrides = parse_sets(args.set)
    except ValueError as exc:
        print(f"error: --set: {exc}", file=sys.stderr)
        return 1
    options = MvOptions(overrides=overrides, outage_days=tuple(args.outage), methods=tuple(args.method or mv.methods), timezone=args.tz or mv.timezone,
                        interval_minutes=args.interval or mv.interval_minutes,
                        meter_before_minutes=mv.meter_before_minutes, lookback_days=mv.lookback_days,
                        holidays=mv.holidays, meter_topics=tuple(args.meter or mv.meter_topics),
                        plot_margin_minutes=None if args.no_png else PLOT_MARGIN_MIN)
    if config.backend == "sqlite" and not Path(config.url.split(":///", 1)[1]).is_file():
        print(f"error: no historian database at {config.url.split(':///', 1)[1]}", file=sys.stderr)
        return 1
    store = Store(config.url)
    try:
        if args.accuracy:
            topic = None if not args.plot else args.plot if "/" in args.plot else used_power_topic(args.plot)
            accuracy = event_accuracy(store, args.event_id, options, args.days, args.method, topic)
            print(json.dumps(accuracy, indent=2) if args.json else format_ranking(accuracy))
            if args.csv:
                Path(args.csv).write_text(accuracy_csv_text(accuracy), encoding="utf-8")
            return 0
        report = event_performance(store, args.event_id, options)
    except UnknownEvent as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (MvError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.dispose()
        sitedb.give_to_folder_owner(config.url)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
        print("\n" + details(report))
    if args.csv:
        Path(args.csv).write_text(csv_text(report), encoding="utf-8")
        print(f"\ncsv: {args.csv}", file=sys.stderr if args.json else sys.stdout)
    if args.png_dir and not args.no_png:
        try:
            paths = write_charts(report, args.png_dir, options.timezone)
        except PlotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\ncharts: " + ", ".join(str(p) for p in paths), file=sys.stderr if args.json else sys.stdout)
    if not args.no_png:
        path = args.png or f"mv_{args.event_id}.png"
        try:
            write_png(chart_from_report(report, args.plot, options.timezone), path)
        except PlotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"\nplot: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
