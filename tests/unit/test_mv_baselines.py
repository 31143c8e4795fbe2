"""Baselines against cases small enough to check by eye.

Weekday cases: the event is Wednesday 2026-07-15, 14:00-16:00 UTC, hourly intervals. Every earlier day has one
constant level all day: the k-th most recent weekday has 10 + k kW, weekends 1000 kW (never similar). Monday
07-13 (k=2) is an event day (100 kW) and Friday 07-03 (k=8) a site holiday (500 kW), so the eligible weekdays,
most recent first, are k = 1, 3, 4, 5, 6, 7, 9, 10, 11, 12 -> 11, 13, 14, 15, 16, 17, 19, 20, 21, 22 kW.
On the event day the adjustment hours 10:00-13:00 read A kW; 09:00 and 13:00 (the skipped hour) read 1000 kW.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dr_historian.mv.baselines import adjustment_window, caiso_10in10, meter_before, pjm_high4of5
from dr_historian.mv.calendar import HolidayCalendar, nerc_holidays
from dr_historian.mv.series import LoadSeries, Window

UTC = timezone.utc
TZ = ZoneInfo("UTC")
EVENT_DAY = date(2026, 7, 15)
EVENT = Window(datetime(2026, 7, 15, 14, tzinfo=UTC), datetime(2026, 7, 15, 16, tzinfo=UTC))
EVENT_DAYS = {date(2026, 7, 13)}
HOLIDAY = date(2026, 7, 3)
CAL = HolidayCalendar([HOLIDAY])


def weekday_levels(overrides: dict[int, float] | None = None) -> dict[date, float]:
    levels: dict[date, float] = {}
    k = 0
    for n in range(1, 46):
        day = EVENT_DAY - timedelta(days=n)
        if day.weekday() >= 5:
            levels[day] = 1000.0
            continue
        k += 1
        levels[day] = (overrides or {}).get(k, 10.0 + k)
    levels[date(2026, 7, 13)] = 100.0
    levels[HOLIDAY] = 500.0
    return levels


def series_for(levels: dict[date, float], adjustment_kw: float, event_kw: float = 5.0) -> LoadSeries:
    points = {}
    for day, level in levels.items():
        for hour in range(24):
            points[datetime(day.year, day.month, day.day, hour, tzinfo=UTC)] = level
    for hour in range(9, 17):
        value = adjustment_kw if 10 <= hour < 13 else event_kw if hour >= 14 else 1000.0
        points[datetime(2026, 7, 15, hour, tzinfo=UTC)] = value
    return LoadSeries.from_interval_means(points, 3600)


def test_adjustment_window_is_the_three_hours_ending_an_hour_before_the_start():
    late_start = Window(datetime(2026, 7, 15, 14, 20, tzinfo=UTC), datetime(2026, 7, 15, 15, tzinfo=UTC))
    window = adjustment_window(late_start, TZ)
    assert (window.start.hour, window.end.hour) == (10, 13)


# --- CAISO 10-in-10 ------------------------------------------------------------------------------------
def test_caiso_selects_ten_recent_non_event_weekdays_and_adjusts_within_cap():
    # mean of 11,13,14,15,16,17,19,20,21,22 = 168/10 = 16.8; A = 18.48 -> ratio 1.1
    result = caiso_10in10(series_for(weekday_levels(), 18.48), EVENT, TZ, 3600, EVENT_DAYS, CAL)
    assert result.variant == "10-in-10 weekday"
    assert result.selected_days == [date(2026, 7, d) for d in (14, 10, 9, 8, 7, 6, 2, 1)] + \
        [date(2026, 6, 30), date(2026, 6, 29)]
    assert result.excluded_days[date(2026, 7, 13)] == "event day"
    assert HOLIDAY not in result.selected_days and date(2026, 7, 12) not in result.selected_days
    assert result.unadjusted_kw == pytest.approx([16.8, 16.8])
    assert result.adjustment == pytest.approx(1.1) and not result.adjustment_capped
    assert result.baseline_kw == pytest.approx([18.48, 18.48])


@pytest.mark.parametrize("adjustment_kw, ratio, capped, baseline", [
    (33.6, 2.0, 1.2, 20.16),   # +100 % capped at +20 %
    (8.4, 0.5, 0.8, 13.44),    # -50 % capped at -20 %
    (20.16, 1.2, 1.2, 20.16),  # exactly at the cap: not capped
])
def test_caiso_day_of_adjustment_is_capped_at_20_percent(adjustment_kw, ratio, capped, baseline):
    result = caiso_10in10(series_for(weekday_levels(), adjustment_kw), EVENT, TZ, 3600, EVENT_DAYS, CAL)
    assert result.raw_adjustment == pytest.approx(ratio)
    assert result.adjustment == pytest.approx(capped)
    assert result.adjustment_capped is (abs(ratio - capped) > 1e-9)
    assert result.baseline_kw == pytest.approx([baseline, baseline])


def test_caiso_has_no_low_usage_screen():
    # k=4 drops to 2 kW: CAISO keeps it -> (168 - 14 + 2) / 10 = 15.6
    result = caiso_10in10(series_for(weekday_levels({4: 2.0}), 15.6), EVENT, TZ, 3600, EVENT_DAYS, CAL)
    assert result.unadjusted_kw == pytest.approx([15.6, 15.6])


def test_caiso_tops_up_with_highest_event_days_when_fewer_than_five():
    # only six weekdays have data: k1=11, k4=14, k5=15 eligible; event days k2=30, k3=25, k6=12
    levels = {date(2026, 7, 14): 11.0, date(2026, 7, 13): 30.0, date(2026, 7, 10): 25.0, date(2026, 7, 9): 14.0,
              date(2026, 7, 8): 15.0, date(2026, 7, 7): 12.0}
    events = {date(2026, 7, 13), date(2026, 7, 10), date(2026, 7, 7)}
    result = caiso_10in10(series_for(levels, 19.0), EVENT, TZ, 3600, events)
    assert sorted(result.selected_days) == [date(2026, 7, d) for d in (8, 9, 10, 13, 14)]
    assert result.excluded_days[date(2026, 7, 7)] == "event day"
    assert result.unadjusted_kw == pytest.approx([19.0, 19.0])  # (11 + 14 + 15 + 30 + 25) / 5
    assert "5 of 10 days available" in result.notes


def weekend_levels() -> dict[date, float]:
    levels = {EVENT_DAY - timedelta(days=n): 10.0 for n in range(1, 46)}
    levels.update({date(2026, 7, 12): 40.0, date(2026, 7, 11): 30.0, date(2026, 7, 5): 44.0, date(2026, 7, 4): 34.0,
                   date(2026, 6, 28): 48.0, date(2026, 6, 27): 32.0, date(2026, 6, 21): 52.0,
                   date(2026, 6, 20): 36.0, date(2026, 6, 14): 1.0, date(2026, 6, 13): 1.0})
    for n in range(1, 4):
        day = date(2026, 7, 15 + n)
        levels[day] = 10.0 if day.weekday() < 5 else 999.0
    return levels


def weekend_series(event_day: date, adjustment_kw: float) -> LoadSeries:
    points = {}
    for day, level in weekend_levels().items():
        if day < event_day:
            for hour in range(24):
                points[datetime(day.year, day.month, day.day, hour, tzinfo=UTC)] = level
    for hour in range(10, 13):
        points[datetime(event_day.year, event_day.month, event_day.day, hour, tzinfo=UTC)] = adjustment_kw
    return LoadSeries.from_interval_means(points, 3600)


def _event_on(day: date) -> Window:
    return Window(datetime(day.year, day.month, day.day, 14, tzinfo=UTC),
                  datetime(day.year, day.month, day.day, 16, tzinfo=UTC))


def test_caiso_weekend_uses_four_recent_weekend_or_holiday_days():
    # Saturday 07-18; 07-05 is an event day; 07-04 is Independence Day (a Saturday holiday)
    saturday = date(2026, 7, 18)
    result = caiso_10in10(weekend_series(saturday, 38.0), _event_on(saturday), TZ, 3600, {date(2026, 7, 5)})
    assert result.variant == "4-in-4 weekend/holiday"
    assert result.selected_days == [date(2026, 7, 12), date(2026, 7, 11), date(2026, 7, 4), date(2026, 6, 28)]
    assert result.unadjusted_kw == pytest.approx([38.0, 38.0])  # (40 + 30 + 34 + 48) / 4
    assert result.adjustment == pytest.approx(1.0)


# --- PJM high 4 of 5 -----------------------------------------------------------------------------------
def test_pjm_weekday_high_4_of_5_with_symmetric_additive_adjustment():
    # basis window: k1=11, k3=13, k4=14, k5=15, k6=16 -> highest four 16, 15, 14, 13 -> CBL 14.5; A = 20 -> +5.5
    result = pjm_high4of5(series_for(weekday_levels(), 20.0), EVENT, TZ, 3600, EVENT_DAYS, CAL)
    assert result.variant == "high-4-of-5 weekday"
    assert result.selected_days == [date(2026, 7, 7), date(2026, 7, 8), date(2026, 7, 9), date(2026, 7, 10)]
    assert result.excluded_days[date(2026, 7, 14)] == "basis window, not in the highest 4"
    assert result.excluded_days[date(2026, 7, 13)] == "event day"
    assert result.unadjusted_kw == pytest.approx([14.5, 14.5])
    assert result.adjustment == pytest.approx(5.5)
    assert result.baseline_kw == pytest.approx([20.0, 20.0])


def test_pjm_adjustment_is_symmetric_and_uncapped():
    result = pjm_high4of5(series_for(weekday_levels(), 4.0), EVENT, TZ, 3600, EVENT_DAYS, CAL)
    assert result.adjustment == pytest.approx(-10.5)  # 4 - 14.5: far beyond 20 %, applied in full
    assert result.baseline_kw == pytest.approx([4.0, 4.0])
    assert not result.adjustment_capped


def test_pjm_drops_low_usage_days_and_refills_the_basis_window():
    # k4 = 2 kW: basis 11, 13, 2, 15, 16 (mean 11.4, 25 % = 2.85) -> k4 out, k7 = 17 in -> highest four 17, 16, 15, 13
    result = pjm_high4of5(series_for(weekday_levels({4: 2.0}), 15.25), EVENT, TZ, 3600, EVENT_DAYS, CAL)
    assert result.excluded_days[date(2026, 7, 9)].startswith("low usage")
    assert result.unadjusted_kw == pytest.approx([15.25, 15.25])
    assert result.adjustment == pytest.approx(0.0)


def test_pjm_saturday_uses_saturdays_only_and_not_a_saturday_holiday():
    # Saturdays before 07-18: 07-11=30, (07-04 is a holiday), 06-27=32, 06-20=36 -> highest two 36, 32 -> 34
    saturday = date(2026, 7, 18)
    result = pjm_high4of5(weekend_series(saturday, 34.0), _event_on(saturday), TZ, 3600, {date(2026, 7, 5)})
    assert result.variant == "high-2-of-3 saturday"
    assert result.selected_days == [date(2026, 6, 20), date(2026, 6, 27)]
    assert result.unadjusted_kw == pytest.approx([34.0, 34.0])


def test_pjm_sunday_uses_sundays_and_holidays_skipping_event_days():
    # Sundays/holidays before 07-19: 07-12=40, 07-05 event day, 07-04 holiday=34, 06-28=48 -> highest two 48, 40
    sunday = date(2026, 7, 19)
    result = pjm_high4of5(weekend_series(sunday, 44.0), _event_on(sunday), TZ, 3600, {date(2026, 7, 5)})
    assert result.variant == "high-2-of-3 sunday/holiday"
    assert result.selected_days == [date(2026, 6, 28), date(2026, 7, 12)]
    assert result.excluded_days[date(2026, 7, 5)] == "event day"
    assert result.unadjusted_kw == pytest.approx([44.0, 44.0])


# --- meter before / after ------------------------------------------------------------------------------
def test_meter_before_is_the_mean_of_the_minutes_before_the_start():
    points = {}
    t = datetime(2026, 7, 15, 12, tzinfo=UTC)
    while t < datetime(2026, 7, 15, 16, tzinfo=UTC):
        minute = (t - datetime(2026, 7, 15, 13, 30, tzinfo=UTC)).total_seconds() / 60
        points[t] = 100.0 if minute < 0 else 20.0 if minute < 15 else 30.0 if minute < 30 else 5.0
        t += timedelta(minutes=1)
    series = LoadSeries.from_interval_means(points, 60)
    result = meter_before(series, EVENT, TZ, 3600, before_minutes=30)
    assert result.baseline_kw == [25.0, 25.0]
    assert meter_before(series, EVENT, TZ, 3600, before_minutes=15).baseline_kw == [30.0, 30.0]
    assert meter_before(LoadSeries([], 60), EVENT, TZ, 3600).baseline_kw == [None, None]


# --- time zones ----------------------------------------------------------------------------------------
def test_days_match_by_local_wall_clock_across_a_dst_change():
    # US DST began Sunday 2026-03-08: 14:00 in Los Angeles is 22:00 UTC before and 21:00 UTC after.
    la = ZoneInfo("America/Los_Angeles")
    event_day = date(2026, 3, 10)
    points = {}
    for n in range(0, 30):
        day = event_day - timedelta(days=n)
        for hour in range(24):
            ts = datetime(day.year, day.month, day.day, hour, tzinfo=la)
            if n == 0 and hour >= 13:
                continue
            points[ts] = 50.0 if (hour == 14 and n > 0) else 10.0
    series = LoadSeries.from_interval_means(points, 3600)
    event = Window(datetime(2026, 3, 10, 14, tzinfo=la), datetime(2026, 3, 10, 15, tzinfo=la))
    result = caiso_10in10(series, event, la, 3600)
    assert any(d < date(2026, 3, 8) for d in result.selected_days)
    assert result.unadjusted_kw == [50.0]
    assert result.adjustment == pytest.approx(1.0)


def test_nerc_holidays():
    assert sorted(nerc_holidays(2026)) == [date(2026, 1, 1), date(2026, 5, 25), date(2026, 7, 4), date(2026, 9, 7),
                                           date(2026, 11, 26), date(2026, 12, 25)]
    assert date(2027, 7, 5) in nerc_holidays(2027)       # Sunday 07-04 observed on Monday
    assert date(2022, 12, 26) in nerc_holidays(2022)     # Sunday Christmas observed on Monday
    assert date(2027, 12, 25) in nerc_holidays(2027)     # Saturday: not moved
    assert HolidayCalendar(nerc=False).day_kind(date(2026, 7, 4)) == "saturday"
