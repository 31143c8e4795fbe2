"""The VEN agent's configuration, validated once into typed objects.

A site's `ven.json` names the venId, the meter, and every controllable load: which platform.driver device and
points it is, its shed priority (lower sheds first) and its constraints. Every problem raises ConfigError naming
the offending field (`loads[2].minTankTempC: ...`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dr_common.payloads import VEN_ID_RE

KIND_EV = "ev_charger"
KIND_WATER_HEATER = "water_heater"
KIND_HVAC = "hvac"
KIND_CIRCUIT = "circuit"
KIND_BATTERY = "battery"
KIND_PANEL = "panel"  # expands into one circuit load per listed circuit
LOAD_KINDS = (KIND_EV, KIND_WATER_HEATER, KIND_HVAC, KIND_CIRCUIT, KIND_BATTERY)

RESTORE_SET = "set"
RESTORE_REVERT = "revert"

# The seeds' default shed order.
DEFAULT_PRIORITY = {KIND_EV: 10, KIND_WATER_HEATER: 20, KIND_HVAC: 30, KIND_CIRCUIT: 40, KIND_BATTERY: 50}

# Point names of each kind (the simulated devices' registry); a load's "points" entry may rename any of them.
DEFAULT_POINTS: dict[str, dict[str, str]] = {
    KIND_EV: {"power": "PowerKw", "limit": "PowerLimitKw", "rated": "RatedPowerKw", "plugged": "PluggedIn",
              "soc": "SocPercent", "needed": "EnergyNeededKwh", "departure": "DepartureHours"},
    KIND_WATER_HEATER: {"power": "PowerKw", "tank": "TankTempC", "setpoint": "SetpointC", "deadband": "DeadbandC",
                        "enable": "ElementEnable", "rated": "RatedPowerKw"},
    KIND_HVAC: {"power": "PowerKw", "zone": "ZoneTempC", "setpoint": "CoolingSetpointC", "outdoor": "OutdoorTempC",
                "rated": "RatedPowerKw"},
    KIND_CIRCUIT: {"power": "{circuit}PowerKw", "enable": "{circuit}Enable", "critical": "{circuit}Critical"},
    KIND_BATTERY: {"power": "PowerKw", "setpoint": "PowerSetpointKw", "soc": "SocPercent",
                   "reserve": "ReserveSocPercent", "max": "MaxPowerKw", "capacity": "CapacityKwh"},
}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


@dataclass(frozen=True)
class LoadConfig:
    name: str
    kind: str
    path: str
    priority: int
    points: dict[str, str]
    circuit: str | None = None
    critical: bool = False
    # ev_charger
    energy_margin_percent: float = 10.0
    # water_heater
    min_tank_temp_c: float = 45.0
    # hvac
    max_offset_c: float = 2.0
    max_zone_temp_c: float = 27.0
    kw_per_deg_c: float = 0.5
    setpoint_resolution_c: float = 0.1
    zone_release_margin_c: float = 0.5
    # battery
    reserve_soc_percent: float = 20.0

    @property
    def continuous(self) -> bool:
        return self.kind in (KIND_EV, KIND_HVAC, KIND_BATTERY)


@dataclass(frozen=True)
class VenConfig:
    ven_id: str
    meter_path: str
    meter_point: str
    loads: tuple[LoadConfig, ...]
    site: str | None = None
    telemetry_period_s: float = 5.0
    baseline_window_s: float = 900.0
    history_s: float = 1800.0
    restore_stagger_s: float = 2.0
    restore_method: str = RESTORE_SET
    overshed_margin_kw: float = 0.05
    overshed_margin_percent: float = 2.0
    deadband_kw: float = 0.02
    deadband_percent: float = 1.0
    settle_s: float = 5.0
    rpc_timeout_s: float = 2.0
    retry_s: float = 5.0
    state_path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def device_paths(self) -> list[str]:
        """Every platform.driver device this VEN reads, meter first, without duplicates."""
        paths = [self.meter_path]
        for load in self.loads:
            if load.path not in paths:
                paths.append(load.path)
        return paths

    def load(self, name: str) -> LoadConfig:
        for load in self.loads:
            if load.name == name:
                return load
        raise KeyError(name)

    def margin_kw(self, requested_kw: float) -> float:
        """How far above the requested reduction the VEN may shed."""
        return max(self.overshed_margin_kw, abs(requested_kw) * self.overshed_margin_percent / 100.0)

    def deadband_for(self, requested_kw: float) -> float:
        """Errors smaller than this are left alone by the closed loop."""
        return max(self.deadband_kw, abs(requested_kw) * self.deadband_percent / 100.0)


# --- parsing ---------------------------------------------------------------------------------------------------

_TOP_KEYS = {"venId", "site", "meter", "loads", "telemetryPeriodS", "baselineWindowS", "historyS", "restoreStaggerS",
             "restoreMethod", "overshedMarginKw", "overshedMarginPercent", "deadbandKw", "deadbandPercent", "settleS",
             "rpcTimeoutS", "retryS", "statePath"}
_LOAD_KEYS = {"name", "kind", "path", "priority", "points", "circuit", "circuits", "critical", "energyMarginPercent",
              "minTankTempC", "maxOffsetC", "maxZoneTempC", "kwPerDegC", "setpointResolutionC", "zoneReleaseMarginC",
              "reserveSocPercent", "description"}


def parse_config(raw: object) -> VenConfig:
    """Validate a ven.json mapping into a VenConfig; raises ConfigError naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)}")
    ven_id = _str(raw, "venId", required=True)
    if not VEN_ID_RE.match(ven_id):
        raise ConfigError(f"venId: must be 1-64 letters, digits or _ . : - ; got {ven_id!r}")
    meter = raw.get("meter")
    if not isinstance(meter, Mapping):
        raise ConfigError("meter: required, an object with 'path' (and optional 'powerPoint')")
    meter_path = _path(meter, "path", "meter.path")
    meter_point = _str(meter, "powerPoint", where="meter.powerPoint") or "PowerKw"
    loads_raw = raw.get("loads")
    if not isinstance(loads_raw, list) or not loads_raw:
        raise ConfigError("loads: required, a non-empty list of loads")
    loads: list[LoadConfig] = []
    for index, item in enumerate(loads_raw):
        loads.extend(_parse_load(item, f"loads[{index}]"))
    names = [load.name for load in loads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"loads: duplicate load name(s) {', '.join(duplicates)}")
    restore_method = _str(raw, "restoreMethod") or RESTORE_SET
    if restore_method not in (RESTORE_SET, RESTORE_REVERT):
        raise ConfigError(f"restoreMethod: must be '{RESTORE_SET}' or '{RESTORE_REVERT}', got {restore_method!r}")
    history_s = _num(raw, "historyS", 1800.0, minimum=60.0)
    baseline_window_s = _num(raw, "baselineWindowS", 900.0, minimum=1.0)
    if baseline_window_s > history_s:
        raise ConfigError(f"baselineWindowS: must be <= historyS ({history_s:g}), got {baseline_window_s:g}")
    state_path = raw.get("statePath")
    if state_path is not None and (not isinstance(state_path, str) or not state_path.strip()):
        raise ConfigError(f"statePath: expected a file path or null, got {state_path!r}")
    return VenConfig(
        ven_id=ven_id, meter_path=meter_path, meter_point=meter_point, loads=tuple(loads),
        site=_str(raw, "site"),
        telemetry_period_s=_num(raw, "telemetryPeriodS", 5.0, minimum=0.2),
        baseline_window_s=baseline_window_s, history_s=history_s,
        restore_stagger_s=_num(raw, "restoreStaggerS", 2.0, minimum=0.0, maximum=600.0),
        restore_method=restore_method,
        overshed_margin_kw=_num(raw, "overshedMarginKw", 0.05, minimum=0.0),
        overshed_margin_percent=_num(raw, "overshedMarginPercent", 2.0, minimum=0.0, maximum=100.0),
        deadband_kw=_num(raw, "deadbandKw", 0.02, minimum=0.0),
        deadband_percent=_num(raw, "deadbandPercent", 1.0, minimum=0.0, maximum=50.0),
        settle_s=_num(raw, "settleS", 5.0, minimum=0.0, maximum=60.0),
        rpc_timeout_s=_num(raw, "rpcTimeoutS", 2.0, minimum=0.05, maximum=60.0),
        retry_s=_num(raw, "retryS", 5.0, minimum=0.1, maximum=3600.0),
        state_path=state_path.strip() if isinstance(state_path, str) else None,
        raw=dict(raw),
    )


