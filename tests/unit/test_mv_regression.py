"""The engine's regression kind: a maintained library's model plugged in with register_model gets the load of
the look-back (event days named), the covariate topic and the intervals to predict; the OpenDSM adapter is the
preset opendsm-caltrack-dr, fitted for real here (opendsm is pinned), and an error naming opendsm without it."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from dr_historian.mv import regression
from dr_historian.mv.engine import KIND_REGRESSION, BaselineSpec, RegressionInput, compute_spec, register_model
from dr_historian.mv.performance import MvOptions, topic_methods
from dr_historian.mv.presets import PRESETS, preset
from dr_historian.mv.series import LoadSeries, MvError, Window
from dr_historian.store import Point, Store
from zoneinfo import ZoneInfo

UTC = timezone.utc
TZ = ZoneInfo("UTC")
EVENT = Window(datetime(2026, 7, 15, 14, tzinfo=UTC), datetime(2026, 7, 15, 16, tzinfo=UTC))
SPEC = BaselineSpec("test-regression", kind=KIND_REGRESSION, model="test-model", covariate_topic="site/temp",
                    lookback_days=10)
SEEN: list[RegressionInput] = []


def same_hour_mean_times_temperature(inp: RegressionInput) -> list[float | None]:
    """A stand-in model: the fitted days' mean of each hour, times the event hour's covariate."""
    SEEN.append(inp)
    out = []
    for w in inp.grid:
        values = []
        day = inp.fit.start
        while day < inp.fit.end:
            if day.date() not in inp.excluded_days:
                shifted = w.start.replace(year=day.year, month=day.month, day=day.day)
                value = inp.series.mean(shifted, shifted + timedelta(hours=1))
                if value is not None:
                    values.append(value)
            day += timedelta(days=1)
        out.append(sum(values) / len(values) * inp.covariate.mean(w.start, w.end))
    return out


register_model("test-model", same_hour_mean_times_temperature)


def hourly(levels: dict[date, float]) -> LoadSeries:
    return LoadSeries.from_interval_means({datetime(d.year, d.month, d.day, h, tzinfo=UTC): v
                                          for d, v in levels.items() for h in range(24)}, 3600)


def test_a_registered_model_gets_the_lookback_without_event_days_and_the_covariate():
    levels = {date(2026, 7, 15) - timedelta(days=n): 10.0 for n in range(1, 12)}
    levels[date(2026, 7, 13)] = 100.0  # an event day: left out
    covariate = LoadSeries.from_interval_means({datetime(2026, 7, 15, h, tzinfo=UTC): 2.0 for h in (14, 15)}, 3600)
    SEEN.clear()
    result = compute_spec(SPEC, hourly(levels), EVENT, TZ, 3600, {date(2026, 7, 13)}, covariate=covariate)
    assert result.baseline_kw == [20.0, 20.0] and result.variant == "regression test-model"
    assert SEEN[0].fit == Window(datetime(2026, 7, 5, tzinfo=UTC), datetime(2026, 7, 15, tzinfo=UTC))
    assert result.excluded_days == {date(2026, 7, 13): "event day"}
    assert len(SEEN[0].grid) == 2


def test_an_unavailable_model_or_a_wrong_answer_is_an_mv_error():
    with pytest.raises(MvError, match="not available"):
        compute_spec(replace(SPEC, model="nobody"), hourly({}), EVENT, TZ, 3600)
    register_model("short", lambda inp: [1.0])
    with pytest.raises(MvError, match="1 of 2"):
        compute_spec(replace(SPEC, model="short"), hourly({}), EVENT, TZ, 3600)


def test_the_store_path_reads_whole_days_and_the_covariate_topic(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    store.setup()
    points = []
    for n in range(0, 12):
        day = date(2026, 7, 15) - timedelta(days=n)
        for h in range(24):
            ts = datetime(day.year, day.month, day.day, h, tzinfo=UTC)
            points += [Point("site/meter/PowerKw", ts, 4.0 if n else 1.0), Point("site/temp", ts, 3.0)]
    store.write(points)
    monkeypatch.setitem(PRESETS, SPEC.name, SPEC)
    report = topic_methods(store, "site/meter/PowerKw", EVENT.start, EVENT.end,
                           MvOptions(methods=(SPEC.name, "meter-before"), interval_minutes=60, lookback_days=10))
    method = report["methods"][SPEC.name]
    assert "error" not in method and method["baselineKwh"] == pytest.approx(2 * 12.0)  # 4 kW x 3 x 2 h
    store.dispose()


def test_opendsm_preset_is_offered_and_without_opendsm_answers_an_error_naming_it(monkeypatch):
    assert regression.OPENDSM_CALTRACK_DR in PRESETS
    inp = RegressionInput(regression.OPENDSM_SPEC, hourly({}), None, EVENT, EVENT, TZ, [EVENT], frozenset())
    with pytest.raises(MvError, match="covariateTopic"):
        regression.opendsm_caltrack_dr(inp)
    monkeypatch.setitem(sys.modules, "opendsm", None)  # as where it is not installed: importing it fails
    with pytest.raises(MvError, match="needs opendsm, which cannot be imported"):
        compute_spec(replace(regression.OPENDSM_SPEC, covariate_topic="t"), hourly({}), EVENT, TZ, 3600,
                     covariate=hourly({}))


# --- OpenDSM's model for real (opendsm is pinned in platform-config/pins.txt) ----------------------------------
NY = ZoneInfo("America/New_York")
OPENDSM = regression.OPENDSM_CALTRACK_DR


@pytest.fixture(scope="module")
def synthetic_home():
    """62 days of 15-minute synthetic residential load and the outdoor temperature (deg F) that drove it."""
    from dr_tools.synth import MeterProfile, readings

    end = datetime(2026, 8, 1, tzinfo=NY)
    rows = list(readings(end - timedelta(days=62), end, 900, MeterProfile(), NY, seed=11))
    return {ts: kw for ts, kw, _ in rows}, {ts: temp for ts, _, temp in rows}


def test_opendsm_is_installed_and_its_preset_is_offered():
    assert regression.opendsm_available(), "opendsm is pinned in platform-config/pins.txt: run scripts/bootstrap"
    assert PRESETS[OPENDSM].kind == KIND_REGRESSION and PRESETS[OPENDSM].model == OPENDSM


def test_opendsm_predicts_an_event_within_10_percent_of_the_synthetic_truth(synthetic_home, figure):
    load, temps = synthetic_home
    temperature = LoadSeries.from_interval_means(temps, 900)
    event = Window(datetime(2026, 7, 30, 14, tzinfo=NY), datetime(2026, 7, 30, 18, tzinfo=NY))
    spoiled_day = date(2026, 7, 20)  # a DR event day in the look-back, recorded at 50 times the load
    spoiled = {ts: kw * 50 if ts.astimezone(NY).date() == spoiled_day else kw for ts, kw in load.items()}
    series = LoadSeries.from_interval_means(spoiled, 900)
    truth_series = LoadSeries.from_interval_means(load, 900)  # the event window's load: nobody shed it
    spec = preset(OPENDSM, {"covariateTopic": "demo/weather/OutdoorTempF"})
    result = compute_spec(spec, series, event, NY, 3600, {spoiled_day}, lookback_days=60, covariate=temperature)
    truth = truth_series.means(result.grid)
    assert len(result.grid) == 4 and all(b is not None and b > 0 for b in result.baseline_kw)
    assert sum(result.baseline_kw) == pytest.approx(sum(truth), rel=0.10)
    assert result.excluded_days == {spoiled_day: "event day"} and result.variant == f"regression {OPENDSM}"
    # 15-minute intervals get their hour's prediction; the event day's own readings are not what it predicts from
    quarter = compute_spec(spec, series, event, NY, 900, {spoiled_day}, lookback_days=60, covariate=temperature)
    assert quarter.baseline_kw[:4] == [result.baseline_kw[0]] * 4 and len(quarter.grid) == 16
    # the same day not named as an event day spoils the fit: the exclusion is what keeps it honest
    fooled = compute_spec(spec, series, event, NY, 3600, (), lookback_days=60, covariate=temperature)
    assert abs(sum(fooled.baseline_kw) - sum(truth)) > 0.10 * sum(truth)
    figure("opendsm-caltrack-dr, 60 days of 15-minute synthetic residential data, event 14:00-18:00 New York",
           f"baseline {sum(result.baseline_kw):.2f} kWh vs synthetic truth {sum(truth):.2f} kWh "
           f"({100 * (sum(result.baseline_kw) / sum(truth) - 1):+.1f} %); with the event day in the look-back not "
           f"named: {100 * (sum(fooled.baseline_kw) / sum(truth) - 1):+.1f} %")


def test_opendsm_short_event_and_hotter_hours(synthetic_home):
    load, temps = synthetic_home
    temperature = LoadSeries.from_interval_means(temps, 900)
    series = LoadSeries.from_interval_means(load, 900)
    spec = preset(OPENDSM, {"covariateTopic": "t"})
    one_hour = Window(datetime(2026, 7, 31, 15, tzinfo=NY), datetime(2026, 7, 31, 16, tzinfo=NY))
    result = compute_spec(spec, series, one_hour, NY, 3600, covariate=temperature, lookback_days=45)
    assert result.baseline_kw[0] == pytest.approx(series.mean(one_hour.start, one_hour.end), rel=0.15)
    hot = {ts: 110.0 for ts in (one_hour.start, one_hour.start + timedelta(minutes=30))}
    mild = {ts: 60.0 for ts in hot}
    hotter = compute_spec(spec, series, one_hour, NY, 3600, lookback_days=45,
                          covariate=LoadSeries.from_interval_means({**temps, **hot}, 900))
    milder = compute_spec(spec, series, one_hour, NY, 3600, lookback_days=45,
                          covariate=LoadSeries.from_interval_means({**temps, **mild}, 900))
    assert hotter.baseline_kw[0] > result.baseline_kw[0] > milder.baseline_kw[0]  # cooling load follows the weather


def test_opendsm_errors_name_the_parameter(synthetic_home):
    load, temps = synthetic_home
    temperature = LoadSeries.from_interval_means(temps, 900)
    series = LoadSeries.from_interval_means(load, 900)
    event = Window(datetime(2026, 7, 30, 14, tzinfo=NY), datetime(2026, 7, 30, 16, tzinfo=NY))
    with pytest.raises(MvError, match="covariateTopic"):
        compute_spec(PRESETS[OPENDSM], series, event, NY, 3600, covariate=None)
    spec = preset(OPENDSM, {"covariateTopic": "t", "lookbackDays": 10})
    with pytest.raises(MvError, match=r"10 days .* at least 14 \(parameter lookbackDays"):
        compute_spec(spec, series, event, NY, 3600, covariate=temperature)
    events = {event.start.date() - timedelta(days=n) for n in range(1, 40)}  # event days leave 6 days to fit
    with pytest.raises(MvError, match="lookbackDays"):
        compute_spec(preset(OPENDSM, {"covariateTopic": "t"}), series, event, NY, 3600, events,
                     lookback_days=45, covariate=temperature)
    late = Window(datetime(2026, 8, 2, 14, tzinfo=NY), datetime(2026, 8, 2, 16, tzinfo=NY))  # no temperature yet
    with pytest.raises(MvError, match="no temperature on covariateTopic for 2 of 2 event hours"):
        compute_spec(preset(OPENDSM, {"covariateTopic": "t"}), series, late, NY, 3600, lookback_days=45,
                     covariate=temperature)


def test_shipped_sites_name_the_temperature_the_generator_writes():
    import importlib.util
    import json
    from pathlib import Path

    from dr_historian.api import parse_mv_presets

    root = Path(__file__).resolve().parents[2]
    module_spec = importlib.util.spec_from_file_location("gen_meter_history", root / "scripts/gen_meter_history.py")
    gen = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(gen)
    for site in ("demo", "home", "office"):
        config = json.loads((root / f"platform-config/sites/{site}/historian.json").read_text())
        topic = parse_mv_presets(config["mv_presets"])[OPENDSM]["covariateTopic"]
        assert topic == gen.temperature_topic(config["mv"]["meter_topics"][0]), site
