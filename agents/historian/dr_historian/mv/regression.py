"""Regression baselines from a maintained library, plugged into the engine (`engine.register_model`).

`opendsm-caltrack-dr`: OpenDSM's demand-response model (`opendsm.drmeter.CaltrackDRModel`, the CalTRACK hourly
model of eemeter 4, Apache-2.0), fitted on the hourly load of the look-back before the event day (event and
outage days left out) against an outdoor temperature topic (degrees Fahrenheit, CalTRACK's unit), and predicting
the event hours. The library does the regression; this module only shapes the data.

OpenDSM is not part of the pinned stack (see the historian README, "Regression baselines"): the preset exists
only where `opendsm` is importable, and a site must name its temperature topic
(`overrides: {"opendsm-caltrack-dr": {"covariateTopic": "site/weather/OutdoorTempF"}}`).
"""

from __future__ import annotations

import importlib.util
import math
from datetime import datetime, timedelta
from typing import Any

from dr_historian.mv.engine import KIND_REGRESSION, BaselineSpec, RegressionInput, register_model
from dr_historian.mv.series import MvError

OPENDSM_CALTRACK_DR = "opendsm-caltrack-dr"
HOUR = timedelta(hours=1)


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


def opendsm_caltrack_dr(inp: RegressionInput) -> list[float | None]:
    """The event intervals' baseline (kW) predicted by OpenDSM's CalTRACK demand-response model."""
    if inp.covariate is None:
        raise MvError(f"{OPENDSM_CALTRACK_DR} needs an outdoor temperature topic (parameter covariateTopic)")
    try:
        import pandas as pd
        from opendsm import drmeter
    except ImportError as exc:
        raise MvError(f"opendsm cannot be imported: {exc}") from None
    fit_hours = _hours(inp.fit.start, inp.fit.end)
    load = [None if h.astimezone(inp.tz).date() in inp.excluded_days else inp.series.mean(h, h + HOUR)
            for h in fit_hours]
    temps = [inp.covariate.mean(h, h + HOUR) for h in fit_hours]
    zone = str(inp.tz)
    index = pd.DatetimeIndex(fit_hours).tz_convert(zone)
    baseline = drmeter.CaltrackDRBaselineData.from_series(
        pd.Series([_nan(v) for v in load], index=index, name="observed"),
        pd.Series([_nan(v) for v in temps], index=index, name="temperature"), is_electricity_data=True)
    model: Any = drmeter.CaltrackDRModel().fit(baseline)
    report_hours = _hours(inp.grid[0].start, inp.grid[-1].end)
    report_temps = [inp.covariate.mean(h, h + HOUR) for h in report_hours]
    if any(t is None for t in report_temps):
        raise MvError(f"{OPENDSM_CALTRACK_DR}: no temperature for every event hour")
    report_index = pd.DatetimeIndex(report_hours).tz_convert(zone)
    observed = [_nan(inp.series.mean(h, h + HOUR)) for h in report_hours]  # the library wants a metered column
    reporting = drmeter.CaltrackDRReportingData.from_series(
        pd.Series(observed, index=report_index, name="observed"),
        pd.Series(report_temps, index=report_index, name="temperature"), is_electricity_data=True)
    predicted = model.predict(reporting)["predicted"]
    by_hour = {ts.to_pydatetime().astimezone(inp.grid[0].start.tzinfo): float(v) for ts, v in predicted.items()}
    out: list[float | None] = []
    for window in inp.grid:
        value = by_hour.get(window.start.replace(minute=0, second=0, microsecond=0))
        out.append(None if value is None or math.isnan(value) else value)  # kWh in an hour = its mean kW
    return out


OPENDSM_SPEC = BaselineSpec(
    OPENDSM_CALTRACK_DR, kind=KIND_REGRESSION, model=OPENDSM_CALTRACK_DR,
    source="OpenDSM (formerly eemeter) 1.2 drmeter CaltrackDRModel: CalTRACK hourly regression on temperature, "
           "fitted on the look-back before the event day",
    unverified="needs covariateTopic (outdoor temperature, deg F); not in the pinned stack")

if opendsm_available():
    register_model(OPENDSM_CALTRACK_DR, opendsm_caltrack_dr)
