"""Baseline accuracy by backcast on non-event days.

Hand-checkable case: every day reads 10 kW, except 14:00-16:00 UTC, which reads 12 kW. Day-matching methods
predict 12 kW exactly (relative RMSE 0); meter-before (13:30-14:00), meter-after (16:00-16:30) and PJM Same Day
(10:00-13:00 and 17:00-19:00) predict 10 kW: an error of -2 kW in every interval, so relative RMSE and bias are
2/12 = 16.7 % and -16.7 %, and no day is within 10 %.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dr_historian.mv.accuracy import backcast, event_accuracy, format_ranking, site_accuracy
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.mv.engine import KIND_REGRESSION
from dr_historian.mv.performance import MvOptions
from dr_historian.mv.presets import PRESETS
from dr_historian.mv.series import LoadSeries, MvError, Window
from dr_historian.store import Point, Store
from dr_historian.writer import Writer
from dr_historian.mv.regression import OPENDSM_CALTRACK_DR
from dr_tools.synth import MeterProfile, readings

UTC = timezone.utc
TZ = ZoneInfo("UTC")
WINDOW = Window(datetime(2026, 7, 15, 14, tzinfo=UTC), datetime(2026, 7, 15, 16, tzinfo=UTC))
METER_LIKE = {"meter-before", "meter-after", "pjm-same-day"}
TEMPERATURE = "site/weather/OutdoorTempF"
# the regression preset (where opendsm is installed) fits on the synthetic outdoor temperature
COVARIATE = {OPENDSM_CALTRACK_DR: {"covariateTopic": TEMPERATURE}} if OPENDSM_CALTRACK_DR in PRESETS else {}


def flat_series(days: int = 110) -> LoadSeries:
    points = {}
    for n in range(0, days):
        day = WINDOW.start.date() - timedelta(days=n)
        for q in range(96):
            ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=15 * q)
            points[ts] = 12.0 if 14 <= ts.hour < 16 else 10.0
    return LoadSeries.from_interval_means(points, 900)


def test_backcast_by_hand():
    event_days = {date(2026, 7, 10), date(2026, 6, 1)}
    hand_checkable = [s for s in PRESETS.values() if s.kind != KIND_REGRESSION]  # a regression is no arithmetic
    report = backcast(flat_series(), hand_checkable, WINDOW, TZ, 3600, 60, event_days,
                      HolidayCalendar(nerc=False))
    assert report["backcastDays"] == 58  # 60 days minus the two event days
    for name, m in report["methods"].items():
        if name in METER_LIKE:
            assert m["relativeRmse"] == pytest.approx(2 / 12) and m["bias"] == pytest.approx(-2 / 12)
            assert m["within10Pct"] == 0.0 and m["under20"] is True and m["biasKw"] == pytest.approx(-2.0)
        else:
            assert m["relativeRmse"] == pytest.approx(0.0, abs=1e-12) and m["within10Pct"] == 1.0, name
        assert m["days"] == 58
    assert set(report["ranking"][-3:]) == METER_LIKE
    assert "rel. RMSE" in format_ranking(report)


def test_backcast_counts_days_without_data_and_bounds_days():
    sparse = flat_series(days=30)  # history for the last 30 days only: older days cannot be backcast
    report = backcast(sparse, [PRESETS["meter-before"], PRESETS["caiso-10in10"]], WINDOW, TZ, 3600, 60)
    assert report["backcastDays"] == 29
    assert report["methods"]["meter-before"]["days"] == 29
    assert report["methods"]["caiso-10in10"]["daysNotComputable"] > 0
    with pytest.raises(MvError, match="days"):
        backcast(sparse, [PRESETS["meter-before"]], WINDOW, TZ, 3600, 500)


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """60 days (plus the 45-day look-back) of 1-minute synthetic residential meter data and its outdoor
    temperature, one recorded event."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('acc') / 'h.sqlite'}")
    store.setup()
    tz = ZoneInfo("America/New_York")
    end = datetime(2026, 8, 1, tzinfo=tz)
    rows = list(readings(end - timedelta(days=108), end, 60, MeterProfile(), tz, seed=11))
    store.write([Point("site/meter/PowerKw", ts, kw) for ts, kw, _ in rows]
                + [Point(TEMPERATURE, ts, temp) for ts, _, temp in rows[::15]])  # temperature every 15 minutes
    start = datetime(2026, 7, 31, 14, tzinfo=tz)
    value = {"op": "event", "correlationId": "c1", "eventId": "ev-acc", "requestedReductionKw": 1.0,
             "startTime": start.isoformat(), "until": (start + timedelta(hours=2)).isoformat(),
             "issuedAt": start.isoformat()}
    Writer(store).publish([{"timestamp": start, "topic": "dr/cmd/ven-a", "value": value, "meta": {}}])
    yield store
    store.dispose()


