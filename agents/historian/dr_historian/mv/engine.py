"""One parameterized customer-baseline engine, platform-free.

A baseline method is a `BaselineSpec`: which days form the pool (recent N, high X of Y, middle X of Y, like days),
which days are excluded (event days, holidays through the day types, low-usage days, outage days), the day-type
rules (weekday, Saturday, Sunday/holiday, or business day vs the rest) and the day-of adjustment (none,
multiplicative, additive, additive positive-only; its window relative to the event's starting hour, the event
start or the notification; an optional cap). Meter-type methods (meter before, meter after, PJM Same Day) read
windows around the event on the event day itself. The named programs' specs are in `dr_historian.mv.presets`.

"Day d's value of an interval" is the mean demand over the same local wall-clock interval on day d. A candidate
day without data in every event interval is excluded ("no data").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from dr_historian.mv.calendar import SATURDAY, WEEKDAY, HolidayCalendar
from dr_historian.mv.series import LoadSeries, MvError, Window, floor_local, interval_grid

POOL_RECENT, POOL_HIGH, POOL_MIDDLE, POOL_LIKE = "recent", "high", "middle", "like"
POOLS = (POOL_RECENT, POOL_HIGH, POOL_MIDDLE, POOL_LIKE)
ADJ_NONE, ADJ_MULTIPLICATIVE, ADJ_ADDITIVE, ADJ_ADDITIVE_POSITIVE = (
    "none", "multiplicative", "additive", "additive-positive")
ADJUSTMENTS = (ADJ_NONE, ADJ_MULTIPLICATIVE, ADJ_ADDITIVE, ADJ_ADDITIVE_POSITIVE)
ANCHOR_EVENT_HOUR, ANCHOR_EVENT, ANCHOR_NOTIFICATION = "event-hour", "event", "notification"
ANCHORS = (ANCHOR_EVENT_HOUR, ANCHOR_EVENT, ANCHOR_NOTIFICATION)
DAYS_BUSINESS = "business"   # business days / weekends and holidays
DAYS_THREE = "three"         # weekdays / Saturdays / Sundays and holidays
DAY_TYPES = (DAYS_BUSINESS, DAYS_THREE)
KIND_DAYS, KIND_METER, KIND_REGRESSION = "day-matching", "meter", "regression"
UTC = ZoneInfo("UTC")


@dataclass(frozen=True)
class DayRule:
    """The pool of one day type: `keep` days out of a basis window of the `of` most recent eligible days."""

    pool: str = POOL_RECENT
    keep: int = 10
    of: int = 10
    minimum: int = 0          # while fewer days are selected, add the similar event days of highest demand
    label: str = ""           # the result's variant; "{kind}" is replaced by the day type


@dataclass(frozen=True)
class Adjustment:
    """The day-of adjustment: kind, window (start relative to an anchor, length) and cap."""

    kind: str = ADJ_NONE
    anchor: str = ANCHOR_EVENT_HOUR
    offset_minutes: int = -240
    length_minutes: int = 180
    cap: float | None = None  # multiplicative: ratio within 1 +- cap; additive: |delta| <= cap x window baseline

    def window(self, event: Window, tz: ZoneInfo, notification: datetime | None) -> Window:
        """The adjustment window of an event."""
        if self.anchor == ANCHOR_EVENT_HOUR:
            base = event.start.astimezone(tz).replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        elif self.anchor == ANCHOR_NOTIFICATION and notification is not None:
            base = notification
        else:
            base = event.start
        start = base + timedelta(minutes=self.offset_minutes)
        return Window(start, start + timedelta(minutes=self.length_minutes))


@dataclass(frozen=True)
class BaselineSpec:
    """Every parameter of one baseline method (see the module docstring); presets name them."""

    name: str
    source: str = ""
    unverified: str = ""      # where the published rule could not be read in its primary document
    kind: str = KIND_DAYS
    # meter kind: flat baseline from the demand before the start and/or after the end, each after a skip
    before_minutes: int = 0
    before_skip_minutes: int = 0
    after_minutes: int = 0
    after_skip_minutes: int = 0
    # day matching
    lookback_days: int = 45
    day_types: str = DAYS_BUSINESS
    weekday: DayRule = DayRule()
    weekend: DayRule = DayRule(keep=4, of=4, minimum=4)   # Saturdays (three day types) or every non-business day
    sunday_holiday: DayRule | None = None                  # three day types: Sundays and holidays (else `weekend`)
    exclude_event_days: bool = True
    low_usage: float | None = None   # drop (and replace) basis days below this fraction of the basis mean
    like_skip_minutes: int = 60      # like days: the event day's hours are compared, minus this before and after
    adjustment: Adjustment = Adjustment()
    floor_zero: bool = True          # an additive adjustment never takes the baseline below 0 kW
    # regression kind: a model from a maintained library fitted on the look-back before the event
    model: str = ""                  # the registered model (see register_model)
    covariate_topic: str = ""        # e.g. an outdoor temperature topic the model needs

    @property
    def matches_days(self) -> bool:
        """True when a day type picks like days (they compare whole days)."""
        return any(r is not None and r.pool == POOL_LIKE for r in (self.weekday, self.weekend, self.sunday_holiday))

    def needs_before(self, event: Window, tz: ZoneInfo, notification: datetime | None = None) -> datetime:
        """The earliest time this method reads on the event day."""
        times = [event.start - timedelta(minutes=self.before_minutes + self.before_skip_minutes)]
        if self.matches_days:
            times.append(_at(event.start.astimezone(tz).date(), time(), tz))
        if self.adjustment.kind != ADJ_NONE:
            times.append(self.adjustment.window(event, tz, notification).start)
        return min(times)

    def needs_after(self, event: Window, tz: ZoneInfo | None = None) -> datetime:
        """The latest time this method reads on the event day."""
        end = event.end + timedelta(minutes=self.after_minutes + self.after_skip_minutes)
        if self.matches_days and tz is not None:
            end = max(end, _at(event.start.astimezone(tz).date() + timedelta(days=1), time(), tz))
        return end


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
    adjustment: float | None = None          # ratio (multiplicative) or kW (additive)
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
        return _shifted(window, day, self.event_day, self.tz)

    def day_values(self, day: date, grid: Sequence[Window]) -> list[float | None]:
        """The values of one day's intervals."""
        return [self.series.mean(*_bounds(self.shifted(w, day))) for w in grid]

    def event_period_mean(self, day: date) -> float | None:
        """The mean of one day over the event's intervals."""
        values = self.day_values(day, self.event_grid)
        if any(v is None for v in values):
            return None
        return sum(values) / len(values)  # type: ignore[arg-type]


