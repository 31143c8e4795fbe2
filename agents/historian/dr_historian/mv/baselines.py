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

Since the parameterized engine (`dr_historian.mv.engine`) these three are presets of it
(`dr_historian.mv.presets`, which also holds PJM Same Day and Match Day, NYISO high 5 of 10, IESO 15 of 20,
ISO-NE 10 weekdays, ERCOT middle 8 of 10, PG&E top 5 of 10 and meter-after); the functions below keep their
signatures and numbers.

These are faithful implementations of the rules as summarised above; a settlement-grade calculation must follow
the program's current document (its data-quality rules, meter-data aggregation and rounding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dr_historian.mv.calendar import SATURDAY, SUNDAY_HOLIDAY, WEEKDAY, HolidayCalendar
from dr_historian.mv.engine import BaselineResult, BaselineSpec, compute_spec
from dr_historian.mv.presets import PRESETS, preset
from dr_historian.mv.series import LoadSeries, MvError, Window

METER_BEFORE = "meter-before"
CAISO_10IN10 = "caiso-10in10"
PJM_HIGH4OF5 = "pjm-high4of5"
VEN_REPORTED = "ven-reported"
DEFAULT_METHODS = (METER_BEFORE, CAISO_10IN10, PJM_HIGH4OF5, VEN_REPORTED)
METHODS = tuple(PRESETS) + (VEN_REPORTED,)   # every preset and the VEN's own baseline

LOOKBACK_DAYS = 45
CAISO_CAP = 0.20
PJM_LOW_USAGE = 0.25
ADJUSTMENT_HOURS = 3      # the adjustment window is 3 hours long ...
ADJUSTMENT_GAP_HOURS = 1  # ... and ends 1 hour before the event's starting hour


def adjustment_window(event: Window, tz: ZoneInfo) -> Window:
    """The three hours ending one hour before the event's starting hour (local clock hours)."""
    local = event.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    end = local.astimezone(ZoneInfo("UTC")) - timedelta(hours=ADJUSTMENT_GAP_HOURS)
    return Window(end - timedelta(hours=ADJUSTMENT_HOURS), end)


def meter_before(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 before_minutes: int = 30, grid: Sequence[Window] | None = None) -> BaselineResult:
    """Flat baseline: mean demand over the `before_minutes` before the event start."""
    spec = replace(PRESETS[METER_BEFORE], before_minutes=before_minutes)
    return compute_spec(spec, series, event, tz, interval_s, grid=grid)


def caiso_10in10(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
                 lookback_days: int = LOOKBACK_DAYS, cap: float = CAISO_CAP,
                 grid: Sequence[Window] | None = None) -> BaselineResult:
    """CAISO 10-in-10 (weekday) / 4-in-4 (weekend, holiday) with the +-20 % multiplicative day-of adjustment."""
    base = PRESETS[CAISO_10IN10]
    spec = replace(base, adjustment=replace(base.adjustment, cap=cap))
    return compute_spec(spec, series, event, tz, interval_s, event_days, calendar, lookback_days, grid)


def pjm_high4of5(series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int = 3600,
                 event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
                 lookback_days: int = LOOKBACK_DAYS, low_usage: float = PJM_LOW_USAGE,
                 grid: Sequence[Window] | None = None) -> BaselineResult:
    """PJM High 4 of 5 (weekday) / High 2 of 3 (Saturday; Sunday/holiday) with the symmetric additive adjustment."""
    spec = replace(PRESETS[PJM_HIGH4OF5], low_usage=low_usage)
    return compute_spec(spec, series, event, tz, interval_s, event_days, calendar, lookback_days, grid)


def spec_for(method: str, before_minutes: int = 30, overrides: dict | None = None) -> BaselineSpec:
    """The spec of a named method (meter-before takes the configured minutes unless overridden)."""
    if method == VEN_REPORTED:
        raise MvError("ven-reported is not a meter-data method")
    spec = preset(method)
    if method == METER_BEFORE:
        spec = replace(spec, before_minutes=before_minutes)
    return preset(method, overrides) if overrides else spec


def compute(method: str, series: LoadSeries, event: Window, tz: ZoneInfo, interval_s: int,
            event_days: Iterable[date] = (), calendar: HolidayCalendar | None = None,
            lookback_days: int = LOOKBACK_DAYS, before_minutes: int = 30,
            grid: Sequence[Window] | None = None, outage_days: Iterable[date] = (),
            notification: datetime | None = None, overrides: dict | None = None) -> BaselineResult:
    """Dispatch by method name (ven-reported is not a meter-data method)."""
    if method not in PRESETS:
        raise MvError(f"unknown baseline method {method!r}; known: {', '.join(PRESETS)}")
    spec = spec_for(method, before_minutes, overrides)
    return compute_spec(spec, series, event, tz, interval_s, event_days, calendar, lookback_days, grid,
                        outage_days, notification)


__all__ = ["BaselineResult", "METHODS", "DEFAULT_METHODS", "METER_BEFORE", "CAISO_10IN10", "PJM_HIGH4OF5",
           "VEN_REPORTED", "adjustment_window", "meter_before", "caiso_10in10", "pjm_high4of5", "compute",
           "spec_for", "SATURDAY", "SUNDAY_HOLIDAY", "WEEKDAY"]
