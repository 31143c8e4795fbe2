"""Per-event performance from the historian's own records.

The event window and the requested kW of each VEN come from the commands the historian recorded (the
dr_events index: start, end or an earlier restore, latest modification). Each VEN's metered power is its
telemetry `usedPowerKw`; its self-reported baseline is `baselinePowerKw`. Site meters (`devices/<site>/meter/all`
point PowerKw, stored as `<site>/meter/PowerKw`) are evaluated over the union of the VEN windows.

For each VEN, the total (sum of the VENs, interval by interval) and each meter, and for each method:
baseline and actual energy over the event (kWh), average reduction (kW, energy difference over the event
hours), peak reduction (kW, the largest interval reduction), percent of requested (average reduction over the
requested kW). Adjustment windows relative to the notification use the event's notification time (dr.vtn's
`createdAt` recorded on dr/event/<eventId>, see notification.py), answered as `notification`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from dr_common.topics import telemetry_field
from dr_historian.mv import baselines as B
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.mv.engine import KIND_METER, KIND_REGRESSION, BaselineSpec, compute_spec
from dr_historian.mv.notification import notification_time
from dr_historian.mv.series import LoadSeries, MvError, Window, bucket_seconds, day_windows, interval_grid, snap


class UnknownEvent(MvError):
    """No command of the event is recorded: the RPC answers with a not_found error, not an exception."""
from dr_historian.schema import EventWindow

FINE_BUCKET_S = 60
WINDOW_SNAP_S = 60


class MvSource(Protocol):
    """What M&V reads from a store."""

    def event_windows(self, event_id: str) -> list[EventWindow]:
        """Every VEN's window of one event."""

    def events_between(self, start: datetime, end: datetime) -> list[EventWindow]:
        """Event windows that overlap [start, end)."""

    def interval_sums(self, topic: str, start: datetime, end: datetime, period_s: int,
                      windows: Sequence[tuple[datetime, datetime]] | None = None) -> list[tuple[int, float, int]]:
        """(period start, sum, count) of a topic's numeric readings."""

    def readings(self, topic: str, start: datetime, end: datetime) -> list[tuple[datetime, Any]]:
        """Every reading of a topic in [start, end), oldest first, decoded."""


@dataclass(frozen=True)
class MvOptions:
    """The options of one M&V calculation."""

    methods: tuple[str, ...] = B.DEFAULT_METHODS
    timezone: str = "UTC"
    interval_minutes: int = 15
    meter_before_minutes: int = 30
    lookback_days: int = B.LOOKBACK_DAYS
    holidays: tuple[date, ...] = ()
    outage_days: tuple[date, ...] = ()      # days the site's load was abnormal (outages): never baseline days
    meter_topics: tuple[str, ...] = ()
    plot_margin_minutes: int | None = None  # include plot series covering this margin around the event
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # {method: {parameter: value}}

    def spec(self, method: str) -> BaselineSpec:
        """The engine spec of a meter-data method with this calculation's parameters."""
        return B.spec_for(method, self.meter_before_minutes, dict(self.overrides.get(method) or {}) or None)

    @property
    def tz(self) -> ZoneInfo:
        """The time zone of day matching."""
        return ZoneInfo(self.timezone)

    @property
    def interval_s(self) -> int:
        """The M&V interval in seconds."""
        return self.interval_minutes * 60


def used_power_topic(ven_id: str) -> str:
    """The stored topic of a VEN's reported used power."""
    return telemetry_field(ven_id, "usedPowerKw")


def reported_baseline_topic(ven_id: str) -> str:
    """The stored topic of a VEN's self-reported baseline."""
    return telemetry_field(ven_id, "baselinePowerKw")


def event_day_set(windows: Iterable[EventWindow], tz: ZoneInfo, exclude_event: str | None = None,
                  ven_id: str | None = None) -> set[date]:
    """Local dates touched by event windows (of one VEN, or of any when ven_id is None)."""
    days: set[date] = set()
    for w in windows:
        if w.event_id == exclude_event or w.start is None or (ven_id is not None and w.ven_id != ven_id):
            continue
        end = w.effective_end or w.start
        day = w.start.astimezone(tz).date()
        last = (end - timedelta(microseconds=1)).astimezone(tz).date() if end > w.start else day
        while day <= last:
            days.add(day)
            day += timedelta(days=1)
    return days


