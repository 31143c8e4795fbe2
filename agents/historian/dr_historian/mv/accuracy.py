"""Baseline accuracy per site: backcast every method on non-event days as if each had been an event.

For each of the `days` days before the reference window's day that is not an event (or outage) day, an event is
pretended at the same local hours; each method computes its baseline from the data before that day (the day's
own event-hours data is what it must predict) and is compared with what was metered, interval by interval:

* relative RMSE: sqrt(mean((baseline - actual)^2)) / mean(actual) over every interval of every backcast day
  (PJM certifies a CBL only when this is under 20 % on the customer's non-event days: `under20`);
* bias: mean(baseline - actual) / mean(actual) (positive: the method over-states the baseline, so the reduction);
* within 10 %: the share of days whose baseline energy is within 10 % of the metered energy.

Methods are ranked by relative RMSE (lowest first; a method with no computable day last). At a recorded event's
hours, each pretended event is notified as long before its start as the event was (`notice`), so adjustment
windows relative to the notification (ISO-NE) sit where they would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dr_historian.mv.baselines import VEN_REPORTED
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.mv.engine import KIND_REGRESSION, BaselineSpec, compute_spec
from dr_historian.mv.notification import notification_time
from dr_historian.mv.performance import (WINDOW_SNAP_S, MvOptions, MvSource, UnknownEvent, event_day_set,
                                         used_power_topic)
from dr_historian.mv.presets import PRESETS
from dr_historian.mv.series import LoadSeries, MvError, Window, bucket_seconds, interval_grid, snap

MAX_BACKCAST_DAYS = 120
PJM_RRMSE_LIMIT = 0.20


@dataclass
class _Tally:
    squares: float = 0.0
    errors: float = 0.0
    actual: float = 0.0
    intervals: int = 0
    days: int = 0
    within: int = 0
    missing: int = 0

    def add_day(self, baseline: Sequence[float | None], actual: Sequence[float | None]) -> None:
        pairs = [(b, a) for b, a in zip(baseline, actual, strict=True) if b is not None and a is not None]
        if not pairs or len(pairs) < len(baseline):
            self.missing += 1
            return
        for b, a in pairs:
            self.squares += (b - a) ** 2
            self.errors += b - a
            self.actual += a
            self.intervals += 1
        day_base, day_actual = sum(b for b, _ in pairs), sum(a for _, a in pairs)
        self.days += 1
        if day_actual > 0 and abs(day_base - day_actual) <= 0.10 * day_actual:
            self.within += 1

    def summary(self) -> dict[str, Any]:
        if not self.intervals:
            return {"days": 0, "daysNotComputable": self.missing, "relativeRmse": None, "bias": None,
                    "biasKw": None, "within10Pct": None, "under20": None}
        mean_actual = self.actual / self.intervals
        rmse = math.sqrt(self.squares / self.intervals)
        relative = rmse / mean_actual if mean_actual > 0 else None
        return {"days": self.days, "daysNotComputable": self.missing,
                "relativeRmse": relative, "rmseKw": rmse,
                "bias": (self.errors / self.intervals) / mean_actual if mean_actual > 0 else None,
                "biasKw": self.errors / self.intervals,
                "within10Pct": self.within / self.days,
                "under20": None if relative is None else relative < PJM_RRMSE_LIMIT}


def _same_hours(window: Window, day: date, tz: ZoneInfo) -> Window:
    start_local, end_local = window.start.astimezone(tz), window.end.astimezone(tz)
    shift = day - start_local.date()
    start = datetime.combine(start_local.date() + shift, start_local.time().replace(tzinfo=None), tzinfo=tz)
    end = datetime.combine(end_local.date() + shift, end_local.time().replace(tzinfo=None), tzinfo=tz)
    return Window(start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC")))


def backcast_days(window: Window, tz: ZoneInfo, days: int, event_days: Iterable[date],
                  outage_days: Iterable[date] = ()) -> list[date]:
    """The non-event, non-outage days of the `days` before the window's day, most recent first."""
    if not 1 <= days <= MAX_BACKCAST_DAYS:
        raise MvError(f"days must be between 1 and {MAX_BACKCAST_DAYS}")
    skip = set(event_days) | set(outage_days)
    first = window.start.astimezone(tz).date()
    return [d for d in (first - timedelta(days=n) for n in range(1, days + 1)) if d not in skip]


