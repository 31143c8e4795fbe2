"""Standard demand-response baselines (customer baseline load, CBL), platform-free.

Every method takes the load series of one meter (or VEN), the event window, the local time zone, the
set of earlier event days and a holiday calendar, and returns the baseline demand (kW) of each interval of a
grid (by default the intervals covering the event), with the days it used, the days it excluded and why, and
the adjustment it applied. "Day d's value of an interval" is the mean demand over the same local wall-clock
interval on day d. A candidate day without data in every event interval is excluded ("no data").

Methods, with the exact windows and caps implemented here:

``meter-before`` (meter before / meter after; NAESB WEQ-015 Measurement and Verification of Wholesale
Electricity Demand Response, "Meter Before / Meter After" performance evaluation): the baseline is flat and
equals the mean demand over the ``before_minutes`` (default 30) immediately before the event start. No day
selection, no adjustment.

``caiso-10in10`` (CAISO Customer Load Baseline, "10 in 10 non-event day selection with load point
adjustment", as described in the CAISO Business Practice Manual for Metering, performance evaluation
methodologies for Proxy Demand Resources):
  * look-back window: the 45 calendar days before the event day;
  * weekday event (non-holiday Monday-Friday): the 10 most recent weekdays in the window that are not holidays
    and not event days; weekend or holiday event ("4 in 4"): the 4 most recent weekend days or holidays in the
    window that are not event days;
  * when fewer than 5 (weekday) or 4 (weekend/holiday) such days exist, the similar event days with the highest
    event-period demand are added until that minimum is reached;
  * unadjusted baseline of an interval: the mean of the selected days' values of that interval;
  * day-of (load point) adjustment, multiplicative: ratio = mean actual demand / mean unadjusted baseline over
    the adjustment window, the three hours that end one hour before the event start (hours -4, -3 and -2 of the
    event's starting hour, skipping hour -1); the ratio is capped to [0.8, 1.2] (+-20 %); every interval's
    baseline is multiplied by it. No low-usage screen.

``pjm-high4of5`` (PJM Manual 11, Energy & Ancillary Services Market Operations, section 10 Demand Resource
participation, Customer Baseline Load: "High 4 of 5" weekday CBL, "High 2 of 3" weekend/holiday CBL, symmetric
additive adjustment):
  * look-back window: the 45 calendar days before the event day; NERC holidays are not weekdays;
  * weekday event: the CBL basis window is the 5 most recent non-holiday weekdays that are not event days;
    Saturday event: the 3 most recent Saturdays; Sunday or holiday event: the 3 most recent Sundays/holidays
    (event days skipped in both);
  * low-usage days: a day of the basis window whose event-period demand is below 25 % of the mean event-period
    demand of the basis window is dropped and replaced by the next most recent eligible day (repeated until no
    day is low); when the window cannot be filled, the similar event days with the highest event-period demand
    are added;
  * the 4 (weekday) or 2 (weekend/holiday) days of the basis window with the highest event-period demand are
    averaged per interval;
  * symmetric additive adjustment (SAA): delta = mean actual demand - mean CBL over the same adjustment window
    as CAISO (the three hours ending one hour before the event start); delta, positive or negative and uncapped,
    is added to every interval (a negative result is floored at 0 kW).

``ven-reported``: the baseline each VEN reported in its telemetry (``baselinePowerKw``), averaged per interval;
computed in `dr_historian.mv.performance`, not here.

These are faithful implementations of the rules as summarised above; a settlement-grade calculation must follow
the program's current document (its data-quality rules, meter-data aggregation and rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dr_historian.mv.calendar import SATURDAY, SUNDAY_HOLIDAY, WEEKDAY, HolidayCalendar
from dr_historian.mv.series import LoadSeries, MvError, Window, interval_grid

METER_BEFORE = "meter-before"
CAISO_10IN10 = "caiso-10in10"
PJM_HIGH4OF5 = "pjm-high4of5"
VEN_REPORTED = "ven-reported"
METHODS = (METER_BEFORE, CAISO_10IN10, PJM_HIGH4OF5, VEN_REPORTED)

LOOKBACK_DAYS = 45
CAISO_CAP = 0.20
PJM_LOW_USAGE = 0.25
ADJUSTMENT_HOURS = 3      # the adjustment window is 3 hours long ...
ADJUSTMENT_GAP_HOURS = 1  # ... and ends 1 hour before the event's starting hour


@dataclass
class BaselineResult:
    """One method's baseline over an event window, with how it was made (days, adjustment)."""

    method: str
    variant: str
    grid: list[Window]
    baseline_kw: list[float | None]
    unadjusted_kw: list[float | None]
    selected_days: list[date] = field(default_factory=list)
    excluded_days: dict[date, str] = field(default_factory=dict)
    adjustment: float | None = None          # ratio (CAISO) or kW (PJM)
    raw_adjustment: float | None = None      # before the cap
    adjustment_capped: bool = False
    adjustment_window: Window | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as the JSON shape of the M&V RPCs."""
        return {
            "method": self.method, "variant": self.variant,
            "intervals": [{"start": w.start.isoformat(), "end": w.end.isoformat(), "baselineKw": b,
                           "unadjustedKw": u} for w, b, u in zip(self.grid, self.baseline_kw, self.unadjusted_kw,
                                                                  strict=True)],
            "selectedDays": [d.isoformat() for d in self.selected_days],
            "excludedDays": {d.isoformat(): why for d, why in sorted(self.excluded_days.items())},
            "adjustment": self.adjustment, "rawAdjustment": self.raw_adjustment,
            "adjustmentCapped": self.adjustment_capped,
            "adjustmentWindow": ({"start": self.adjustment_window.start.isoformat(),
                                  "end": self.adjustment_window.end.isoformat()} if self.adjustment_window else None),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Context:
    series: LoadSeries
    event: Window
    tz: ZoneInfo
    interval_s: int
    calendar: HolidayCalendar
    event_days: frozenset[date]
    event_day: date
    event_grid: list[Window]

    def shifted(self, window: Window, day: date) -> Window:
        """The same local wall-clock interval on another day."""
        start_local = window.start.astimezone(self.tz)
        end_local = window.end.astimezone(self.tz)
        start = _at(day + (start_local.date() - self.event_day), start_local.time(), self.tz)
        end = _at(day + (end_local.date() - self.event_day), end_local.time(), self.tz)
        return Window(start, end)

    def day_values(self, day: date, grid: Sequence[Window]) -> list[float | None]:
        """The values of one day's intervals."""
        return [self.series.mean(*_bounds(self.shifted(w, day))) for w in grid]

    def event_period_mean(self, day: date) -> float | None:
        """The mean of one day over the event's intervals."""
        values = self.day_values(day, self.event_grid)
        if any(v is None for v in values):
            return None
        return sum(values) / len(values)  # type: ignore[arg-type]