def test_accuracy_on_60_days_of_synthetic_meter_data(synthetic_store, figure):
    options = MvOptions(timezone="America/New_York", interval_minutes=60, meter_topics=("site/meter/PowerKw",),
                        overrides=COVARIATE)
    report = event_accuracy(synthetic_store, "ev-acc", options, days=60)
    assert report["topic"] == "site/meter/PowerKw" and report["backcastDays"] == 60
    assert report["chosenMethod"] == "meter-before" and report["chosenAccuracy"]["days"] == 60
    assert set(report["ranking"]) == set(PRESETS)
    rmses = [report["methods"][n]["relativeRmse"] for n in report["ranking"]]
    assert all(r is not None for r in rmses) and rmses == sorted(rmses)
    figure("M&V accuracy backcast, 60 days of 1-minute synthetic residential data, 14:00-16:00 New York",
           "\n" + format_ranking(report))
    # the same through site_accuracy with two methods only
    two = site_accuracy(synthetic_store, "site/meter/PowerKw", Window(datetime.fromisoformat(report["window"]["start"]),
                                                                     datetime.fromisoformat(report["window"]["end"])),
                        options, 60, ["caiso-10in10", "pjm-high4of5"])
    assert two["methods"]["caiso-10in10"] == report["methods"]["caiso-10in10"]


# --- the RPC --------------------------------------------------------------------------------------------------
@pytest.fixture
def api(synthetic_store):
    from dr_historian.api import HistorianApi
    from dr_historian.config import parse_config

    config = parse_config({"connection": {"url": "sqlite:///unused.sqlite"},
                           "mv": {"timezone": "America/New_York", "interval_minutes": 60,
                                  "meter_topics": ["site/meter/PowerKw"], "methods": ["pjm-high4of5", "meter-before"]}})
    return HistorianApi(lambda: synthetic_store, lambda: config)


def test_rpc_ranks_the_presets_for_an_event_and_names_the_configured_method(api):
    report = api.guarded("baseline_accuracy", lambda: api.baseline_accuracy("ev-acc", days=20))
    assert report["backcastDays"] == 20 and report["chosenMethod"] == "pjm-high4of5"
    assert report["chosenAccuracy"] == report["methods"]["pjm-high4of5"]
    window = api.baseline_accuracy(topic="devices/site/meter/PowerKw", start="2026-07-31T18:00:00Z",
                                   end="2026-07-31T20:00:00Z", days=20, methods=["caiso-10in10", "ven-reported"])
    assert list(window["methods"]) == ["caiso-10in10"]
    assert window["methods"]["caiso-10in10"] == report["methods"]["caiso-10in10"]
    assert api.baseline_accuracy("ev-none")["code"] == "not_found"
    presets = api.baseline_presets()
    assert presets["caiso-10in10"]["adjustment"]["cap"] == 0.2 and presets["ieso-15of20"]["unverified"]