def backcast(series: LoadSeries, specs: Sequence[BaselineSpec], window: Window, tz: ZoneInfo, interval_s: int,
             days: int = 60, event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
             lookback_days: int | None = None, outage_days: Iterable[date] = (),
             covariates: dict[str, LoadSeries] | None = None, notice: timedelta | None = None) -> dict[str, Any]:
    """Accuracy of each spec on the non-event days before `window`'s day, at its hours, ranked by relative RMSE
    (`notice`: how long before each pretended event it was notified; None: not known)."""
    event_set = frozenset(event_days)
    outages = frozenset(outage_days)
    calendar = calendar or HolidayCalendar()
    tallies = {spec.name: _Tally() for spec in specs}
    used = backcast_days(window, tz, days, event_set, outages)
    evaluated: list[str] = []
    for day in used:
        pretend = _same_hours(window, day, tz)
        grid = interval_grid(pretend, tz, interval_s)
        actual = series.means([Window(max(w.start, pretend.start), min(w.end, pretend.end)) for w in grid])
        if any(a is None for a in actual):
            continue
        evaluated.append(day.isoformat())
        for spec in specs:
            try:
                result = compute_spec(spec, series, pretend, tz, interval_s, event_set, calendar, lookback_days,
                                      grid=grid, outage_days=outages,
                                      covariate=(covariates or {}).get(spec.covariate_topic),
                                      notification=None if notice is None else pretend.start - notice)
            except MvError:
                tallies[spec.name].missing += 1
                continue
            tallies[spec.name].add_day(result.baseline_kw, actual)
    methods = {name: tally.summary() for name, tally in tallies.items()}
    ranking = sorted(methods, key=lambda n: (methods[n]["relativeRmse"] is None, methods[n]["relativeRmse"] or 0.0,
                                             n))
    return {"window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
            "backcastDays": len(evaluated), "daysAsked": days, "firstDay": evaluated[-1] if evaluated else None,
            "lastDay": evaluated[0] if evaluated else None, "methods": methods, "ranking": ranking}


def history_windows(window: Window, tz: ZoneInfo, specs: Sequence[BaselineSpec], days: int,
                    lookback_days: int, notice: timedelta | None = None) -> list[tuple[datetime, datetime]]:
    """The spans of each day that a backcast reads (every spec's needs around the event hours), newest first."""
    notified = None if notice is None else window.start - notice
    start = min([window.start] + [s.needs_before(window, tz, notified) for s in specs])
    end = max([window.end] + [s.needs_after(window, tz) for s in specs])
    span = Window(start, end)
    out = []
    for n in range(days + lookback_days + 2):
        day = span.start.astimezone(tz).date() - timedelta(days=n)
        shifted = _same_hours(span, day, tz) if span.end - span.start <= timedelta(hours=25) else None
        if shifted is None:
            raise MvError("the event window must be shorter than a day")
        out.append((shifted.start, shifted.end))
    return out


def format_ranking(report: dict[str, Any]) -> str:
    """The ranking as a text table."""
    head = ("rank", "method", "rel. RMSE", "bias", "within 10 %", "days", "PJM < 20 %")
    rows = []
    for rank, name in enumerate(report["ranking"], 1):
        m = report["methods"][name]

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f} %"
        rows.append((str(rank), name, pct(m["relativeRmse"]), pct(m["bias"]), pct(m["within10Pct"]), str(m["days"]),
                     "-" if m["under20"] is None else ("yes" if m["under20"] else "no")))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]
    return (f"Baseline accuracy: {report['backcastDays']} non-event days backcast "
            f"({report['firstDay']} .. {report['lastDay']}) at the hours of {report['window']['start']} - "
            f"{report['window']['end']}\n" + "\n".join(lines))