def _at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, clock.replace(tzinfo=None), tzinfo=tz).astimezone(ZoneInfo("UTC"))


def _bounds(window: Window) -> tuple[datetime, datetime]:
    return window.start, window.end


def _context(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int, calendar: HolidayCalendar | None,
             event_days: Iterable[date]) -> _Context:
    if interval_s <= 0 or (3600 % interval_s and interval_s % 3600):
        raise MvError(f"interval of {interval_s} s must divide an hour or be whole hours")
    if series.bucket_s > interval_s or interval_s % series.bucket_s:
        raise MvError(f"series buckets of {series.bucket_s} s do not fit intervals of {interval_s} s")
    event_day = event.start.astimezone(tz).date()
    return _Context(series=series, event=event, tz=tz, interval_s=interval_s, calendar=calendar or HolidayCalendar(),
                    event_days=frozenset(event_days) - {event_day}, event_day=event_day,
                    event_grid=interval_grid(event, tz, interval_s))


def adjustment_window(event: Window, tz: ZoneInfo) -> Window:
    """The three hours ending one hour before the event's starting hour (local clock hours)."""
    local = event.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    end = local.astimezone(ZoneInfo("UTC")) - timedelta(hours=ADJUSTMENT_GAP_HOURS)
    return Window(end - timedelta(hours=ADJUSTMENT_HOURS), end)


def _candidates(ctx: _Context, lookback_days: int, similar: Callable[[date], bool]) -> list[date]:
    """Similar days of the look-back window, most recent first."""
    days = [ctx.event_day - timedelta(days=n) for n in range(1, lookback_days + 1)]
    return [d for d in days if similar(d)]