@pytest.mark.parametrize("kwargs, field", [
    ({"event_id": "a/b"}, "eventId"),
    ({"event_id": "ev-acc", "days": 0}, "days"),
    ({"event_id": "ev-acc", "days": 121}, "days"),
    ({"event_id": "ev-acc", "days": True}, "days"),
    ({"event_id": "ev-acc", "methods": ["guess"]}, "methods"),
    ({"event_id": "ev-acc", "methods": ["ven-reported"]}, "methods"),
    ({"event_id": "ev-acc", "start": "2026-07-31T18:00:00Z"}, "start"),
    ({"topic": "site/meter/PowerKw", "start": "2026-07-31T18:00:00Z"}, "end"),
    ({"start": "2026-07-31T18:00:00Z", "end": "2026-07-31T20:00:00Z"}, "topic"),
    ({"topic": "m", "start": "2026-07-31T18:00:00Z", "end": "2026-08-02T20:00:00Z"}, "end"),
    ({"topic": "m\x00", "start": "2026-07-31T18:00:00Z", "end": "2026-07-31T20:00:00Z"}, "topic"),
])
def test_rpc_arguments_are_named(api, kwargs, field):
    from dr_historian.schema import QueryError

    with pytest.raises(QueryError) as err:
        api.guarded("baseline_accuracy", lambda: api.baseline_accuracy(**kwargs))
    assert err.value.field == field
    assert api.snapshot()["rpcRejects"]["total"] >= 1


def test_every_preset_for_one_stored_meter_with_one_history_read(synthetic_store):
    from dr_historian.mv.performance import topic_methods

    options = MvOptions(methods=tuple(PRESETS), timezone="America/New_York", interval_minutes=60, overrides=COVARIATE)
    start = datetime(2026, 7, 30, 14, tzinfo=ZoneInfo("America/New_York"))
    report = topic_methods(synthetic_store, "site/meter/PowerKw", start, start + timedelta(hours=2), options)
    assert set(report["methods"]) == set(PRESETS)
    for name, m in report["methods"].items():
        assert "error" not in m, (name, m.get("error"))
        assert m["baselineKwh"] > 0 and len(m["intervals"]) == 2
    # the meter-type presets read after the event too (the history read covers their windows)
    assert report["methods"]["pjm-same-day"]["baseline"]["variant"] == \
        "180 min before (skipping 60 min), 120 min after (skipping 60 min)"


def test_rpc_overrides_change_a_preset_for_one_call(api):
    plain = api.baseline_accuracy("ev-acc", days=10, methods=["caiso-10in10"])
    uncapped = api.baseline_accuracy("ev-acc", days=10, methods=["caiso-10in10"],
                                     overrides={"caiso-10in10": {"adjustment": {"cap": None}}})
    assert plain["methods"]["caiso-10in10"] != uncapped["methods"]["caiso-10in10"]
    perf = api.baseline("site/meter/PowerKw", "2026-07-30T18:00:00Z", "2026-07-30T20:00:00Z", "caiso-10in10",
                        overrides={"caiso-10in10": {"weekday": {"keep": 5, "of": 5}}})
    assert len(perf["selectedDays"]) == 5


@pytest.mark.parametrize("overrides", [
    {"magic": {}}, {"caiso-10in10": {"adjustment": {"cap": "x"}}}, {"caiso-10in10": 3}, ["caiso-10in10"],
    {"caiso-10in10": {"lookbackDays": float("nan")}},
])
def test_rpc_bad_overrides_are_named(api, overrides):
    from dr_historian.schema import QueryError

    with pytest.raises(QueryError) as err:
        api.guarded("event_performance", lambda: api.event_performance("ev-acc", overrides=overrides))
    assert err.value.field == "overrides"


def test_outage_days_are_neither_backcast_nor_baseline_days():
    outages = {date(2026, 7, 14), date(2026, 7, 1)}
    report = backcast(flat_series(), [PRESETS["caiso-10in10"]], WINDOW, TZ, 3600, 30, (), HolidayCalendar(nerc=False),
                      outage_days=outages)
    assert report["backcastDays"] == 28 and report["lastDay"] == "2026-07-13"


