"""event_performance from records in a real SQLite historian, with figures checkable by hand.

Event ev1, Wednesday 2026-07-15 14:00-15:00 UTC: ven1 asked for 2 kW, ven2 for 1 kW. History (every 15 min,
45 days): ven1 4 kW and ven2 2 kW on weekdays; the site meter 7 kW. Tuesday 07-14 was an event day of ven1 only
(ven1 100 kW, meter 50 kW that day, so using it would show). On the event day (1-minute telemetry) ven1 uses 5 kW
before and after, 3 kW during, and reports a 5 kW baseline; ven2 2.5 / 1.5 / 2.5; the meter reads ven1 + ven2 + 1.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from dr_historian.mv.performance import MvOptions, event_performance, topic_baseline
from dr_historian.mv.series import MvError
from dr_historian.store import Point, Store
from dr_historian.writer import Writer

UTC = timezone.utc
START = datetime(2026, 7, 15, 14, tzinfo=UTC)
END = datetime(2026, 7, 15, 15, tzinfo=UTC)
METER = "demo/meter/PowerKw"


def cmd_record(ven: str, event_id: str, start: datetime, end: datetime, kw: float, op: str = "event") -> dict:
    value = {"op": op, "correlationId": f"{event_id}-{ven}-{op}", "eventId": event_id, "requestedReductionKw": kw,
             "startTime": start.isoformat(), "until": end.isoformat(), "issuedAt": start.isoformat()}
    return {"timestamp": start, "topic": f"dr/cmd/{ven}", "value": value, "meta": {}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('mv') / 'h.sqlite'}")
    store.setup()
    points = []
    for n in range(1, 47):
        day = START.date() - timedelta(days=n)
        weekday = day.weekday() < 5
        levels = {"ven1": 4.0 if weekday else 9.0, "ven2": 2.0 if weekday else 9.0}
        meter = 7.0 if weekday else 19.0
        if day == date(2026, 7, 14):
            levels["ven1"], meter = 100.0, 50.0
        for q in range(96):
            ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=15 * q)
            points += [Point("dr/telemetry/ven1/usedPowerKw", ts, levels["ven1"]),
                       Point("dr/telemetry/ven2/usedPowerKw", ts, levels["ven2"]), Point(METER, ts, meter)]
    t = datetime(2026, 7, 15, 9, tzinfo=UTC)
    while t < datetime(2026, 7, 15, 16, tzinfo=UTC):
        during = START <= t < END
        v1, v2 = (3.0, 1.5) if during else (5.0, 2.5)
        points += [Point("dr/telemetry/ven1/usedPowerKw", t, v1), Point("dr/telemetry/ven1/baselinePowerKw", t, 5.0),
                   Point("dr/telemetry/ven2/usedPowerKw", t, v2), Point("dr/telemetry/ven2/baselinePowerKw", t, 2.5),
                   Point(METER, t, v1 + v2 + 1.0)]
        t += timedelta(minutes=1)
    store.write(points)
    prior = datetime(2026, 7, 14, 14, tzinfo=UTC)
    Writer(store).publish([cmd_record("ven1", "ev0", prior, prior + timedelta(hours=1), 2.0),
                           cmd_record("ven1", "ev1", START, END, 2.0), cmd_record("ven2", "ev1", START, END, 1.0)])
    yield store
    store.dispose()


OPTIONS = MvOptions(meter_topics=(METER,))


def metrics(report, who, method):
    if who == "total":
        return report["total"]["methods"][method]
    if who == "meter":
        return report["meters"][METER]["methods"][method]
    return report["vens"][who]["methods"][method]


@pytest.mark.parametrize("who, method, baseline_kwh, actual_kwh, reduction, percent", [
    ("ven1", "meter-before", 5.0, 3.0, 2.0, 100.0),
    ("ven1", "ven-reported", 5.0, 3.0, 2.0, 100.0),
    ("ven1", "caiso-10in10", 4.8, 3.0, 1.8, 90.0),     # 4 kW x 1.25 capped at 1.2
    ("ven1", "pjm-high4of5", 5.0, 3.0, 2.0, 100.0),    # 4 kW + (5 - 4)
    ("ven2", "meter-before", 2.5, 1.5, 1.0, 100.0),
    ("ven2", "caiso-10in10", 2.4, 1.5, 0.9, 90.0),
    ("ven2", "pjm-high4of5", 2.5, 1.5, 1.0, 100.0),
    ("total", "meter-before", 7.5, 4.5, 3.0, 100.0),
    ("total", "caiso-10in10", 7.2, 4.5, 2.7, 90.0),
    ("total", "ven-reported", 7.5, 4.5, 3.0, 100.0),
    ("meter", "meter-before", 8.5, 5.5, 3.0, 100.0),
    ("meter", "caiso-10in10", 8.4, 5.5, 2.9, 2.9 / 3.0 * 100),  # 7 kW x 8.5/7 capped at 1.2
    ("meter", "pjm-high4of5", 8.5, 5.5, 3.0, 100.0),
])
def test_event_performance_figures(store, who, method, baseline_kwh, actual_kwh, reduction, percent):
    report = event_performance(store, "ev1", OPTIONS)
    m = metrics(report, who, method)
    assert m["baselineKwh"] == pytest.approx(baseline_kwh)
    assert m["actualKwh"] == pytest.approx(actual_kwh)
    assert m["avgReductionKw"] == pytest.approx(reduction)
    assert m["peakReductionKw"] == pytest.approx(reduction)
    assert m["percentOfRequested"] == pytest.approx(percent)
    assert len(m["intervals"]) == 4 and m["missingIntervals"] == 0


def test_event_days_are_per_ven_for_vens_and_any_for_meters(store):
    report = event_performance(store, "ev1", OPTIONS)
    ven1 = report["vens"]["ven1"]["methods"]["caiso-10in10"]["baseline"]
    ven2 = report["vens"]["ven2"]["methods"]["caiso-10in10"]["baseline"]
    meter = report["meters"][METER]["methods"]["caiso-10in10"]["baseline"]
    assert ven1["excludedDays"]["2026-07-14"] == "event day" and "2026-07-14" not in ven1["selectedDays"]
    assert "2026-07-14" in ven2["selectedDays"]
    assert meter["excludedDays"]["2026-07-14"] == "event day"
    assert ven1["adjustmentCapped"] is True and ven1["rawAdjustment"] == pytest.approx(1.25)
    assert report["requestedKw"] == 3.0 and report["window"]["start"].startswith("2026-07-15T14:00")


def test_plot_series_cover_the_margin(store):
    report = event_performance(store, "ev1", MvOptions(methods=("meter-before",), plot_margin_minutes=60))
    plot = report["vens"]["ven1"]["plot"]
    assert plot["grid"][0].startswith("2026-07-15T13:00") and len(plot["grid"]) == 12
    assert plot["actualKw"][0] == 5.0 and plot["actualKw"][4] == 3.0
    assert plot["baselines"]["meter-before"] == [5.0] * 12
    assert len(plot["fine"]) == 180


def test_early_restore_shortens_the_window(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    t = START - timedelta(hours=1)
    store.write([Point("dr/telemetry/v/usedPowerKw", t + timedelta(minutes=i), 4.0 if i < 60 else 1.0)
                 for i in range(120)])
    Writer(store).publish([cmd_record("v", "ev9", START, END, 3.0),
                           cmd_record("v", "ev9", START + timedelta(minutes=30), END, 0.0, op="restore")])
    report = event_performance(store, "ev9", MvOptions(methods=("meter-before",)))
    m = report["vens"]["v"]["methods"]["meter-before"]
    assert report["vens"]["v"]["window"]["end"].startswith("2026-07-15T14:30")
    assert m["baselineKwh"] == pytest.approx(2.0) and m["avgReductionKw"] == pytest.approx(3.0)
    assert m["percentOfRequested"] == pytest.approx(100.0)


def test_the_reported_baseline_is_averaged_over_the_same_samples_as_the_metered_power(tmp_path):
    """An event that starts and ends inside 15-minute intervals: outside the event the VEN reports its rolling
    baseline (here 9 kW), which must not enter the interval's reported baseline (5 kW during the event)."""
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    start, end = START + timedelta(minutes=5), START + timedelta(minutes=25)
    points = []
    for i in range(-30, 60):
        t = START + timedelta(minutes=i)
        during = start <= t < end
        points += [Point("dr/telemetry/v/usedPowerKw", t, 3.0 if during else 9.0),
                   Point("dr/telemetry/v/baselinePowerKw", t, 5.0 if during else 9.0)]
    store.write(points)
    Writer(store).publish([cmd_record("v", "ev7", start, end, 2.0)])
    m = event_performance(store, "ev7", MvOptions(methods=("ven-reported",)))["vens"]["v"]["methods"]["ven-reported"]
    hours = (end - start).total_seconds() / 3600
    assert m["baselineKwh"] == pytest.approx(5.0 * hours) and m["actualKwh"] == pytest.approx(3.0 * hours)
    assert m["avgReductionKw"] == pytest.approx(2.0) and m["peakReductionKw"] == pytest.approx(2.0)
    store.dispose()


def test_missing_history_is_reported_not_raised(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    store.write([Point("dr/telemetry/v/usedPowerKw", START + timedelta(minutes=i), 1.0) for i in range(60)])
    Writer(store).publish([cmd_record("v", "ev9", START, END, 1.0)])
    report = event_performance(store, "ev9", MvOptions(methods=("caiso-10in10", "meter-before")))
    caiso = report["vens"]["v"]["methods"]["caiso-10in10"]
    assert caiso["baselineKwh"] is None and "no similar days" in caiso["error"]
    assert report["vens"]["v"]["methods"]["meter-before"]["error"].startswith("no readings")
    with pytest.raises(MvError, match="no event"):
        event_performance(store, "nope")
    with pytest.raises(MvError, match="unknown method"):
        event_performance(store, "ev9", MvOptions(methods=("magic",)))


def test_topic_baseline_for_any_topic(store):
    out = topic_baseline(store, METER, START, END, "pjm-high4of5", MvOptions(interval_minutes=60))
    assert out["variant"] == "high-4-of-5 weekday"
    assert [i["baselineKw"] for i in out["intervals"]] == pytest.approx([8.5])
    assert out["excludedDays"]["2026-07-14"] == "event day"