@lru_cache(maxsize=65536)
def _shifted(window: Window, day: date, event_day: date, tz: ZoneInfo) -> Window:
    start_local = window.start.astimezone(tz)
    end_local = window.end.astimezone(tz)
    start = _at(day + (start_local.date() - event_day), start_local.time(), tz)
    end = _at(day + (end_local.date() - event_day), end_local.time(), tz)
    return Window(start, end)


def _at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, clock.replace(tzinfo=None), tzinfo=tz).astimezone(UTC)


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


def _adjustment_means(ctx: _Context, days: Sequence[date], window: Window) -> tuple[float | None, float | None]:
    """Actual demand and the selected days' mean over the adjustment window (every interval needed)."""
    aligned = floor_local(window.start, ctx.tz, ctx.interval_s) == window.start and \
        (window.end - window.start).total_seconds() % ctx.interval_s == 0
    adj_grid = interval_grid(window, ctx.tz, ctx.interval_s) if aligned else [window]
    actual = ctx.series.mean(window.start, window.end)
    base = _average(ctx, days, adj_grid)
    base_values = [b for b in base if b is not None]
    base_mean = sum(base_values) / len(base_values) if len(base_values) == len(base) and base else None
    return actual, base_mean


def _rule(spec: BaselineSpec, ctx: _Context) -> tuple[DayRule, Callable[[date], bool], str]:
    cal = ctx.calendar
    if spec.day_types == DAYS_THREE:
        kind = cal.day_kind(ctx.event_day)
        if kind == WEEKDAY:
            rule = spec.weekday
        elif kind == SATURDAY:
            rule = spec.weekend
        else:
            rule = spec.sunday_holiday or spec.weekend
        return rule, lambda d: cal.day_kind(d) == kind, kind
    if cal.is_business_day(ctx.event_day):
        return spec.weekday, cal.is_business_day, "weekday"
    return spec.weekend, lambda d: not cal.is_business_day(d), "weekend/holiday"