def test_event_performance_answers_with_the_chosen_methods_accuracy(api):
    report = api.event_performance("ev-acc")
    accuracy = report["accuracy"]
    assert accuracy["chosenMethod"] == "pjm-high4of5" and accuracy["topic"] == "site/meter/PowerKw"
    assert accuracy["backcastDays"] == 30 and accuracy["daysAsked"] == 30
    ranked = api.baseline_accuracy("ev-acc", days=30, methods=["pjm-high4of5"])
    assert accuracy["relativeRmse"] == ranked["methods"]["pjm-high4of5"]["relativeRmse"]
    assert "accuracy" not in api.event_performance("ev-acc", accuracy_days=0)
    only_ven = api.event_performance("ev-acc", methods=["ven-reported"])
    assert only_ven["accuracy"] == {"chosenMethod": None, "error": "no meter-data method chosen"}
    from dr_historian.schema import QueryError

    with pytest.raises(QueryError) as err:
        api.guarded("event_performance", lambda: api.event_performance("ev-acc", accuracy_days=-1))
    assert err.value.field == "accuracy_days"


def test_rpc_random_arguments_are_answered_or_refused_by_name(api):
    import random

    from dr_historian.api import HistorianUnavailable
    from dr_historian.schema import QueryError

    rnd = random.Random(5)
    pool = [None, "", "ev-acc", "a/b", 0, -1, 1, 2, 121, True, 1.5, float("nan"), [], ["caiso-10in10"], ["x"],
            {"caiso-10in10": {"weekday": {"keep": 2}}}, {"x": 1}, "site/meter/PowerKw", "2026-07-31T18:00:00Z",
            "2026-07-31T19:00:00Z", "now -1h", "x" * 600, {"a": [1] * 5}]
    names = ("event_id", "topic", "start", "end", "days", "methods", "interval_minutes", "timezone", "overrides")
    answered = refused = 0
    for _ in range(150):
        kwargs = {n: rnd.choice(pool) for n in names if rnd.random() < 0.3}
        if rnd.random() < 0.5:  # a valid core with random extras
            kwargs.update(rnd.choice([{"event_id": "ev-acc"}, {"topic": "site/meter/PowerKw", "event_id": None,
                                                               "start": "2026-07-31T18:00:00Z",
                                                               "end": "2026-07-31T19:00:00Z"}]))
        kwargs["days"] = rnd.choice([1, 2, kwargs.get("days", 1)])
        try:
            result = api.guarded("baseline_accuracy", lambda kw=kwargs: api.baseline_accuracy(**kw))
        except QueryError as exc:
            assert exc.field in names + ("eventId", "overrides") or exc.field.startswith(("topic", "methods")), exc
            refused += 1
            continue
        except HistorianUnavailable as exc:  # pragma: no cover - would be a defect
            raise AssertionError(f"internal failure for {kwargs}: {exc}") from None
        assert isinstance(result, dict)
        answered += 1
    assert answered and refused and api.snapshot()["rpcFailures"] == 0


def test_site_preset_parameters_apply_to_every_call_and_a_call_overrides_them(synthetic_store):
    from dr_common.config import ConfigError
    from dr_historian.api import HistorianApi, parse_mv_presets
    from dr_historian.config import parse_config

    config = parse_config({"connection": {"url": "sqlite:///unused.sqlite"},
                           "mv": {"timezone": "America/New_York", "interval_minutes": 60}})
    site = parse_mv_presets({"caiso-10in10": {"weekday": {"keep": 4, "of": 4}, "adjustment": {"cap": 0.1}}})
    api = HistorianApi(lambda: synthetic_store, lambda: config, mv_presets=lambda: site)
    args = ("site/meter/PowerKw", "2026-07-30T18:00:00Z", "2026-07-30T20:00:00Z", "caiso-10in10")
    assert len(api.baseline(*args)["selectedDays"]) == 4
    both = api.baseline(*args, overrides={"caiso-10in10": {"weekday": {"keep": 3, "of": 3}}})
    assert len(both["selectedDays"]) == 3 and abs(both["adjustment"] - 1) <= 0.1 + 1e-9  # the site cap stays
    assert parse_mv_presets(None) == {}
    for bad in ({"magic": {}}, {"caiso-10in10": {"adjustment": {"cap": "s3cr3t-value"}}}, [1], {"caiso-10in10": 7}):
        with pytest.raises(ConfigError) as err:
            parse_mv_presets(bad)
        assert err.value.key == "mv_presets" and "s3cr3t-value" not in str(err.value)
