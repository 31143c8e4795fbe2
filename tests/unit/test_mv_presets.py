"""Every baseline preset against flat levels per day, so the right answer is arithmetic.

The event is Wednesday 2026-07-15, 14:00-16:00 UTC, hourly intervals, readings every 15 minutes. Every earlier
weekday has one constant level all day: the k-th most recent weekday has 10 + k kW (07-14 is k=1: 11 kW); weekend
days 1000 kW (never similar to a weekday). No holidays in the window except where a test adds one. The event
day reads `pre` kW all day before the event unless a test sets particular hours.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dr_historian.mv.baselines import compute
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.mv.engine import compute_spec
from dr_historian.mv.presets import PRESETS, describe, preset, with_overrides
from dr_historian.mv.series import LoadSeries, MvError, Window

UTC = timezone.utc
TZ = ZoneInfo("UTC")
EVENT_DAY = date(2026, 7, 15)
EVENT = Window(datetime(2026, 7, 15, 14, tzinfo=UTC), datetime(2026, 7, 15, 16, tzinfo=UTC))
NO_HOLIDAYS = HolidayCalendar(nerc=False)


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
    return levels


def day_k(k: int) -> date:
    """The k-th most recent weekday before the event day."""
    day = EVENT_DAY
    while k:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            k -= 1
    return day


def series(levels: dict[date, float], pre: float = 0.0, event_day: dict[tuple[int, int], float] | None = None,
           after: float = 0.0) -> LoadSeries:
    """Readings every 15 minutes; the event day reads `pre` before 14:00, `after` from 14:00, except `event_day`
    {(hour, minute): kW} (a 15-minute slot)."""
    points = {}
    for day, level in levels.items():
        for q in range(96):
            points[datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=15 * q)] = level
    for q in range(96):
        ts = datetime(2026, 7, 15, tzinfo=UTC) + timedelta(minutes=15 * q)
        value = (event_day or {}).get((ts.hour, ts.minute), pre if ts.hour < 14 else after)
        points[ts] = value
    return LoadSeries.from_interval_means(points, 900)


def hours(values: dict[int, float]) -> dict[tuple[int, int], float]:
    """{hour: kW} as every 15-minute slot of those hours."""
    return {(h, m): v for h, v in values.items() for m in (0, 15, 30, 45)}


def run(name: str, s: LoadSeries, overrides: dict | None = None, **kw):
    return compute_spec(preset(name, overrides), s, EVENT, TZ, 3600, calendar=NO_HOLIDAYS, **kw)


# --- every preset ----------------------------------------------------------------------------------------
def test_every_named_program_has_a_preset_with_its_source():
    assert set(PRESETS) >= {"meter-before", "meter-after", "caiso-10in10", "pjm-high4of5", "pjm-same-day",
                            "pjm-match-day", "nyiso-high5of10", "ieso-15of20", "isone-10weekday",
                            "ercot-middle8of10", "pge-top5of10"}
    for spec in PRESETS.values():
        assert spec.source, spec.name
        assert describe(spec)["name"] == spec.name


def test_meter_after_is_the_mean_of_the_30_minutes_after_the_end():
    s = series(weekday_levels(), event_day={(16, 0): 8.0, (16, 15): 10.0, (16, 30): 500.0}, after=1.0)
    assert run("meter-after", s).baseline_kw == [9.0, 9.0]


def test_pjm_same_day_averages_3_hours_before_and_2_after_each_after_skipping_one():
    # 10:00-13:00 = 12 kW, 13:00-14:00 skipped (1000), 16:00-17:00 skipped (1000), 17:00-19:00 = 7 kW
    s = series(weekday_levels(), pre=999.0, event_day=hours({10: 12, 11: 12, 12: 12, 13: 1000, 16: 1000,
                                                              17: 7, 18: 7, 19: 999}))
    result = run("pjm-same-day", s)
    assert result.baseline_kw == pytest.approx([10.0, 10.0])  # (3 x 12 + 2 x 7) / 5


def test_pjm_match_day_takes_the_three_most_similar_days_and_the_saa():
    # the event day's non-event hours read 17.2 kW; closest levels 17 (k7), 18 (k8), 16 (k6) -> 17; SAA 17.2 - 17
    result = run("pjm-match-day", series(weekday_levels(), pre=17.2, after=17.2))
    assert sorted(result.selected_days) == sorted([day_k(6), day_k(7), day_k(8)])
    assert result.unadjusted_kw == pytest.approx([17.0, 17.0])
    assert result.adjustment == pytest.approx(0.2)
    assert result.baseline_kw == pytest.approx([17.2, 17.2])


def test_nyiso_high_5_of_10_with_capped_multiplicative_adjustment_over_hours_minus_4_and_3():
    # basis k1..k10 = 11..20 -> highest five 16..20 -> 18; hours 10, 11 read 19.8 -> x1.1; hour 12 is not read
    s = series(weekday_levels(), pre=500.0, event_day=hours({10: 19.8, 11: 19.8, 12: 1000.0}))
    result = run("nyiso-high5of10", s)
    assert result.unadjusted_kw == pytest.approx([18.0, 18.0])
    assert result.adjustment == pytest.approx(1.1)
    assert result.baseline_kw == pytest.approx([19.8, 19.8])


def test_ieso_high_15_of_20_with_additive_adjustment_capped_at_20_percent():
    # basis k1..k20 = 11..30 -> highest 15 = 16..30 -> 23; hours 10-13 read 25 -> +2; 40 -> +17 capped at 4.6
    result = run("ieso-15of20", series(weekday_levels(), pre=25.0))
    assert len(result.selected_days) == 15 and result.unadjusted_kw == pytest.approx([23.0, 23.0])
    assert result.adjustment == pytest.approx(2.0) and not result.adjustment_capped
    capped = run("ieso-15of20", series(weekday_levels(), pre=40.0))
    assert capped.raw_adjustment == pytest.approx(17.0) and capped.adjustment == pytest.approx(4.6)
    assert capped.adjustment_capped and capped.baseline_kw == pytest.approx([27.6, 27.6])


def test_isone_ten_weekdays_with_additive_adjustment_from_15_minutes_before_notification():
    # 10 most recent weekdays 11..20 -> 15.5; notification 13:30 -> window 13:15-13:30 reads 20 -> +4.5
    s = series(weekday_levels(), pre=15.5, event_day={(13, 15): 20.0})
    notified = run("isone-10weekday", s, notification=datetime(2026, 7, 15, 13, 30, tzinfo=UTC))
    assert notified.unadjusted_kw == pytest.approx([15.5, 15.5])
    assert notified.adjustment == pytest.approx(4.5) and notified.baseline_kw == pytest.approx([20.0, 20.0])
    # without a notification time the window is the 15 minutes before the event start (15.5 kW): no adjustment
    unknown = run("isone-10weekday", s)
    assert unknown.adjustment == pytest.approx(0.0) and any("notification" in n for n in unknown.notes)


def test_pjm_match_day_leaves_the_hour_before_and_after_the_event_out_of_the_match():
    # 00:00-13:00 and 17:00-24:00 read 12.2 kW (closest: 12, 13, 11 -> 12); 13:00-14:00 and 16:00-17:00 read
    # 40 kW: were they compared, the three highest levels would match
    s = series(weekday_levels(), pre=12.2, after=12.2, event_day=hours({13: 40.0, 16: 40.0, 14: 500.0, 15: 500.0}))
    result = run("pjm-match-day", s, {"adjustment": {"kind": "none"}})
    assert sorted(result.selected_days) == sorted([day_k(1), day_k(2), day_k(3)])
    assert result.baseline_kw == pytest.approx([12.0, 12.0])
    wide = run("pjm-match-day", s, {"adjustment": {"kind": "none"}, "likeSkipMinutes": 0})
    assert wide.baseline_kw != result.baseline_kw


def test_ercot_middle_8_of_10_drops_the_highest_and_the_lowest():
    result = run("ercot-middle8of10", series(weekday_levels(), pre=100.0))
    assert result.unadjusted_kw == pytest.approx([15.5, 15.5])  # 12..19
    assert result.baseline_kw == result.unadjusted_kw and result.adjustment is None
    assert "lowest" in result.excluded_days[day_k(1)] and "highest" in result.excluded_days[day_k(10)]


def test_pge_top_5_of_10_weekdays_and_top_3_of_5_weekend_days():
    assert run("pge-top5of10", series(weekday_levels())).unadjusted_kw == pytest.approx([18.0, 18.0])
    saturday = date(2026, 7, 18)
    levels = {saturday - timedelta(days=n): 10.0 for n in range(1, 46)}
    weekend = [d for d in sorted(levels, reverse=True) if d.weekday() >= 5]
    for value, day in zip((30.0, 5.0, 40.0, 20.0, 50.0, 99.0), weekend, strict=False):
        levels[day] = value  # the 5 most recent weekend days 30, 5, 40, 20, 50 -> top 3 50, 40, 30 -> 40
    event = Window(datetime(2026, 7, 18, 14, tzinfo=UTC), datetime(2026, 7, 18, 16, tzinfo=UTC))
    s = LoadSeries.from_interval_means({datetime(d.year, d.month, d.day, h, tzinfo=UTC): v
                                        for d, v in levels.items() for h in range(24)}, 3600)
    result = compute_spec(preset("pge-top5of10"), s, event, TZ, 3600, calendar=NO_HOLIDAYS)
    assert result.variant == "top-3-of-5 weekend/holiday"
    assert result.unadjusted_kw == pytest.approx([40.0, 40.0])


# --- each step changes the number --------------------------------------------------------------------------
# NYISO high 5 of 10 with k2 an event day (100 kW): basis k1, k3..k11 = 11, 13..21 -> highest five 17..21 -> 19.
# Hours 10 and 11 of the event day read A, hour 12 reads B (outside the preset's 2-hour window).
EVENT_DAYS = {day_k(2)}


def nyiso(adjust: float, hour12: float, overrides: dict | None = None, levels: dict | None = None, **kw):
    levels = levels or weekday_levels({2: 100.0})
    s = series(levels, pre=500.0, event_day=hours({10: adjust, 11: adjust, 12: hour12}))
    return run("nyiso-high5of10", s, overrides, event_days=EVENT_DAYS, **kw)


def test_the_full_rule():
    result = nyiso(20.9, 15.2)
    assert result.unadjusted_kw == pytest.approx([19.0, 19.0])
    assert result.adjustment == pytest.approx(1.1) and result.baseline_kw == pytest.approx([20.9, 20.9])


def test_skipping_the_pool_pick_changes_the_number():
    # the 10 most recent instead of the highest 5 of them: (11 + 13..21) / 10 = 16.4
    result = nyiso(20.9, 15.2, {"weekday": {"pool": "recent", "keep": 10}})
    assert result.unadjusted_kw == pytest.approx([16.4, 16.4])


def test_skipping_the_event_day_exclusion_changes_the_number():
    # k2 = 100 kW joins the basis: highest five 100, 20, 19, 18, 17 -> 34.8
    result = nyiso(20.9, 15.2, {"excludeEventDays": False})
    assert result.unadjusted_kw == pytest.approx([34.8, 34.8])


def test_skipping_the_low_usage_and_outage_exclusions_changes_the_number():
    # k3 = 2 kW is below 25 % of the basis mean (15.2 -> 3.8): dropped, k12 = 22 joins -> 18..22 -> 20
    low = weekday_levels({2: 100.0, 3: 2.0})
    assert nyiso(20.9, 15.2, levels=low).unadjusted_kw == pytest.approx([20.0, 20.0])
    assert nyiso(20.9, 15.2, {"lowUsage": None}, levels=low).unadjusted_kw == pytest.approx([19.0, 19.0])
    # an outage on k1 takes it out of the basis: k3..k12 = 13..22 -> highest five 18..22 -> 20
    outage = nyiso(20.9, 15.2, outage_days={day_k(1)})
    assert outage.excluded_days[day_k(1)] == "outage day" and outage.unadjusted_kw == pytest.approx([20.0, 20.0])


def test_skipping_the_adjustment_window_changes_the_number():
    # a 3-hour window (hours 10-12) also reads hour 12: (20.9 + 20.9 + 15.2) / 3 = 19 -> x1.0
    result = nyiso(20.9, 15.2, {"adjustment": {"lengthMinutes": 180}})
    assert result.adjustment == pytest.approx(1.0) and result.baseline_kw == pytest.approx([19.0, 19.0])
    none = nyiso(20.9, 15.2, {"adjustment": {"kind": "none"}})
    assert none.adjustment is None and none.baseline_kw == pytest.approx([19.0, 19.0])


def test_skipping_the_cap_changes_the_number():
    capped = nyiso(38.0, 15.2)  # ratio 2 capped at 1.2 -> 22.8
    assert capped.adjustment_capped and capped.baseline_kw == pytest.approx([22.8, 22.8])
    uncapped = nyiso(38.0, 15.2, {"adjustment": {"cap": None}})
    assert uncapped.baseline_kw == pytest.approx([38.0, 38.0]) and not uncapped.adjustment_capped


def test_additive_positive_only_never_lowers_the_baseline():
    down = nyiso(15.2, 15.2, {"adjustment": {"kind": "additive-positive", "cap": None}})
    assert down.raw_adjustment == pytest.approx(-3.8) and down.adjustment == 0.0
    assert down.baseline_kw == pytest.approx([19.0, 19.0])
    up = nyiso(20.9, 15.2, {"adjustment": {"kind": "additive-positive", "cap": None}})
    assert up.baseline_kw == pytest.approx([20.9, 20.9])


# --- overrides -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key", [
    ({"guess": 1}, "guess"),
    ({"weekday": {"pool": "magic"}}, "weekday.pool"),
    ({"adjustment": {"cap": "big"}}, "adjustment.cap"),
    ({"adjustment": {"kind": "linear"}}, "adjustment.kind"),
    ({"weekday": {"keep": 11}}, "keep"),
    ({"lookbackDays": True}, "lookbackDays"),
    ({"name": "other"}, "name"),
    ({"weekday": 3}, "weekday"),
])
def test_a_bad_override_names_its_key(overrides, key):
    with pytest.raises(MvError, match=key.replace(".", r"\.")):
        with_overrides(PRESETS["nyiso-high5of10"], overrides)


def test_overrides_leave_the_preset_unchanged_and_reach_compute():
    before = PRESETS["caiso-10in10"]
    changed = preset("caiso-10in10", {"adjustment": {"cap": 0.5}, "lookback_days": 30})
    assert before.adjustment.cap == 0.2 and changed.adjustment.cap == 0.5 and changed.lookback_days == 30
    assert replace(changed, adjustment=before.adjustment, lookback_days=45) == before
    s = series(weekday_levels(), pre=40.0)
    plain = compute("caiso-10in10", s, EVENT, TZ, 3600, calendar=NO_HOLIDAYS)
    wide = compute("caiso-10in10", s, EVENT, TZ, 3600, calendar=NO_HOLIDAYS, overrides={"adjustment": {"cap": 0.5}})
    assert plain.adjustment == pytest.approx(1.2) and wide.adjustment == pytest.approx(1.5)