def _like_days(ctx: _Context, spec: BaselineSpec, eligible: list[date], keep: int) -> list[date] | None:
    """The `keep` days whose demand in the event day's non-event hours (less `like_skip_minutes` before and after
    the event) is closest (RMS over the intervals the event day has data for) to the event day's."""
    skip = timedelta(minutes=spec.like_skip_minutes)
    day = Window(_at(ctx.event_day, time(), ctx.tz), _at(ctx.event_day + timedelta(days=1), time(), ctx.tz))
    grid = [w for w in interval_grid(day, ctx.tz, ctx.interval_s)
            if w.end <= ctx.event.start - skip or w.start >= ctx.event.end + skip]
    pairs = [(w, v) for w, v in zip(grid, ctx.series.means(grid), strict=True) if v is not None]
    if not pairs:
        return None
    grid, today = [w for w, _ in pairs], [v for _, v in pairs]
    scored = []
    for day in eligible:
        values = ctx.day_values(day, grid)
        if any(v is None for v in values):
            continue
        distance = math.sqrt(sum((v - t) ** 2 for v, t in zip(values, today, strict=True)) / len(grid))
        scored.append((distance, -day.toordinal(), day))
    return [day for _d, _o, day in sorted(scored)[:keep]]


def _select(spec: BaselineSpec, ctx: _Context, rule: DayRule, similar: Callable[[date], bool], lookback_days: int,
            outage_days: frozenset[date], excluded: dict[date, str], notes: list[str]) -> tuple[list[date], int]:
    """The selected days and the size of the basis window they came from."""
    candidates = [ctx.event_day - timedelta(days=n) for n in range(1, lookback_days + 1)]
    usage: dict[date, float] = {}
    eligible: list[date] = []
    event_like: list[tuple[float, date]] = []
    for day in (d for d in candidates if similar(d)):
        mean = ctx.event_period_mean(day)
        if mean is None:
            excluded[day] = "no data"
        elif spec.exclude_event_days and day in ctx.event_days:
            excluded[day] = "event day"
            event_like.append((mean, day))
            usage[day] = mean
        elif day in outage_days:
            excluded[day] = "outage day"
        else:
            eligible.append(day)
            usage[day] = mean
    if rule.pool == POOL_LIKE:
        liked = _like_days(ctx, spec, eligible, rule.keep)
        if liked is not None:
            return liked, len(liked)
        notes.append("no demand outside the event on the event day to match: the most recent days are used")
    basis, rest = eligible[:rule.of], eligible[rule.of:]
    while spec.low_usage is not None and basis:
        average = sum(usage[d] for d in basis) / len(basis)
        low = [d for d in basis if usage[d] < spec.low_usage * average]
        if not low:
            break
        for day in low:
            basis.remove(day)
            excluded[day] = f"low usage (< {spec.low_usage:.0%} of the basis-window mean)"
        while len(basis) < rule.of and rest:
            basis.append(rest.pop(0))
    _top_up(basis, event_like, rule.minimum, excluded)
    if rule.pool in (POOL_RECENT, POOL_LIKE):
        return basis[:rule.keep], len(basis)
    if rule.pool == POOL_HIGH:
        ranked = sorted(basis, key=lambda d: (-usage[d], -d.toordinal()))
        for day in ranked[rule.keep:]:
            excluded[day] = f"basis window, not in the highest {rule.keep}"
        return ranked[:rule.keep], len(basis)
    ranked = sorted(basis, key=lambda d: (usage[d], -d.toordinal()))
    drop = max(0, len(ranked) - rule.keep)
    low_n = drop // 2
    for day in ranked[:low_n]:
        excluded[day] = f"basis window, among the lowest {low_n}"
    for day in ranked[len(ranked) - (drop - low_n):]:
        excluded[day] = f"basis window, among the highest {drop - low_n}"
    middle = ranked[low_n:len(ranked) - (drop - low_n)]
    return sorted(middle, key=lambda d: -d.toordinal()), len(basis)