def _energy(grid: Sequence[Window], window: Window, baseline: Sequence[float | None],
            actual: Sequence[float | None]) -> dict[str, Any]:
    base_kwh = act_kwh = 0.0
    reductions = []
    missing = 0
    for w, b, a in zip(grid, baseline, actual, strict=True):
        start, end = max(w.start, window.start), min(w.end, window.end)
        if end <= start:
            continue
        if b is None or a is None:
            missing += 1
            continue
        hours = (end - start).total_seconds() / 3600.0
        base_kwh += b * hours
        act_kwh += a * hours
        reductions.append(b - a)
    hours = window.hours
    if not reductions:
        return {"baselineKwh": None, "actualKwh": None, "avgReductionKw": None, "peakReductionKw": None,
                "missingIntervals": missing}
    return {"baselineKwh": base_kwh, "actualKwh": act_kwh, "avgReductionKw": (base_kwh - act_kwh) / hours,
            "peakReductionKw": max(reductions), "missingIntervals": missing}


def _percent(avg_reduction: float | None, requested: float | None) -> float | None:
    if avg_reduction is None or not requested:
        return None
    return 100.0 * avg_reduction / requested


class _Evaluator:
    def __init__(self, source: MvSource, options: MvOptions) -> None:
        self.source = source
        self.options = options
        self.tz = options.tz
        self.interval_s = options.interval_s
        self.bucket_s = bucket_seconds(self.interval_s)
        self.calendar = HolidayCalendar(options.holidays)

    def series(self, topic: str, start: datetime, end: datetime, bucket_s: int,
               windows: Sequence[tuple[datetime, datetime]] | None = None) -> LoadSeries:
        """A topic's load series over [start, end) in buckets of bucket_s."""
        return LoadSeries(self.source.interval_sums(topic, start, end, bucket_s, windows), bucket_s)

    def history(self, topic: str, window: Window, extra: Sequence[Window] = (),
                specs: Sequence[BaselineSpec] = (), notification: datetime | None = None) -> LoadSeries:
        """What day matching reads: the adjustment window through the end of the event (and of `extra`
        grids, and what each spec reads before the event) on the event day and on each day of the look-back."""
        span = Window(min([B.adjustment_window(window, self.tz).start, window.start] + [w.start for w in extra]
                          + [s.needs_before(window, self.tz, notification) for s in specs]),
                      max([window.end] + [w.end for w in extra] + [s.needs_after(window, self.tz) for s in specs
                                                                   if s.matches_days]))
        windows = day_windows(span, self.tz, self.options.lookback_days + 1)
        if span.end - span.start >= timedelta(hours=20):  # the daily spans would touch or overlap: read it all
            return self.series(topic, windows[-1][0], windows[0][1], self.bucket_s)
        return self.series(topic, windows[-1][0], windows[0][1], self.bucket_s, windows)

    def regression_inputs(self, topic: str, window: Window, spec: BaselineSpec,
                          end: datetime | None = None) -> tuple[LoadSeries, LoadSeries | None]:
        """Whole days of load (and of the spec's covariate) over the look-back through the event: what a
        regression model fits on."""
        start = window.start - timedelta(days=self.options.lookback_days + 1)
        end = max(end or window.end, window.end)
        load = self.series(topic, start, end, self.bucket_s)
        covariate = self.series(spec.covariate_topic, start, end, self.bucket_s) if spec.covariate_topic else None
        return load, covariate

    def evaluate(self, topic: str, window: Window, methods: Sequence[str], event_days: set[date],
                 requested: float | None, reported_topic: str | None = None,
                 notification: datetime | None = None) -> dict[str, Any]:
        """Every method for one meter over one window (`notification`: when the event was notified)."""
        opts = self.options
        grid = interval_grid(window, self.tz, self.interval_s)
        margin = timedelta(minutes=opts.plot_margin_minutes or 0)
        fine_start = min(window.start - timedelta(minutes=opts.meter_before_minutes),
                         B.adjustment_window(window, self.tz).start, window.start - margin)
        specs = {m: opts.spec(m) for m in methods if m != B.VEN_REPORTED}
        fine_end = max([window.end, grid[-1].end] + [s.needs_after(window, self.tz) for s in specs.values()]) + margin
        fine = self.series(topic, fine_start, fine_end, FINE_BUCKET_S)
        in_window = [Window(max(w.start, window.start), min(w.end, window.end)) for w in grid]
        actual = fine.means(in_window)
        plot_grid = interval_grid(Window(window.start - margin, window.end + margin), self.tz, self.interval_s) \
            if opts.plot_margin_minutes is not None else None
        history: LoadSeries | None = None
        out: dict[str, Any] = {"window": _window_dict(window), "requestedKw": requested, "topic": topic,
                               "actualKw": actual, "methods": {}}
        if plot_grid is not None:
            out["plot"] = {"grid": [w.start.isoformat() for w in plot_grid],
                           "actualKw": fine.means(plot_grid),
                           "fine": [[datetime.fromtimestamp(k, ZoneInfo("UTC")).isoformat(), v]
                                    for k, v in _fine_points(fine, window.start - margin, window.end + margin)],
                           "baselines": {}}
        for method in methods:
            try:
                if method == B.VEN_REPORTED:
                    if reported_topic is None:
                        continue
                    reported = self.series(reported_topic, fine_start, fine_end, FINE_BUCKET_S)
                    base = reported.means(in_window)  # the samples `actual` averages, not the whole interval
                    detail: dict[str, Any] = {"method": method, "variant": "reported by the VEN"}
                    if plot_grid is not None:
                        out["plot"]["baselines"][method] = reported.means(plot_grid)
                else:
                    spec = specs[method]
                    covariate = None
                    if spec.kind == KIND_METER:
                        series = fine
                    elif spec.kind == KIND_REGRESSION:
                        series, covariate = self.regression_inputs(topic, window, spec, fine_end)
                    else:
                        if history is None:
                            history = self.history(topic, window, list(grid) + list(plot_grid or []),
                                                   [s for s in specs.values() if s.kind != KIND_METER],
                                                   notification)
                        series = history
                    result = compute_spec(spec, series, window, self.tz, self.interval_s, event_days,
                                          self.calendar, opts.lookback_days, grid=grid, covariate=covariate,
                                          outage_days=opts.outage_days, notification=notification)
                    base = result.baseline_kw
                    detail = result.to_dict()
                    detail.pop("intervals")
                    if plot_grid is not None:
                        plot = compute_spec(spec, series, window, self.tz, self.interval_s, event_days,
                                            self.calendar, opts.lookback_days, grid=plot_grid, covariate=covariate,
                                            outage_days=opts.outage_days, notification=notification)
                        out["plot"]["baselines"][method] = plot.baseline_kw
            except MvError as exc:
                out["methods"][method] = {"error": str(exc)}
                continue
            metrics = _energy(grid, window, base, actual)
            metrics["percentOfRequested"] = _percent(metrics["avgReductionKw"], requested)
            metrics["intervals"] = [{"start": w.start.isoformat(), "baselineKw": b, "actualKw": a,
                                     "reductionKw": None if a is None or b is None else b - a}
                                    for w, b, a in zip(grid, base, actual, strict=True)]
            metrics["baseline"] = detail
            if all(b is None for b in base):
                metrics["error"] = "; ".join(detail.get("notes", [])) or "no baseline"
            out["methods"][method] = metrics
        return out


