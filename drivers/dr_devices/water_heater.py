"""Electric tank water heater: stratification-free tank, standby loss, random hot-water draws, thermostat."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .model import DeviceModel
from .params import require
from .points import PointSpec, Value

WATER_J_PER_LITER_K = 4186.0
SETPOINT_RANGE_C = (30.0, 75.0)


@dataclass(frozen=True)
class WaterHeaterParams:
    rated_power_kw: float = 4.5
    tank_liters: float = 190.0
    setpoint_c: float = 55.0
    deadband_c: float = 5.0
    tank_temp_c: float | None = None
    ambient_c: float = 20.0
    inlet_temp_c: float = 12.0
    ua_w_per_k: float = 2.0
    draws_per_hour: float = 0.0
    draw_liters: float = 20.0
    element_enable: bool = True

    def __post_init__(self) -> None:
        lo, hi = SETPOINT_RANGE_C
        require(self.rated_power_kw > 0, "water_heater.rated_power_kw must be > 0")
        require(self.tank_liters > 0, "water_heater.tank_liters must be > 0")
        require(lo <= self.setpoint_c <= hi, f"water_heater.setpoint_c must be in [{lo:g}, {hi:g}]")
        require(0 < self.deadband_c < self.setpoint_c - self.ambient_c,
                "water_heater.deadband_c must be > 0 and keep the lower threshold above ambient_c")
        require(self.tank_temp_c is None or 0 < self.tank_temp_c < 100, "water_heater.tank_temp_c must be in (0, 100)")
        require(self.ua_w_per_k > 0, "water_heater.ua_w_per_k must be > 0")
        require(self.inlet_temp_c < self.setpoint_c, "water_heater.inlet_temp_c must be below setpoint_c")
        require(self.draws_per_hour >= 0, "water_heater.draws_per_hour must be >= 0")
        require(0 < self.draw_liters <= self.tank_liters, "water_heater.draw_liters must be in (0, tank_liters]")


class WaterHeater(DeviceModel):
    """Tank temperature T follows C dT/dt = P - UA (T - T_ambient), solved exactly between events.

    Events are thermostat switches (on at setpoint - deadband, off at setpoint) and hot-water draws (a seeded
    Poisson process; each draw replaces 0.5-1.5 x draw_liters of tank water with inlet water).
    """

    kind = "water_heater"

    def __init__(self, params: WaterHeaterParams, **clock: Any) -> None:
        super().__init__(**clock)
        self.p = params
        self.capacity_j_per_k = params.tank_liters * WATER_J_PER_LITER_K
        self.tau_s = self.capacity_j_per_k / params.ua_w_per_k
        self.setpoint_c = params.setpoint_c
        self.enabled = params.element_enable
        self.temp_c = params.setpoint_c - params.deadband_c / 2 if params.tank_temp_c is None else params.tank_temp_c
        self.heating = self.temp_c <= self.setpoint_c - params.deadband_c
        self.next_draw_s = self._draw_interval()
        lo, hi = SETPOINT_RANGE_C
        self._define(PointSpec("PowerKw", "float", lambda: self.power_kw, units="kW"))
        self._define(PointSpec("TankTempC", "float", lambda: self.temp_c, units="degC"))
        self._define(PointSpec("SetpointC", "float", lambda: self.setpoint_c, self._set_setpoint, lo, hi, "degC"))
        self._define(PointSpec("DeadbandC", "float", lambda: params.deadband_c, units="degC"))
        self._define(PointSpec("ElementEnable", "bool", lambda: self.enabled, self._set_enable))
        self._define(PointSpec("RatedPowerKw", "float", lambda: params.rated_power_kw, units="kW"))

    @property
    def power_kw(self) -> float:
        return self.p.rated_power_kw if (self.enabled and self.heating) else 0.0

    def defaults(self) -> dict[str, Value]:
        return {"SetpointC": self.p.setpoint_c, "ElementEnable": self.p.element_enable}

    def _set_setpoint(self, value: Value) -> None:
        self.setpoint_c = float(value)
        self._thermostat()

    def _set_enable(self, value: Value) -> None:
        self.enabled = bool(value)

    def _thermostat(self) -> None:
        if self.temp_c >= self.setpoint_c:
            self.heating = False
        elif self.temp_c <= self.setpoint_c - self.p.deadband_c:
            self.heating = True

    def _draw_interval(self) -> float:
        rate_per_s = self.p.draws_per_hour / 3600.0
        return self.rng.expovariate(rate_per_s) if rate_per_s > 0 else math.inf

    def _draw(self) -> None:
        liters = min(self.p.tank_liters, self.p.draw_liters * self.rng.uniform(0.5, 1.5))
        keep = self.p.tank_liters - liters
        self.temp_c = (self.temp_c * keep + self.p.inlet_temp_c * liters) / self.p.tank_liters
        self._thermostat()

    def _time_to(self, threshold: float, equilibrium: float) -> float:
        """Seconds until T reaches threshold while relaxing toward equilibrium (inf if it never does)."""
        start = self.temp_c - equilibrium
        end = threshold - equilibrium
        if start == 0 or end == 0 or (start > 0) != (end > 0) or abs(end) >= abs(start):
            return 0.0 if threshold == self.temp_c else math.inf
        return self.tau_s * math.log(start / end)

    def _step(self, dt_s: float) -> None:
        remaining = dt_s
        while remaining > 0:
            self._thermostat()
            equilibrium = self.p.ambient_c + self.power_kw * 1000.0 / self.p.ua_w_per_k
            if self.heating and self.enabled:
                threshold = self.setpoint_c
            elif not self.heating:
                threshold = self.setpoint_c - self.p.deadband_c
            else:
                threshold = math.nan  # calling for heat with the element disabled: no thermostat event
            to_switch = math.inf if math.isnan(threshold) else self._time_to(threshold, equilibrium)
            step = min(remaining, to_switch, self.next_draw_s)
            if step == to_switch:
                self.temp_c = threshold
                self.heating = not self.heating
            else:
                self.temp_c = equilibrium + (self.temp_c - equilibrium) * math.exp(-step / self.tau_s)
            remaining -= step
            self.next_draw_s -= step
            if self.next_draw_s <= 0:
                self._draw()
                self.next_draw_s = self._draw_interval()