def _apply_adjustment(spec: BaselineSpec, ctx: _Context, result: BaselineResult, days: Sequence[date],
                      notification: datetime | None) -> None:
    adj = spec.adjustment
    if adj.kind == ADJ_NONE:
        return
    window = adj.window(ctx.event, ctx.tz, notification)
    if adj.anchor == ANCHOR_NOTIFICATION and notification is None:
        result.notes.append("no notification time: the adjustment window is placed relative to the event start")
    actual, base = _adjustment_means(ctx, days, window)
    result.adjustment_window = window
    unadjusted = result.unadjusted_kw
    if adj.kind == ADJ_MULTIPLICATIVE:
        if actual is None or base is None or base <= 0:
            result.adjustment = 1.0
            result.notes.append("no day-of adjustment: missing demand in the adjustment window")
        else:
            ratio = actual / base
            capped = ratio if adj.cap is None else min(1.0 + adj.cap, max(1.0 - adj.cap, ratio))
            result.raw_adjustment = ratio
            result.adjustment = capped
            result.adjustment_capped = capped != ratio
        result.baseline_kw = [None if u is None else u * result.adjustment for u in unadjusted]
        return
    if actual is None or base is None:
        result.adjustment = 0.0
        name = "symmetric additive" if adj.kind == ADJ_ADDITIVE else "additive"
        result.notes.append(f"no {name} adjustment: missing demand in the adjustment window")
    else:
        raw = actual - base
        delta = max(0.0, raw) if adj.kind == ADJ_ADDITIVE_POSITIVE else raw
        if adj.cap is not None:
            limit = adj.cap * abs(base)
            capped = min(limit, max(-limit, delta))
            result.adjustment_capped = capped != delta
            delta = capped
        result.adjustment, result.raw_adjustment = delta, raw
    delta = result.adjustment or 0.0
    adjusted = [None if c is None else c + delta for c in unadjusted]
    if spec.floor_zero:
        if any(a is not None and a < 0 for a in adjusted):
            result.notes.append("adjusted baseline floored at 0 kW")
        adjusted = [None if a is None else max(0.0, a) for a in adjusted]
    result.baseline_kw = adjusted


def _meter(spec: BaselineSpec, series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int,
           grid: Sequence[Window] | None) -> BaselineResult:
    grid = list(grid) if grid is not None else interval_grid(event, tz, interval_s)
    parts: list[tuple[Window, str]] = []
    if spec.before_minutes:
        end = event.start - timedelta(minutes=spec.before_skip_minutes)
        parts.append((Window(end - timedelta(minutes=spec.before_minutes), end),
                      f"{spec.before_minutes} min before" + (
                          f" (skipping {spec.before_skip_minutes} min)" if spec.before_skip_minutes else "")))
    if spec.after_minutes:
        start = event.end + timedelta(minutes=spec.after_skip_minutes)
        parts.append((Window(start, start + timedelta(minutes=spec.after_minutes)),
                      f"{spec.after_minutes} min after" + (
                          f" (skipping {spec.after_skip_minutes} min)" if spec.after_skip_minutes else "")))
    if not parts:
        raise MvError(f"meter method {spec.name!r} reads no window (before_minutes and after_minutes are 0)")
    means = [series.mean(w.start, w.end) for w, _ in parts]
    if len(parts) == 1:
        value = means[0]
    elif any(m is None for m in means):
        value = None
    else:
        weights = [w.hours for w, _ in parts]
        value = sum(m * h for m, h in zip(means, weights, strict=True)) / sum(weights)  # type: ignore[operator]
    result = BaselineResult(method=spec.name, variant=", ".join(label for _, label in parts), grid=grid,
                            baseline_kw=[value] * len(grid), unadjusted_kw=[value] * len(grid),
                            adjustment_window=parts[0][0])
    if value is None:
        if spec.before_minutes and not spec.after_minutes and not spec.before_skip_minutes:
            result.notes.append(f"no readings in the {spec.before_minutes} minutes before the event")
        else:
            result.notes.append("no readings in " + " and ".join(label for _, label in parts))
    return result