def _fine_points(series: LoadSeries, start: datetime, end: datetime) -> list[tuple[int, float]]:
    step = series.bucket_s
    first = int(start.timestamp()) // step * step
    points = []
    for key in range(first, int(end.timestamp()), step):
        value = series.mean(datetime.fromtimestamp(key, ZoneInfo("UTC")),
                            datetime.fromtimestamp(key + step, ZoneInfo("UTC")))
        if value is not None:
            points.append((key, value))
    return points


def _window_dict(window: Window) -> dict[str, str]:
    return {"start": window.start.isoformat(), "end": window.end.isoformat()}


def _sum_runs(runs: list[dict[str, Any]], union: Window, grid: Sequence[Window], method: str) -> dict[str, Any]:
    """Interval-by-interval sum of several VENs' baselines and actuals for one method."""
    base_by_start: dict[datetime, float] = {}
    act_by_start: dict[datetime, float] = {}
    complete: dict[datetime, bool] = {}
    for run in runs:
        metrics = run["methods"].get(method)
        if metrics is None or "intervals" not in metrics:
            continue
        for row in metrics["intervals"]:
            start = datetime.fromisoformat(row["start"])
            if row["baselineKw"] is None or row["actualKw"] is None:
                complete[start] = False
                continue
            base_by_start[start] = base_by_start.get(start, 0.0) + row["baselineKw"]
            act_by_start[start] = act_by_start.get(start, 0.0) + row["actualKw"]
            complete.setdefault(start, True)
    base = [base_by_start.get(w.start) if complete.get(w.start) else None for w in grid]
    act = [act_by_start.get(w.start) if complete.get(w.start) else None for w in grid]
    metrics = _energy(grid, union, base, act)
    metrics["intervals"] = [{"start": w.start.isoformat(), "baselineKw": b, "actualKw": a,
                             "reductionKw": None if a is None or b is None else b - a}
                            for w, b, a in zip(grid, base, act, strict=True)]
    return metrics