def _select_recent(ctx: _Context, candidates: list[date], wanted: int, minimum: int,
                   excluded: dict[date, str]) -> list[date]:
    selected: list[date] = []
    event_like: list[tuple[float, date]] = []
    for day in candidates:
        usage = ctx.event_period_mean(day)
        if usage is None:
            excluded[day] = "no data"
            continue
        if day in ctx.event_days:
            excluded[day] = "event day"
            event_like.append((usage, day))
            continue
        if len(selected) < wanted:
            selected.append(day)
    _top_up(selected, event_like, minimum, excluded)
    return selected


def _top_up(selected: list[date], event_like: list[tuple[float, date]], minimum: int,
            excluded: dict[date, str]) -> None:
    """Add the highest-demand event days while fewer than `minimum` days are selected."""
    for _usage, day in sorted(event_like, key=lambda item: (-item[0], -item[1].toordinal())):
        if len(selected) >= minimum:
            break
        selected.append(day)
        excluded.pop(day, None)


def _average(ctx: _Context, days: Sequence[date], grid: Sequence[Window]) -> list[float | None]:
    if not days:
        return [None] * len(grid)
    per_day = [ctx.day_values(d, grid) for d in days]
    out: list[float | None] = []
    for i in range(len(grid)):
        values = [v[i] for v in per_day if v[i] is not None]
        out.append(sum(values) / len(values) if values else None)
    return out


def _adjustment_means(ctx: _Context, days: Sequence[date]) -> tuple[Window, float | None, float | None]:
    window = adjustment_window(ctx.event, ctx.tz)
    adj_grid = interval_grid(window, ctx.tz, ctx.interval_s)
    actual = ctx.series.mean(window.start, window.end)
    base = _average(ctx, days, adj_grid)
    base_values = [b for b in base if b is not None]
    base_mean = sum(base_values) / len(base_values) if len(base_values) == len(base) and base else None
    return window, actual, base_mean


def meter_before(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 before_minutes: int = 30, grid: Sequence[Window] | None = None) -> BaselineResult:
    """Flat baseline: mean demand over the `before_minutes` before the event start."""
    grid = list(grid) if grid is not None else interval_grid(event, tz, interval_s)
    start = event.start - timedelta(minutes=before_minutes)
    value = series.mean(start, event.start)
    result = BaselineResult(method=METER_BEFORE, variant=f"{before_minutes} min before", grid=grid,
                            baseline_kw=[value] * len(grid), unadjusted_kw=[value] * len(grid),
                            adjustment_window=Window(start, event.start))
    if value is None:
        result.notes.append(f"no readings in the {before_minutes} minutes before the event")
    return result


def caiso_10in10(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
                 lookback_days: int = LOOKBACK_DAYS, cap: float = CAISO_CAP,
                 grid: Sequence[Window] | None = None) -> BaselineResult:
    """CAISO 10-in-10 (weekday) / 4-in-4 (weekend, holiday) with the +-20 % multiplicative day-of adjustment."""
    ctx = _context(series, event, tz, interval_s, calendar, event_days)
    grid = list(grid) if grid is not None else ctx.event_grid
    cal = ctx.calendar
    if cal.is_business_day(ctx.event_day):
        variant, wanted, minimum = "10-in-10 weekday", 10, 5
        similar = cal.is_business_day
    else:
        variant, wanted, minimum = "4-in-4 weekend/holiday", 4, 4
        similar = lambda d: not cal.is_business_day(d)  # noqa: E731
    excluded: dict[date, str] = {}
    days = _select_recent(ctx, _candidates(ctx, lookback_days, similar), wanted, minimum, excluded)
    unadjusted = _average(ctx, days, grid)
    result = BaselineResult(method=CAISO_10IN10, variant=variant, grid=grid, baseline_kw=list(unadjusted),
                            unadjusted_kw=unadjusted, selected_days=days, excluded_days=excluded)
    if not days:
        result.notes.append(f"no similar days with data in the {lookback_days} days before the event")
        return result
    if len(days) < wanted:
        result.notes.append(f"{len(days)} of {wanted} days available")
    window, actual, base = _adjustment_means(ctx, days)
    result.adjustment_window = window
    if actual is None or base is None or base <= 0:
        result.adjustment = 1.0
        result.notes.append("no day-of adjustment: missing demand in the adjustment window")
    else:
        ratio = actual / base
        capped = min(1.0 + cap, max(1.0 - cap, ratio))
        result.raw_adjustment = ratio
        result.adjustment = capped
        result.adjustment_capped = capped != ratio
    result.baseline_kw = [None if u is None else u * result.adjustment for u in unadjusted]
    return result