@dataclass(frozen=True)
class RegressionInput:
    """What a regression model gets: the load, the fit span (event days excluded), the intervals to predict."""

    spec: BaselineSpec
    series: LoadSeries                 # the load over the fit span and the event
    covariate: LoadSeries | None       # the spec's covariate topic, when it names one
    fit: Window                        # the look-back before the event day
    event: Window
    tz: ZoneInfo
    grid: list[Window]
    excluded_days: frozenset[date]     # event and outage days, not fitted


RegressionModel = Callable[[RegressionInput], list[float | None]]
_MODELS: dict[str, RegressionModel] = {}


def register_model(name: str, model: RegressionModel) -> None:
    """Make a regression model (a maintained library's, wrapped) available to specs of the regression kind."""
    _MODELS[name] = model


def _regression(spec: BaselineSpec, series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int,
                grid: Sequence[Window] | None, event_days: Iterable[date], outage_days: Iterable[date],
                lookback_days: int, covariate: LoadSeries | None) -> BaselineResult:
    model = _MODELS.get(spec.model)
    if model is None:
        raise MvError(f"regression model {spec.model!r} is not available in this environment")
    grid = list(grid) if grid is not None else interval_grid(event, tz, interval_s)
    day = event.start.astimezone(tz).date()
    fit = Window(_at(day - timedelta(days=lookback_days), time(), tz), _at(day, time(), tz))
    excluded = frozenset(event_days) | frozenset(outage_days)
    predicted = model(RegressionInput(spec, series, covariate, fit, event, tz, grid, excluded))
    if len(predicted) != len(grid):
        raise MvError(f"regression model {spec.model!r} predicted {len(predicted)} of {len(grid)} intervals")
    return BaselineResult(method=spec.name, variant=f"regression {spec.model}", grid=grid,
                          baseline_kw=list(predicted), unadjusted_kw=list(predicted),
                          excluded_days={d: "event day" for d in sorted(excluded) if fit.start.date() <= d < day},
                          notes=[f"fitted on {fit.start.date().isoformat()} .. {day - timedelta(days=1)}"])


def compute_spec(spec: BaselineSpec, series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
                 lookback_days: int | None = None, grid: Sequence[Window] | None = None,
                 outage_days: Iterable[date] = (), notification: datetime | None = None,
                 covariate: LoadSeries | None = None) -> BaselineResult:
    """One method's baseline over the event's intervals (or `grid`), with the days and adjustment it used."""
    if spec.kind == KIND_METER:
        return _meter(spec, series, event, tz, interval_s, grid)
    if spec.kind == KIND_REGRESSION:
        return _regression(spec, series, event, tz, interval_s, grid, event_days, outage_days,
                           spec.lookback_days if lookback_days is None else lookback_days, covariate)
    ctx = _context(series, event, tz, interval_s, calendar, event_days)
    grid = list(grid) if grid is not None else ctx.event_grid
    lookback = spec.lookback_days if lookback_days is None else lookback_days
    rule, similar, kind = _rule(spec, ctx)
    excluded: dict[date, str] = {}
    notes: list[str] = []
    days, basis = _select(spec, ctx, rule, similar, lookback, frozenset(outage_days), excluded, notes)
    unadjusted = _average(ctx, days, grid)
    result = BaselineResult(method=spec.name, variant=(rule.label or f"{rule.pool} {rule.keep} of {rule.of}"
                                                       " {kind}").format(kind=kind),
                            grid=grid, baseline_kw=list(unadjusted), unadjusted_kw=unadjusted, selected_days=days,
                            excluded_days=excluded, notes=notes)
    if not days:
        result.notes.append(f"no similar days with data in the {lookback} days before the event")
        return result
    if rule.pool == POOL_RECENT and len(days) < rule.keep:
        result.notes.append(f"{len(days)} of {rule.keep} days available")
    elif rule.pool != POOL_RECENT and basis < (rule.keep if rule.pool == POOL_LIKE else rule.of):
        result.notes.append(f"basis window has {basis} of {rule.keep if rule.pool == POOL_LIKE else rule.of} days")
    _apply_adjustment(spec, ctx, result, days, notification)
    return result
