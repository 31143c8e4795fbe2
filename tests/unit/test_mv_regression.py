"""The engine's regression kind: a maintained library's model plugged in with register_model gets the load of
the look-back (event days named), the covariate topic and the intervals to predict; the OpenDSM adapter is a
preset only where opendsm is installed."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from dr_historian.mv import regression
from dr_historian.mv.engine import KIND_REGRESSION, BaselineSpec, RegressionInput, compute_spec, register_model
from dr_historian.mv.performance import MvOptions, topic_methods
from dr_historian.mv.presets import PRESETS
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


def test_opendsm_preset_exists_exactly_where_opendsm_is_installed():
    assert (regression.OPENDSM_CALTRACK_DR in PRESETS) == regression.opendsm_available()
    inp = RegressionInput(regression.OPENDSM_SPEC, hourly({}), None, EVENT, EVENT, TZ, [EVENT], frozenset())
    with pytest.raises(MvError, match="covariateTopic"):
        regression.opendsm_caltrack_dr(inp)
