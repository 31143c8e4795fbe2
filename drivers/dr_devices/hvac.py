"""Single-zone cooling: a resistance-capacitance zone driven by an outdoor profile, variable-speed compressor."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .model import DeviceModel
from .params import require
from .points import PointSpec, Value

SETPOINT_RANGE_C = (16.0, 32.0)


@dataclass(frozen=True)
class HvacParams:
    rated_power_kw: float = 3.5
    cop: float = 3.0
    r_k_per_kw: float = 2.5
    c_kwh_per_k: float = 2.5
    internal_gain_kw: float = 0.6
    cooling_setpoint_c: float = 24.0
    proportional_band_c: float = 1.5
    zone_temp_c: float | None = None
    outdoor_mean_c: float = 29.0
    outdoor_amplitude_c: float = 7.0
    outdoor_peak_hour: float = 15.0

    def __post_init__(self) -> None:
        lo, hi = SETPOINT_RANGE_C
        require(self.rated_power_kw > 0, "hvac.rated_power_kw must be > 0")
        require(self.cop > 0, "hvac.cop must be > 0")
        require(self.r_k_per_kw > 0, "hvac.r_k_per_kw must be > 0")
        require(self.c_kwh_per_k > 0, "hvac.c_kwh_per_k must be > 0")
        require(lo <= self.cooling_setpoint_c <= hi, f"hvac.cooling_setpoint_c must be in [{lo:g}, {hi:g}]")
        require(self.proportional_band_c > 0, "hvac.proportional_band_c must be > 0")
        require(self.outdoor_amplitude_c >= 0, "hvac.outdoor_amplitude_c must be >= 0")
        require(0 <= self.outdoor_peak_hour < 24, "hvac.outdoor_peak_hour must be in [0, 24)")


def outdoor_temp_c(params: HvacParams, hour_of_day: float) -> float:
    """Daily sinusoid: outdoor_mean_c ± outdoor_amplitude_c, warmest at outdoor_peak_hour."""
    phase = 2 * math.pi * (hour_of_day - params.outdoor_peak_hour) / 24.0
    return params.outdoor_mean_c + params.outdoor_amplitude_c * math.cos(phase)


class Hvac(DeviceModel):
    """Zone temperature T: C dT/dt = (T_out - T) / R + gains - Q_cool.

    The compressor modulates: Q_cool = Q_max * clamp((T - (setpoint - band/2)) / band, 0, 1) with
    Q_max = rated_power_kw * cop; electrical power = Q_cool / cop. Each step of at most a minute is solved exactly
    with the outdoor temperature and the controller's regime held at their values at the start of the step.
    """

    kind = "hvac"
    max_step_s = 60.0

    def __init__(self, params: HvacParams, **clock: Any) -> None:
        super().__init__(**clock)
        self.p = params
        self.setpoint_c = params.cooling_setpoint_c
        self.zone_c = params.cooling_setpoint_c if params.zone_temp_c is None else params.zone_temp_c
        self.q_max_kw = params.rated_power_kw * params.cop
        lo, hi = SETPOINT_RANGE_C
        self._define(PointSpec("PowerKw", "float", lambda: self.power_kw, units="kW"))
        self._define(PointSpec("ZoneTempC", "float", lambda: self.zone_c, units="degC"))
        self._define(PointSpec("CoolingSetpointC", "float", lambda: self.setpoint_c, self._set_setpoint, lo, hi,
                               "degC"))
        self._define(PointSpec("OutdoorTempC", "float", lambda: self.outdoor_c, units="degC"))
        self._define(PointSpec("RatedPowerKw", "float", lambda: params.rated_power_kw, units="kW"))

    @property
    def outdoor_c(self) -> float:
        return outdoor_temp_c(self.p, self.hour_of_day)

    @property
    def band_low_c(self) -> float:
        return self.setpoint_c - self.p.proportional_band_c / 2

    def cooling_fraction(self, zone_c: float) -> float:
        return min(1.0, max(0.0, (zone_c - self.band_low_c) / self.p.proportional_band_c))

    @property
    def cooling_kw(self) -> float:
        return self.q_max_kw * self.cooling_fraction(self.zone_c)

    @property
    def power_kw(self) -> float:
        return self.cooling_kw / self.p.cop

    def defaults(self) -> dict[str, Value]:
        return {"CoolingSetpointC": self.p.cooling_setpoint_c}

    def _set_setpoint(self, value: Value) -> None:
        self.setpoint_c = float(value)

    def _step(self, dt_s: float) -> None:
        # dT/dt = a - b T (per hour), with a and b chosen by the controller's regime at the start of the step
        r, c = self.p.r_k_per_kw, self.p.c_kwh_per_k
        drive = self.outdoor_c / r + self.p.internal_gain_kw
        fraction = self.cooling_fraction(self.zone_c)
        if 0.0 < fraction < 1.0:
            gain = self.q_max_kw / self.p.proportional_band_c
            a = (drive + gain * self.band_low_c) / c
            b = (1.0 / r + gain) / c
        else:
            a = (drive - self.q_max_kw * fraction) / c
            b = 1.0 / (r * c)
        steady = a / b
        self.zone_c = steady + (self.zone_c - steady) * math.exp(-b * dt_s / 3600.0)
