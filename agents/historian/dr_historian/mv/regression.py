"""Regression baselines from a maintained library, plugged into the engine (`engine.register_model`).

`opendsm-caltrack-dr`: OpenDSM's demand-response model (`opendsm.drmeter.CaltrackDRModel`, the CalTRACK hourly
model of eemeter 4, Apache-2.0), fitted on the hourly load of the look-back before the event day (event and
outage days left out) against an outdoor temperature topic (degrees Fahrenheit, CalTRACK's unit), and predicting
the event hours from their temperatures. The library does the regression; this module only shapes the data.

OpenDSM is pinned in platform-config/pins.txt (and is the historian's optional `caltrack` dependency); the preset
is offered everywhere, answering an error that names opendsm where it is not installed, and a site names its
temperature topic (`mv_presets: {"opendsm-caltrack-dr": {"covariateTopic": "site/weather/OutdoorTempF"}}`).
"""

from __future__ import annotations

import importlib.util
import math
from datetime import date, datetime, timedelta
from typing import Any

from dr_historian.mv.engine import KIND_REGRESSION, BaselineSpec, RegressionInput, register_model
from dr_historian.mv.series import MvError

OPENDSM_CALTRACK_DR = "opendsm-caltrack-dr"
HOUR = timedelta(hours=1)
MIN_FIT_DAYS = 14        # days with load and temperature the model needs (two of each hour of the week)
MIN_DAY_HOURS = 20       # hours with both a load and a temperature for a day to count
MIN_REPORT_HOURS = 3     # the library infers the hourly frequency of what it predicts from 3 hours at least


def opendsm_available() -> bool:
    """True when the opendsm package can be found (it is imported only when a baseline is computed)."""
    return importlib.util.find_spec("opendsm") is not None


def _hours(start: datetime, end: datetime) -> list[datetime]:
    first = start.replace(minute=0, second=0, microsecond=0)
    out = []
    while first < end:
        out.append(first)
        first += HOUR
    return out


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _fit_rows(inp: RegressionInput, covariate: Any) -> tuple[list[datetime], list[float | None], list[float | None]]:
    """The look-back's hours with their mean load (None on excluded days) and mean temperature; MvError naming
    the parameter when fewer than MIN_FIT_DAYS days have both."""
    hours = _hours(inp.fit.start, inp.fit.end)
    load = [None if h.astimezone(inp.tz).date() in inp.excluded_days else inp.series.mean(h, h + HOUR)
            for h in hours]
    temps = [covariate.mean(h, h + HOUR) for h in hours]
    per_day: dict[date, int] = {}
    for h, kw, temp in zip(hours, load, temps, strict=True):
        if kw is not None and temp is not None:
            day = h.astimezone(inp.tz).date()
            per_day[day] = per_day.get(day, 0) + 1
    days = sum(1 for n in per_day.values() if n >= MIN_DAY_HOURS)
    if days < MIN_FIT_DAYS:
        raise MvError(f"{OPENDSM_CALTRACK_DR}: {days} days with load and temperature in the look-back "
                      f"{inp.fit.start.date().isoformat()} .. {inp.fit.end.date().isoformat()}, needs at least "
                      f"{MIN_FIT_DAYS} (parameter lookbackDays, and the covariateTopic's history)")
    return hours, load, temps


def opendsm_caltrack_dr(inp: RegressionInput) -> list[float | None]:
    """The event intervals' baseline (kW) predicted by OpenDSM's CalTRACK demand-response model."""
    covariate = inp.covariate
    if covariate is None:
        raise MvError(f"{OPENDSM_CALTRACK_DR} needs an outdoor temperature topic (parameter covariateTopic)")
    try:
        import pandas as pd
        from opendsm import drmeter
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise MvError(f"{OPENDSM_CALTRACK_DR} needs opendsm, which cannot be imported here ({exc}); it is pinned in "
                      "platform-config/pins.txt") from None
    hours, load, temps = _fit_rows(inp, covariate)
    report_hours = _hours(inp.grid[0].start, inp.grid[-1].end)
    report_temps = [covariate.mean(h, h + HOUR) for h in report_hours]
    missing = [h for h, t in zip(report_hours, report_temps, strict=True) if t is None]
    if missing:
        raise MvError(f"{OPENDSM_CALTRACK_DR}: no temperature on covariateTopic for {len(missing)} of "
                      f"{len(report_hours)} event hours (first {missing[0].isoformat()})")
    while len(report_hours) < MIN_REPORT_HOURS:  # hours before the event, predicted and dropped
        report_hours.insert(0, report_hours[0] - HOUR)
        report_temps.insert(0, report_temps[0])
    zone = str(inp.tz)
    index = pd.DatetimeIndex(hours).tz_convert(zone)
    report_index = pd.DatetimeIndex(report_hours).tz_convert(zone)
    # one BLAS thread: the fit's SVDs are small, and threads fighting for a busy machine's cores made a fit
    # ten times slower (3.5 s instead of 0.4 s for 45 days on 2 cores)
    with threadpool_limits(limits=1):
        baseline = drmeter.CaltrackDRBaselineData.from_series(
            pd.Series([_nan(v) for v in load], index=index, name="observed"),
            pd.Series([_nan(v) for v in temps], index=index, name="temperature"), is_electricity_data=True)
        model: Any = drmeter.CaltrackDRModel().fit(baseline)
        reporting = drmeter.CaltrackDRReportingData.from_series(
            None, pd.Series(report_temps, index=report_index, name="temperature"), is_electricity_data=True)
        predicted = model.predict(reporting)["predicted"]
    by_hour = {ts.to_pydatetime().astimezone(inp.grid[0].start.tzinfo): float(v) for ts, v in predicted.items()}
    out: list[float | None] = []
    for window in inp.grid:
        value = by_hour.get(window.start.replace(minute=0, second=0, microsecond=0))
        out.append(None if value is None or math.isnan(value) else value)  # kWh in an hour = its mean kW
    return out


OPENDSM_SPEC = BaselineSpec(
    OPENDSM_CALTRACK_DR, kind=KIND_REGRESSION, model=OPENDSM_CALTRACK_DR,
    source="OpenDSM (formerly eemeter) 1.2.7 drmeter CaltrackDRModel: CalTRACK hourly regression on outdoor "
           "temperature (occupancy by hour of week, temperature bins), fitted on the look-back before the event day",
    unverified="needs opendsm, covariateTopic (outdoor temperature, deg F) and at least 14 days of load and "
               "temperature")

register_model(OPENDSM_CALTRACK_DR, opendsm_caltrack_dr)
