"""Stationary battery: state of charge, charge/discharge power setpoint, power and energy limits, reserve."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import DeviceModel
from .params import require
from .points import PointSpec, Value

_EPS_KWH = 1e-9


@dataclass(frozen=True)
class BatteryParams:
    capacity_kwh: float = 13.5
    max_power_kw: float = 5.0
    soc_percent: float = 80.0
    reserve_soc_percent: float = 20.0
    max_soc_percent: float = 100.0
    power_setpoint_kw: float = 0.0
    charge_efficiency: float = 1.0
    discharge_efficiency: float = 1.0

    def __post_init__(self) -> None:
        require(self.capacity_kwh > 0, "battery.capacity_kwh must be > 0")
        require(self.max_power_kw > 0, "battery.max_power_kw must be > 0")
        require(0 <= self.reserve_soc_percent < self.max_soc_percent <= 100,
                "battery: need 0 <= reserve_soc_percent < max_soc_percent <= 100")
        require(0 <= self.soc_percent <= 100, "battery.soc_percent must be in [0, 100]")
        require(abs(self.power_setpoint_kw) <= self.max_power_kw,
                "battery.power_setpoint_kw must be within ±max_power_kw")
        require(0 < self.charge_efficiency <= 1, "battery.charge_efficiency must be in (0, 1]")
        require(0 < self.discharge_efficiency <= 1, "battery.discharge_efficiency must be in (0, 1]")


class Battery(DeviceModel):
    """Power follows the setpoint (+ charge, - discharge) until the SoC reaches max_soc_percent when charging or
    reserve_soc_percent when discharging; then it stops. Stored energy changes by P x efficiency when charging and
    by P / efficiency when discharging, integrated exactly."""

    kind = "battery"

    def __init__(self, params: BatteryParams, **clock: Any) -> None:
        super().__init__(**clock)
        self.p = params
        self.setpoint_kw = params.power_setpoint_kw
        self.stored_kwh = params.capacity_kwh * params.soc_percent / 100.0
        limit = params.max_power_kw
        self._define(PointSpec("PowerKw", "float", lambda: self.power_kw, units="kW"))
        self._define(PointSpec("PowerSetpointKw", "float", lambda: self.setpoint_kw, self._set_setpoint, -limit, limit,
                               "kW"))
        self._define(PointSpec("SocPercent", "float", lambda: self.soc_percent, units="%"))
        self._define(PointSpec("ReserveSocPercent", "float", lambda: params.reserve_soc_percent, units="%"))
        self._define(PointSpec("MaxPowerKw", "float", lambda: limit, units="kW"))
        self._define(PointSpec("CapacityKwh", "float", lambda: params.capacity_kwh, units="kWh"))

    @property
    def reserve_kwh(self) -> float:
        return self.p.capacity_kwh * self.p.reserve_soc_percent / 100.0

    @property
    def full_kwh(self) -> float:
        return self.p.capacity_kwh * self.p.max_soc_percent / 100.0

    @property
    def soc_percent(self) -> float:
        return 100.0 * self.stored_kwh / self.p.capacity_kwh

    @property
    def power_kw(self) -> float:
        if self.setpoint_kw > 0 and self.stored_kwh < self.full_kwh - _EPS_KWH:
            return self.setpoint_kw
        if self.setpoint_kw < 0 and self.stored_kwh > self.reserve_kwh + _EPS_KWH:
            return self.setpoint_kw
        return 0.0

    def defaults(self) -> dict[str, Value]:
        return {"PowerSetpointKw": self.p.power_setpoint_kw}

    def _set_setpoint(self, value: Value) -> None:
        self.setpoint_kw = float(value)

    def _step(self, dt_s: float) -> None:
        power = self.power_kw
        if power > 0:
            rate = power * self.p.charge_efficiency  # kWh per hour into storage
            to_limit = (self.full_kwh - self.stored_kwh) / rate * 3600.0
            self.stored_kwh = self.full_kwh if dt_s >= to_limit else self.stored_kwh + rate * dt_s / 3600.0
        elif power < 0:
            rate = power / self.p.discharge_efficiency
            to_limit = (self.reserve_kwh - self.stored_kwh) / rate * 3600.0
            self.stored_kwh = self.reserve_kwh if dt_s >= to_limit else self.stored_kwh + rate * dt_s / 3600.0