def pjm_high4of5(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
                 lookback_days: int = LOOKBACK_DAYS, low_usage: float = PJM_LOW_USAGE,
                 grid: Sequence[Window] | None = None) -> BaselineResult:
    """PJM High 4 of 5 (weekday) / High 2 of 3 (Saturday; Sunday/holiday) with the symmetric additive adjustment."""
    ctx = _context(series, event, tz, interval_s, calendar, event_days)
    grid = list(grid) if grid is not None else ctx.event_grid
    cal = ctx.calendar
    kind = cal.day_kind(ctx.event_day)
    if kind == WEEKDAY:
        variant, basis, keep = "high-4-of-5 weekday", 5, 4
    else:
        variant, basis, keep = f"high-2-of-3 {kind}", 3, 2
    candidates = _candidates(ctx, lookback_days, lambda d: cal.day_kind(d) == kind)
    excluded: dict[date, str] = {}
    usage: dict[date, float] = {}
    eligible: list[date] = []
    event_like: list[tuple[float, date]] = []
    for day in candidates:
        mean = ctx.event_period_mean(day)
        if mean is None:
            excluded[day] = "no data"
        elif day in ctx.event_days:
            excluded[day] = "event day"
            event_like.append((mean, day))
            usage[day] = mean
        else:
            eligible.append(day)
            usage[day] = mean
    window_days = eligible[:basis]
    rest = eligible[basis:]
    while window_days:
        average = sum(usage[d] for d in window_days) / len(window_days)
        low = [d for d in window_days if usage[d] < low_usage * average]
        if not low:
            break
        for day in low:
            window_days.remove(day)
            excluded[day] = f"low usage (< {low_usage:.0%} of the basis-window mean)"
        while len(window_days) < basis and rest:
            window_days.append(rest.pop(0))
    _top_up(window_days, event_like, basis, excluded)
    ranked = sorted(window_days, key=lambda d: (-usage[d], -d.toordinal()))
    days = ranked[:keep]
    for day in ranked[keep:]:
        excluded[day] = f"basis window, not in the highest {keep}"
    cbl = _average(ctx, days, grid)
    result = BaselineResult(method=PJM_HIGH4OF5, variant=variant, grid=grid, baseline_kw=list(cbl),
                            unadjusted_kw=cbl, selected_days=days, excluded_days=excluded)
    if not days:
        result.notes.append(f"no similar days with data in the {lookback_days} days before the event")
        return result
    if len(window_days) < basis:
        result.notes.append(f"basis window has {len(window_days)} of {basis} days")
    adj_window, actual, base = _adjustment_means(ctx, days)
    result.adjustment_window = adj_window
    if actual is None or base is None:
        result.adjustment = 0.0
        result.notes.append("no symmetric additive adjustment: missing demand in the adjustment window")
    else:
        result.adjustment = result.raw_adjustment = actual - base
    delta = result.adjustment or 0.0
    adjusted = [None if c is None else c + delta for c in cbl]
    if any(a is not None and a < 0 for a in adjusted):
        result.notes.append("adjusted baseline floored at 0 kW")
    result.baseline_kw = [None if a is None else max(0.0, a) for a in adjusted]
    return result


def compute(method: str, series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int,
            event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
            lookback_days: int = LOOKBACK_DAYS, before_minutes: int = 30,
            grid: Sequence[Window] | None = None) -> BaselineResult:
    """Dispatch by method name (ven-reported is not a meter-data method)."""
    if method == METER_BEFORE:
        return meter_before(series, event, tz, interval_s, before_minutes, grid)
    if method == CAISO_10IN10:
        return caiso_10in10(series, event, tz, interval_s, event_days, calendar, lookback_days, grid=grid)
    if method == PJM_HIGH4OF5:
        return pjm_high4of5(series, event, tz, interval_s, event_days, calendar, lookback_days, grid=grid)
    raise MvError(f"unknown baseline method {method!r}; known: {', '.join(m for m in METHODS if m != VEN_REPORTED)}")


__all__ = ["BaselineResult", "METHODS", "METER_BEFORE", "CAISO_10IN10", "PJM_HIGH4OF5", "VEN_REPORTED",
           "adjustment_window", "meter_before", "caiso_10in10", "pjm_high4of5", "compute", "SATURDAY",
           "SUNDAY_HOLIDAY", "WEEKDAY"]