def _parse_load(item: object, where: str) -> list[LoadConfig]:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(item).__name__}")
    unknown = sorted(set(item) - _LOAD_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = _str(item, "kind", required=True, where=f"{where}.kind")
    if kind not in LOAD_KINDS + (KIND_PANEL,):
        raise ConfigError(f"{where}.kind: must be one of {', '.join(LOAD_KINDS + (KIND_PANEL,))}; got {kind!r}")
    name = _str(item, "name", where=f"{where}.name") or kind
    path = _path(item, "path", f"{where}.path")
    if kind == KIND_PANEL:
        return _expand_panel(item, name, path, where)
    priority = _int(item, "priority", DEFAULT_PRIORITY[kind], where=f"{where}.priority")
    circuit = _str(item, "circuit", where=f"{where}.circuit")
    if kind == KIND_CIRCUIT and not circuit:
        raise ConfigError(f"{where}.circuit: required for a circuit load")
    return [_build_load(item, kind, name, path, priority, circuit, where)]


def _expand_panel(item: Mapping[str, Any], name: str, path: str, where: str) -> list[LoadConfig]:
    circuits = item.get("circuits")
    if not isinstance(circuits, list) or not circuits:
        raise ConfigError(f"{where}.circuits: required for a panel, a non-empty list of circuit names or objects")
    base_priority = _int(item, "priority", DEFAULT_PRIORITY[KIND_CIRCUIT], where=f"{where}.priority")
    critical_names = item.get("critical", [])
    if isinstance(critical_names, bool) or not isinstance(critical_names, list):
        raise ConfigError(f"{where}.critical: for a panel, a list of circuit names")
    out = []
    for index, entry in enumerate(circuits):
        at = f"{where}.circuits[{index}]"
        if isinstance(entry, str):
            entry = {"circuit": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: expected a circuit name or an object")
        circuit = _str(entry, "circuit", where=f"{at}.circuit") or _str(entry, "name", where=f"{at}.name")
        if not circuit:
            raise ConfigError(f"{at}: needs a circuit name")
        merged = {k: v for k, v in item.items() if k not in ("circuits", "critical", "name", "priority")}
        merged.update({k: v for k, v in entry.items() if k not in ("name", "circuit")})
        merged["critical"] = bool(entry.get("critical", circuit in critical_names))
        priority = _int(entry, "priority", base_priority + index, where=f"{at}.priority")
        out.append(_build_load(merged, KIND_CIRCUIT, f"{name}.{circuit}", path, priority, circuit, at))
    return out


def _build_load(item: Mapping[str, Any], kind: str, name: str, path: str, priority: int, circuit: str | None,
                where: str) -> LoadConfig:
    points = dict(DEFAULT_POINTS[kind])
    overrides = item.get("points", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}.points: expected an object of role -> point name")
    for role, point in overrides.items():
        if role not in points:
            raise ConfigError(f"{where}.points.{role}: unknown role for {kind}; roles: {', '.join(points)}")
        if not isinstance(point, str) or not point.strip():
            raise ConfigError(f"{where}.points.{role}: expected a point name")
        points[role] = point.strip()
    if circuit:
        points = {role: point.replace("{circuit}", circuit) for role, point in points.items()}
    critical = item.get("critical", False)
    if not isinstance(critical, bool):
        raise ConfigError(f"{where}.critical: expected true or false, got {critical!r}")
    max_zone = _num(item, "maxZoneTempC", 27.0, where=f"{where}.maxZoneTempC", minimum=10.0, maximum=40.0)
    return LoadConfig(
        name=name, kind=kind, path=path, priority=priority, points=points, circuit=circuit, critical=critical,
        energy_margin_percent=_num(item, "energyMarginPercent", 10.0, where=f"{where}.energyMarginPercent",
                                   minimum=0.0, maximum=100.0),
        min_tank_temp_c=_num(item, "minTankTempC", 45.0, where=f"{where}.minTankTempC", minimum=0.0, maximum=95.0),
        max_offset_c=_num(item, "maxOffsetC", 2.0, where=f"{where}.maxOffsetC", minimum=0.0, maximum=10.0),
        max_zone_temp_c=max_zone,
        kw_per_deg_c=_num(item, "kwPerDegC", 0.5, where=f"{where}.kwPerDegC", minimum=0.001, maximum=1000.0),
        setpoint_resolution_c=_num(item, "setpointResolutionC", 0.1, where=f"{where}.setpointResolutionC",
                                   minimum=0.001, maximum=1.0),
        zone_release_margin_c=_num(item, "zoneReleaseMarginC", 0.5, where=f"{where}.zoneReleaseMarginC",
                                   minimum=0.0, maximum=5.0),
        reserve_soc_percent=_num(item, "reserveSocPercent", 20.0, where=f"{where}.reserveSocPercent",
                                 minimum=0.0, maximum=100.0),
    )


def _str(data: Mapping[str, Any], key: str, required: bool = False, where: str | None = None) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where or key}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where or key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _path(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(data, key, required=True, where=where) or ""
    path = value.strip("/")
    if path.startswith("devices/"):
        path = path[len("devices/"):]
    if not path or any(not part for part in path.split("/")):
        raise ConfigError(f"{where}: expected a device path like 'demo/ev_charger', got {value!r}")
    return path


def _num(data: Mapping[str, Any], key: str, default: float, where: str | None = None,
         minimum: float | None = None, maximum: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where or key}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where or key}: must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{where or key}: must be <= {maximum:g}, got {value!r}")
    return float(value)


def _int(data: Mapping[str, Any], key: str, default: int, where: str | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where or key}: expected an integer, got {value!r}")
    return value
