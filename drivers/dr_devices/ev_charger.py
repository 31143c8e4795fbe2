"""EV charger with a plugged-in vehicle: state of charge, charge power limit, departure and return."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .model import DeviceModel
from .params import require
from .points import PointSpec, Value

_EPS_KWH = 1e-9


@dataclass(frozen=True)
class EvChargerParams:
    rated_power_kw: float = 7.2
    capacity_kwh: float = 75.0
    soc_percent: float = 35.0
    target_soc_percent: float = 90.0
    departure_hours: float = 10.0
    plugged_in: bool = True
    charge_efficiency: float = 1.0
    power_limit_kw: float | None = None
    away_hours: float = 0.0
    arrival_soc_percent: float = 35.0
    arrival_soc_jitter_percent: float = 0.0
    dwell_hours: float = 10.0

    def __post_init__(self) -> None:
        require(self.rated_power_kw > 0, "ev_charger.rated_power_kw must be > 0")
        require(self.capacity_kwh > 0, "ev_charger.capacity_kwh must be > 0")
        require(0 <= self.soc_percent <= 100, "ev_charger.soc_percent must be in [0, 100]")
        require(0 <= self.target_soc_percent <= 100, "ev_charger.target_soc_percent must be in [0, 100]")
        require(self.departure_hours >= 0, "ev_charger.departure_hours must be >= 0")
        require(0 < self.charge_efficiency <= 1, "ev_charger.charge_efficiency must be in (0, 1]")
        require(self.power_limit_kw is None or 0 <= self.power_limit_kw <= self.rated_power_kw,
                "ev_charger.power_limit_kw must be in [0, rated_power_kw]")
        require(self.away_hours >= 0, "ev_charger.away_hours must be >= 0 (0: the vehicle does not return)")
        require(0 <= self.arrival_soc_percent <= 100, "ev_charger.arrival_soc_percent must be in [0, 100]")
        require(self.arrival_soc_jitter_percent >= 0, "ev_charger.arrival_soc_jitter_percent must be >= 0")
        require(self.dwell_hours > 0, "ev_charger.dwell_hours must be > 0")


class EvCharger(DeviceModel):
    """Charges the plugged-in vehicle at min(rated power, power limit) until the target SoC or departure.

    After departure the vehicle is away for `away_hours` (0: for good), then returns with about
    `arrival_soc_percent` (± a seeded jitter) and leaves again `dwell_hours` later.
    """

    kind = "ev_charger"

    def __init__(self, params: EvChargerParams, **clock: Any) -> None:
        super().__init__(**clock)
        self.p = params
        self.limit_kw = params.rated_power_kw if params.power_limit_kw is None else params.power_limit_kw
        self.plugged = params.plugged_in
        self.stored_kwh = params.capacity_kwh * params.soc_percent / 100.0
        self.departure_s = params.departure_hours * 3600.0 if params.plugged_in else 0.0
        self.away_s = math.inf if params.plugged_in else self._away_duration()
        rated = params.rated_power_kw
        self._define(PointSpec("PowerKw", "float", lambda: self.power_kw, units="kW"))
        self._define(PointSpec("PowerLimitKw", "float", lambda: self.limit_kw, self._set_limit, 0.0, rated, "kW"))
        self._define(PointSpec("RatedPowerKw", "float", lambda: rated, units="kW"))
        self._define(PointSpec("PluggedIn", "bool", lambda: self.plugged))
        self._define(PointSpec("SocPercent", "float", lambda: self.soc_percent, units="%"))
        self._define(PointSpec("CapacityKwh", "float", lambda: params.capacity_kwh, units="kWh"))
        self._define(PointSpec("EnergyNeededKwh", "float", lambda: self.energy_needed_kwh, units="kWh"))
        self._define(PointSpec("DepartureHours", "float", lambda: self.departure_s / 3600.0, units="h"))

    # -- state --------------------------------------------------------------------------------------------------
    @property
    def target_kwh(self) -> float:
        return self.p.capacity_kwh * self.p.target_soc_percent / 100.0

    @property
    def energy_needed_kwh(self) -> float:
        return max(0.0, self.target_kwh - self.stored_kwh) if self.plugged else 0.0

    @property
    def soc_percent(self) -> float:
        return 100.0 * self.stored_kwh / self.p.capacity_kwh if self.plugged else 0.0

    @property
    def power_kw(self) -> float:
        if self.plugged and self.departure_s > 0 and self.energy_needed_kwh > _EPS_KWH:
            return min(self.p.rated_power_kw, self.limit_kw)
        return 0.0

    def defaults(self) -> dict[str, Value]:
        return {"PowerLimitKw": self.p.rated_power_kw if self.p.power_limit_kw is None else self.p.power_limit_kw}

    def _set_limit(self, value: Value) -> None:
        self.limit_kw = float(value)

    def _away_duration(self) -> float:
        return self.p.away_hours * 3600.0 if self.p.away_hours > 0 else math.inf

    # -- physics ------------------------------------------------------------------------------------------------
    def _step(self, dt_s: float) -> None:
        remaining = dt_s
        while remaining > 0:
            if self.plugged:
                power = self.power_kw
                charge_kw = power * self.p.charge_efficiency
                to_full = self.energy_needed_kwh / charge_kw * 3600.0 if charge_kw > 0 else math.inf
                step = min(remaining, self.departure_s, to_full)
                if step == to_full:
                    self.stored_kwh = self.target_kwh
                else:
                    self.stored_kwh += charge_kw * step / 3600.0
                self.departure_s -= step
                remaining -= step
                if self.departure_s <= 0:
                    self._depart()
            else:
                if math.isinf(self.away_s):
                    return
                step = min(remaining, self.away_s)
                self.away_s -= step
                remaining -= step
                if self.away_s <= 0:
                    self._arrive()

    def _depart(self) -> None:
        self.plugged = False
        self.departure_s = 0.0
        self.away_s = self._away_duration()

    def _arrive(self) -> None:
        jitter = self.p.arrival_soc_jitter_percent
        soc = self.p.arrival_soc_percent + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
        self.stored_kwh = self.p.capacity_kwh * min(100.0, max(0.0, soc)) / 100.0
        self.plugged = True
        self.departure_s = self.p.dwell_hours * 3600.0
        self.away_s = math.inf