def event_performance(source: MvSource, event_id: str, options: MvOptions | None = None) -> dict[str, Any]:
    """Baselines and performance of one event for each VEN, their total and each configured site meter."""
    options = options or MvOptions()
    for method in options.methods:
        if method not in B.METHODS:
            raise MvError(f"unknown method {method!r}; known: {', '.join(B.METHODS)}")
        if method != B.VEN_REPORTED:
            options.spec(method)  # a bad override is refused before anything is read
    windows = [w for w in source.event_windows(event_id) if w.start is not None and w.effective_end is not None]
    if not windows:
        raise UnknownEvent(f"no event or shedPanel command with eventId {event_id!r} is recorded")
    evaluator = _Evaluator(source, options)
    tz = options.tz
    ven_windows: dict[str, Window] = {}
    for w in windows:
        start, end = snap(w.start, WINDOW_SNAP_S), snap(w.effective_end, WINDOW_SNAP_S)  # type: ignore[arg-type]
        if end > start:
            ven_windows[w.ven_id] = Window(start, end)
    if not ven_windows:
        raise MvError(f"event {event_id!r} has no VEN window longer than a minute")
    union = Window(min(v.start for v in ven_windows.values()), max(v.end for v in ven_windows.values()))
    notified = notification_time(source, event_id, union.start, union.end)
    history_start = union.start - timedelta(days=options.lookback_days + 2)
    all_events = source.events_between(history_start, union.end)
    requested = {w.ven_id: w.requested_kw for w in windows}
    vens: dict[str, Any] = {}
    for ven_id, window in sorted(ven_windows.items()):
        days = event_day_set(all_events, tz, exclude_event=event_id, ven_id=ven_id)
        run = evaluator.evaluate(used_power_topic(ven_id), window, options.methods, days, requested.get(ven_id),
                                 reported_topic=reported_baseline_topic(ven_id), notification=notified)
        vens[ven_id] = run
    total_requested = sum(r for r in requested.values() if r) or None
    union_grid = interval_grid(union, tz, options.interval_s)
    total_methods = {}
    for method in options.methods:
        metrics = _sum_runs(list(vens.values()), union, union_grid, method)
        metrics["percentOfRequested"] = _percent(metrics["avgReductionKw"], total_requested)
        total_methods[method] = metrics
    any_days = event_day_set(all_events, tz, exclude_event=event_id)
    meters = {}
    for topic in options.meter_topics:
        meter_methods = tuple(m for m in options.methods if m != B.VEN_REPORTED)
        meters[topic] = evaluator.evaluate(topic, union, meter_methods, any_days, total_requested,
                                           notification=notified)
    return {"eventId": event_id, "window": _window_dict(union), "timezone": options.timezone,
            "intervalMinutes": options.interval_minutes, "methods": list(options.methods),
            "notification": notified.isoformat() if notified else None, "requestedKw": total_requested, "vens": vens,
            "total": {"window": _window_dict(union), "requestedKw": total_requested, "methods": total_methods},
            "meters": meters}


def topic_baseline(source: MvSource, topic: str, start: datetime, end: datetime, method: str,
                   options: MvOptions | None = None) -> dict[str, Any]:
    """One method's baseline for any stored numeric topic over [start, end), excluding every recorded event day."""
    options = options or MvOptions()
    window = Window(start, end)
    evaluator = _Evaluator(source, options)
    history_start = start - timedelta(days=options.lookback_days + 2)
    days = event_day_set(source.events_between(history_start, end), options.tz)
    days.discard(start.astimezone(options.tz).date())
    if method == B.VEN_REPORTED:
        raise MvError("ven-reported is a per-VEN telemetry baseline; use event_performance")
    spec = options.spec(method)
    covariate = None
    if spec.kind == KIND_REGRESSION:
        series, covariate = evaluator.regression_inputs(topic, window, spec)
    elif spec.kind == KIND_METER:
        series = evaluator.series(topic, min(start - timedelta(minutes=options.meter_before_minutes + 60),
                                             spec.needs_before(window, options.tz)), spec.needs_after(window, options.tz),
                                  FINE_BUCKET_S)
    else:
        series = evaluator.history(topic, window, interval_grid(window, options.tz, options.interval_s), [spec])
    result = compute_spec(spec, series, window, options.tz, options.interval_s, days, evaluator.calendar,
                          options.lookback_days, covariate=covariate, outage_days=options.outage_days)
    out = result.to_dict()
    out.update(topic=topic, window=_window_dict(window), timezone=options.timezone,
               intervalMinutes=options.interval_minutes)
    return out


def topic_methods(source: MvSource, topic: str, start: datetime, end: datetime,
                  options: MvOptions | None = None) -> dict[str, Any]:
    """Every method of `options` for one stored topic over [start, end), with one history read for all of them
    (every recorded event day excluded): what a site meter's settlement computes."""
    options = options or MvOptions()
    window = Window(start, end)
    days = event_day_set(source.events_between(start - timedelta(days=options.lookback_days + 2), end), options.tz)
    days.discard(start.astimezone(options.tz).date())
    methods = tuple(m for m in options.methods if m != B.VEN_REPORTED)
    for method in methods:
        options.spec(method)
    return _Evaluator(source, options).evaluate(topic, window, methods, days, None)