def site_accuracy(source: MvSource, topic: str, window: Window, options: MvOptions, days: int = 60,
                  methods: Sequence[str] | None = None, notice: timedelta | None = None) -> dict[str, Any]:
    """Backcast the methods (default: every preset) for one stored topic at `window`'s hours, from the store."""
    names = [m for m in (methods or PRESETS) if m != VEN_REPORTED]
    specs = [options.spec(m) for m in names]
    if not specs:
        raise MvError("no meter-data method to backcast")
    tz = options.tz
    bucket = bucket_seconds(options.interval_s)
    windows = history_windows(window, tz, specs, days, options.lookback_days, notice)
    # a regression fits on every hour of the days; like days compare whole days (the daily spans would overlap)
    whole_days = any(s.kind == KIND_REGRESSION or s.matches_days for s in specs)
    series = LoadSeries(source.interval_sums(topic, windows[-1][0], windows[0][1], bucket,
                                             None if whole_days else windows), bucket)
    covariates = {s.covariate_topic: LoadSeries(source.interval_sums(s.covariate_topic, windows[-1][0],
                                                                     windows[0][1], bucket), bucket)
                  for s in specs if s.kind == KIND_REGRESSION and s.covariate_topic}
    history_start = window.start - timedelta(days=days + options.lookback_days + 2)
    event_days = event_day_set(source.events_between(history_start, window.end), tz)
    report = backcast(series, specs, window, tz, options.interval_s, days, event_days,
                      HolidayCalendar(options.holidays), options.lookback_days, options.outage_days, covariates,
                      notice)
    report.update(topic=topic, timezone=options.timezone, intervalMinutes=options.interval_minutes)
    return report


def event_accuracy(source: MvSource, event_id: str, options: MvOptions, days: int = 60,
                   methods: Sequence[str] | None = None, topic: str | None = None) -> dict[str, Any]:
    """Backcast at the hours of one recorded event: for `topic`, else the first site meter, else the first VEN."""
    windows = [w for w in source.event_windows(event_id) if w.start is not None and w.effective_end is not None]
    if not windows:
        raise UnknownEvent(f"no event or shedPanel command with eventId {event_id!r} is recorded")
    start = snap(min(w.start for w in windows), WINDOW_SNAP_S)  # type: ignore[type-var]
    end = snap(max(w.effective_end for w in windows), WINDOW_SNAP_S)  # type: ignore[type-var]
    if end <= start:
        raise MvError(f"event {event_id!r} has no window longer than a minute")
    if topic is None:
        topic = options.meter_topics[0] if options.meter_topics else used_power_topic(sorted(w.ven_id
                                                                                             for w in windows)[0])
    notified = notification_time(source, event_id, start, end)
    report = site_accuracy(source, topic, Window(start, end), options, days, methods,
                           None if notified is None else start - notified)
    chosen = next((m for m in options.methods if m != VEN_REPORTED), None)
    report.update(eventId=event_id, notification=notified.isoformat() if notified else None, chosenMethod=chosen,
                  chosenAccuracy=report["methods"].get(chosen) if chosen else None)
    return report


def chosen_accuracy(source: MvSource, event_id: str, options: MvOptions, days: int) -> dict[str, Any]:
    """The accuracy of the event's chosen method (the first meter-data method of the options) alone, for the
    event_performance answer: method, topic, figures, or an error saying why it could not be computed."""
    chosen = next((m for m in options.methods if m != VEN_REPORTED), None)
    if chosen is None:
        return {"chosenMethod": None, "error": "no meter-data method chosen"}
    try:
        report = event_accuracy(source, event_id, options, days, [chosen])
    except MvError as exc:
        return {"chosenMethod": chosen, "error": str(exc)}
    return {"chosenMethod": chosen, "topic": report["topic"], "daysAsked": days,
            "backcastDays": report["backcastDays"], **report["methods"][chosen]}
