"""What each kind of load can shed right now, under its constraints, and which point writes shed it.

A model reads a device's latest point values (the platform driver's `devices/<path>/all` publish) and the VEN's
current action on it, and returns a LoadView: measured power, the power it would draw without our action
(`free_kw`), the most it may shed now (`capacity_kw`) and, when a constraint forbids shedding at all, why
(`blocked`). `command(shed_kw, ...)` turns an allocation into point values to write.

Kinds and their shed actions:
- ev_charger (continuous): lower `PowerLimitKw`; keeps enough power to deliver `EnergyNeededKwh` by departure
  (charging at rated power after the event), plus `energyMarginPercent`.
- water_heater (all-or-nothing): `ElementEnable` off; blocked at or below `minTankTempC`.
- hvac (continuous): raise `CoolingSetpointC` by up to `maxOffsetC`, never above `maxZoneTempC`; the expected
  reduction is `kwPerDegC` per degree (the closed loop corrects the estimate); blocked when the zone is more than
  `zoneReleaseMarginC` above `maxZoneTempC`.
- circuit (all-or-nothing): `<Circuit>Enable` off; never when the config or the device marks it critical.
- battery (continuous): lower `PowerSetpointKw` (less charge, then discharge up to `MaxPowerKw`); never plans
  to discharge below the reserve state of charge (the larger of the config's and the device's) by the event end.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dr_ven_load_control.config import KIND_BATTERY, KIND_CIRCUIT, KIND_EV, KIND_HVAC, KIND_WATER_HEATER, LoadConfig

EPS_KW = 1e-6
MAX_WRITTEN_VALUES = 8  # values remembered per point of one action (the most recent distinct ones)


@dataclass
class Action:
    """The VEN's current shed of one load; persisted so that a restarted agent can restore it."""

    load_id: str
    path: str
    shed_kw: float
    free_kw: float
    commanded: dict[str, Any]
    originals: dict[str, Any]
    since: float
    restoring: bool = False
    retry_at: float | None = None
    failures: int = 0
    uncertain: dict[str, Any] = field(default_factory=dict)  # point -> value of a write possibly applied late
    written: dict[str, list[Any]] = field(default_factory=dict)  # point -> values written (or possibly) to it

    def remember(self, point: str, value: Any) -> None:
        """A value this action wrote, or possibly wrote, to `point` (the most recent distinct ones are kept)."""
        values = [v for v in self.written.get(point, []) if v != value]
        self.written[point] = (values + [value])[-MAX_WRITTEN_VALUES:]

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        return {"loadId": self.load_id, "path": self.path, "shedKw": self.shed_kw, "freeKw": self.free_kw,
                "commanded": dict(self.commanded), "originals": dict(self.originals), "since": self.since,
                "restoring": self.restoring, "possiblyWritten": dict(self.uncertain),
                "writtenValues": {point: list(values) for point, values in self.written.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        """Back from `to_dict`; raises KeyError, TypeError or ValueError."""
        return cls(load_id=str(data["loadId"]), path=str(data["path"]), shed_kw=float(data["shedKw"]),
                   free_kw=float(data["freeKw"]), commanded=dict(data.get("commanded") or {}),
                   originals=dict(data.get("originals") or {}), since=float(data.get("since", 0.0)),
                   restoring=bool(data.get("restoring", False)),
                   uncertain=dict(data.get("possiblyWritten") or {}),
                   written={str(point): list(values)[-MAX_WRITTEN_VALUES:]
                            for point, values in (data.get("writtenValues") or {}).items()})


@dataclass
class LoadView:
    """What one load can shed now, under its constraint (the planner's and the report's input)."""

    load_id: str
    kind: str
    priority: int
    continuous: bool
    known: bool
    power_kw: float | None
    free_kw: float
    capacity_kw: float
    blocked: str | None = None
    critical: bool = False
    step_kw: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def as_float(values: Mapping[str, Any] | None, point: str) -> float | None:
    """A point's value as a finite float, or None (missing, not a number, out of float range)."""
    if values is None:
        return None
    value = values.get(point)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        return float(value) if -1e308 <= value <= 1e308 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def as_bool(values: Mapping[str, Any] | None, point: str) -> bool | None:
    """A point's value as a bool, or None (missing or not a boolean)."""
    if values is None:
        return None
    value = values.get(point)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "on", "yes", "1"):
            return True
        if text in ("false", "off", "no", "0"):
            return False
    return None


class LoadModel(ABC):
    """How one kind of load is read and shed."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg

    @property
    def load_id(self) -> str:
        """The load id (its configured name)."""
        return self.cfg.name

    @property
    @abstractmethod
    def shed_points(self) -> tuple[str, ...]:
        """The writable points this load's actions write (and restores put back)."""

    @abstractmethod
    def view(self, values: Mapping[str, Any] | None, action: Action | None, hours_left: float) -> LoadView:
        """What the load can shed now; `hours_left` is the time to the end of the event (energy constraints)."""

    @abstractmethod
    def command(self, shed_kw: float, view: LoadView, action: Action | None,
                values: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
        """Point values that shed about `shed_kw` (> 0), and the reduction they are expected to give."""

    def effective_shed(self, action: Action, view: LoadView) -> float:
        """What the action takes off the site now: an all-or-nothing load gives what it would draw; a continuous
        one at most that (a finished EV gives nothing, whatever its limit)."""
        if not view.continuous:
            return view.free_kw
        return max(0.0, min(action.shed_kw, view.free_kw))

    def idle(self, view: LoadView) -> bool:
        """True when the load would draw nothing anyway, so its action can go without changing the site."""
        return view.known and view.continuous and view.free_kw <= EPS_KW

    @property
    def power_point(self) -> str:
        """The point of the load's power."""
        return self._point("power")

    def _point(self, role: str) -> str:
        return self.cfg.points[role]

    def _view(self, known: bool, power: float | None, free: float, capacity: float, blocked: str | None = None,
              critical: bool = False, **detail: Any) -> LoadView:
        return LoadView(load_id=self.cfg.name, kind=self.cfg.kind, priority=self.cfg.priority,
                        continuous=self.cfg.continuous, known=known, power_kw=power, free_kw=max(0.0, free),
                        capacity_kw=0.0 if blocked else max(0.0, capacity), blocked=blocked, critical=critical,
                        detail={k: v for k, v in detail.items() if v is not None})

    def unknown(self, action: Action | None) -> LoadView:
        """The view of a load not read yet."""
        free = action.free_kw if action else 0.0
        return self._view(False, None, free, 0.0)


class EvChargerModel(LoadModel):
    """EV charger: lower PowerLimitKw, keep the energy needed by departure."""

    @property
    def shed_points(self) -> tuple[str, ...]:
        """The writable points this load's actions write (and restores put back)."""
        return (self._point("limit"),)

    def min_power_kw(self, needed_kwh: float | None, departure_h: float | None, rated_kw: float,
                     hours_left: float) -> float:
        """Lowest average power during the rest of the event that still delivers the energy by departure,
        assuming the charger runs at rated power from the event end to departure."""
        if needed_kwh is None or needed_kwh <= 0:
            return 0.0
        needed = needed_kwh * (1.0 + self.cfg.energy_margin_percent / 100.0)
        if departure_h is None:
            return 0.0
        if departure_h <= 1e-6:
            return rated_kw
        event_h = max(hours_left, 1e-6)
        if departure_h <= event_h:
            return min(rated_kw, needed / departure_h)
        after_event_kwh = rated_kw * (departure_h - event_h)
        return min(rated_kw, max(0.0, needed - after_event_kwh) / event_h)

    def view(self, values: Mapping[str, Any] | None, action: Action | None, hours_left: float) -> LoadView:
        """What the load can shed now."""
        power = as_float(values, self._point("power"))
        if power is None:
            return self.unknown(action)
        plugged = as_bool(values, self._point("plugged"))
        needed = as_float(values, self._point("needed"))
        departure = as_float(values, self._point("departure"))
        rated = as_float(values, self._point("rated")) or max(power, action.free_kw if action else 0.0)
        if plugged is False or (needed is not None and needed <= 1e-3):
            return self._view(True, power, 0.0, 0.0, pluggedIn=plugged, energyNeededKwh=needed)
        free = power if action is None else max(action.free_kw, power)
        min_kw = min(free, self.min_power_kw(needed, departure, rated, hours_left))
        return self._view(True, power, free, free - min_kw, minKw=round(min_kw, 3), energyNeededKwh=needed,
                          departureHours=departure)

    def command(self, shed_kw: float, view: LoadView, action: Action | None,
                values: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
        """Point values that shed about `shed_kw`, and the reduction expected."""
        rated = as_float(values, self._point("rated")) or view.free_kw
        limit = min(rated, max(0.0, round(view.free_kw - shed_kw, 2)))
        return max(0.0, view.free_kw - limit), {self._point("limit"): limit}


class WaterHeaterModel(LoadModel):
    """Water heater: element off while the tank stays above minTankTempC."""

    @property
    def shed_points(self) -> tuple[str, ...]:
        """The writable points this load's actions write (and restores put back)."""
        return (self._point("enable"),)

    def view(self, values: Mapping[str, Any] | None, action: Action | None, hours_left: float) -> LoadView:
        """What the load can shed now."""
        power = as_float(values, self._point("power"))
        if power is None:
            return self.unknown(action)
        tank = as_float(values, self._point("tank"))
        blocked = None
        if tank is not None and tank <= self.cfg.min_tank_temp_c:
            blocked = f"tank at {tank:.1f} C, minimum {self.cfg.min_tank_temp_c:.1f} C"
        if action is None:
            free = power
        else:
            setpoint = as_float(action.originals, self._point("setpoint")) or as_float(values, self._point("setpoint"))
            deadband = as_float(values, self._point("deadband"))
            rated = as_float(values, self._point("rated")) or action.free_kw
            free = action.free_kw
            if tank is not None and setpoint is not None:
                if tank >= setpoint:
                    free = 0.0
                elif deadband is not None and tank <= setpoint - deadband:
                    free = rated
        return self._view(True, power, free, free, blocked, tankTempC=tank, minTankTempC=self.cfg.min_tank_temp_c)

    def command(self, shed_kw: float, view: LoadView, action: Action | None,
                values: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
        """Point values that shed about `shed_kw`, and the reduction expected."""
        return view.free_kw, {self._point("enable"): False}


class HvacModel(LoadModel):
    """HVAC: raise the cooling setpoint within the comfort band."""

    @property
    def shed_points(self) -> tuple[str, ...]:
        """The writable points this load's actions write (and restores put back)."""
        return (self._point("setpoint"),)

    def _original_setpoint(self, values: Mapping[str, Any] | None, action: Action | None) -> float | None:
        if action is not None:
            original = as_float(action.originals, self._point("setpoint"))
            if original is not None:
                return original
        return as_float(values, self._point("setpoint"))

    def max_offset_c(self, original: float | None) -> float:
        """How far the setpoint may rise from `original` within the comfort band."""
        if original is None:
            return 0.0
        return max(0.0, min(self.cfg.max_offset_c, self.cfg.max_zone_temp_c - original))

    def view(self, values: Mapping[str, Any] | None, action: Action | None, hours_left: float) -> LoadView:
        """What the load can shed now."""
        power = as_float(values, self._point("power"))
        if power is None:
            return self.unknown(action)
        zone = as_float(values, self._point("zone"))
        original = self._original_setpoint(values, action)
        blocked = None
        if zone is not None and zone > self.cfg.max_zone_temp_c + self.cfg.zone_release_margin_c:
            blocked = f"zone at {zone:.1f} C, maximum {self.cfg.max_zone_temp_c:.1f} C"
        free = power if action is None else max(action.free_kw, 0.0)
        max_offset = self.max_offset_c(original)
        capacity = min(free, self.cfg.kw_per_deg_c * max_offset)
        view = self._view(True, power, free, capacity, blocked, zoneTempC=zone,
                          maxZoneTempC=self.cfg.max_zone_temp_c, maxOffsetC=round(max_offset, 3))
        view.step_kw = self.cfg.setpoint_resolution_c * self.cfg.kw_per_deg_c
        return view

    def command(self, shed_kw: float, view: LoadView, action: Action | None,
                values: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
        """Point values that shed about `shed_kw`, and the reduction expected."""
        original = self._original_setpoint(values, action)
        if original is None:
            return 0.0, {}
        step = self.cfg.setpoint_resolution_c
        offset = round(max(0.0, shed_kw) / self.cfg.kw_per_deg_c / step) * step
        offset = min(offset, self.max_offset_c(original))
        expected = min(view.free_kw, offset * self.cfg.kw_per_deg_c)
        return expected, {self._point("setpoint"): round(original + offset, 3)}


class CircuitModel(LoadModel):
    """Panel circuit: switch off, never a critical one."""

    @property
    def shed_points(self) -> tuple[str, ...]:
        """The writable points this load's actions write (and restores put back)."""
        return (self._point("enable"),)

    def view(self, values: Mapping[str, Any] | None, action: Action | None, hours_left: float) -> LoadView:
        """What the load can shed now."""
        device_critical = as_bool(values, self._point("critical"))
        critical = self.cfg.critical or bool(device_critical)
        power = as_float(values, self._point("power"))
        if power is None:
            view = self.unknown(action)
            view.critical = critical
            return view
        free = power if action is None else action.free_kw
        blocked = "critical circuit" if critical else None
        return self._view(True, power, free, free, blocked, critical=critical)

    def command(self, shed_kw: float, view: LoadView, action: Action | None,
                values: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
        """Point values that shed about `shed_kw`, and the reduction expected."""
        return view.free_kw, {self._point("enable"): False}


class BatteryModel(LoadModel):
    """Battery: lower the power setpoint, never below the reserve by the event end."""

    @property
    def shed_points(self) -> tuple[str, ...]:
        """The writable points this load's actions write (and restores put back)."""
        return (self._point("setpoint"),)

    def view(self, values: Mapping[str, Any] | None, action: Action | None, hours_left: float) -> LoadView:
        """What the load can shed now."""
        power = as_float(values, self._point("power"))
        if power is None:
            return self.unknown(action)
        soc = as_float(values, self._point("soc"))
        device_reserve = as_float(values, self._point("reserve"))
        reserve = max(self.cfg.reserve_soc_percent, device_reserve or 0.0)
        max_kw = as_float(values, self._point("max")) or 0.0
        capacity_kwh = as_float(values, self._point("capacity"))
        free = power if action is None else action.free_kw
        if soc is None or soc <= reserve or max_kw <= 0:
            discharge = 0.0
        elif capacity_kwh is None:
            discharge = max_kw
        else:
            energy = (soc - reserve) / 100.0 * capacity_kwh
            discharge = min(max_kw, energy / max(hours_left, 1.0 / 60.0))
        # `free` may be negative (already discharging); shedding moves the setpoint down to -discharge
        capacity = max(0.0, free + discharge)
        view = self._view(True, power, free, capacity, socPercent=soc, reserveSocPercent=reserve,
                          maxDischargeKw=round(discharge, 3))
        view.free_kw = free
        return view

    def effective_shed(self, action: Action, view: LoadView) -> float:
        """What the action takes off the site now (a battery: what it was set to)."""
        return action.shed_kw

    def idle(self, view: LoadView) -> bool:
        """A battery is never idle: its setpoint always matters."""
        return False

    def command(self, shed_kw: float, view: LoadView, action: Action | None,
                values: Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
        """Point values that shed about `shed_kw`, and the reduction expected."""
        max_kw = as_float(values, self._point("max"))
        setpoint = round(view.free_kw - shed_kw, 2)
        if max_kw is not None:
            setpoint = max(-max_kw, min(max_kw, setpoint))
        return max(0.0, view.free_kw - setpoint), {self._point("setpoint"): setpoint}


_MODELS: dict[str, type[LoadModel]] = {KIND_EV: EvChargerModel, KIND_WATER_HEATER: WaterHeaterModel,
                                       KIND_HVAC: HvacModel, KIND_CIRCUIT: CircuitModel, KIND_BATTERY: BatteryModel}


def build_model(cfg: LoadConfig) -> LoadModel:
    """The model of a load config."""
    return _MODELS[cfg.kind](cfg)
