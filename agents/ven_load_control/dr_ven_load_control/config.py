"""The VEN agent's configuration, validated once into a typed pydantic model (`dr_common.config`).

A site's `ven.json` names the venId, the meter, and every controllable load: which platform.driver device and
points it is, its shed priority (lower sheds first) and its constraints, and the limits every command must
keep. Every problem raises `dr_common.config.ConfigError` naming the offending key (`loads[2].minTankTempC`).
A `panel` entry expands into one `circuit` load per circuit before validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from dr_common import topics
from dr_common.config import ConfigError, ConfigModel, load_model
from dr_common.schema import ID_RE

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


def _num(default: float, ge: float | None = None, le: float | None = None, gt: float | None = None) -> Any:
    return Field(default, ge=ge, le=le, gt=gt, strict=True, allow_inf_nan=False)


Text = Annotated[str, Field(strict=True, min_length=1, max_length=256)]


def _device_path(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, "expected a device path like 'demo/ev_charger'")
    path = value.strip().strip("/")
    if path.startswith(topics.DEVICES_PREFIX):
        path = path[len(topics.DEVICES_PREFIX):]
    if not path or len(path) > 256 or any(not part for part in path.split("/")):
        raise ConfigError(key, "expected a device path like 'demo/ev_charger'")
    return path


class LoadConfig(ConfigModel):
    """One controllable load (a panel is already expanded into its circuits)."""

    name: Text
    kind: Literal["ev_charger", "water_heater", "hvac", "circuit", "battery"]
    path: Text
    priority: StrictInt
    points: dict[str, str]
    circuit: Text | None = None
    critical: StrictBool = False
    description: str | None = Field(None, max_length=2000)
    # ev_charger
    energy_margin_percent: float = _num(10.0, ge=0.0, le=100.0)
    # water_heater
    min_tank_temp_c: float = _num(45.0, ge=0.0, le=95.0)
    # hvac
    max_offset_c: float = _num(2.0, ge=0.0, le=10.0)
    max_zone_temp_c: float = _num(27.0, ge=10.0, le=40.0)
    kw_per_deg_c: float = _num(0.5, ge=0.001, le=1000.0)
    setpoint_resolution_c: float = _num(0.1, ge=0.001, le=1.0)
    zone_release_margin_c: float = _num(0.5, ge=0.0, le=5.0)
    # battery
    reserve_soc_percent: float = _num(20.0, ge=0.0, le=100.0)

    @property
    def continuous(self) -> bool:
        """True for loads shed by any amount (EV limit, HVAC offset, battery setpoint)."""
        return self.kind in (KIND_EV, KIND_HVAC, KIND_BATTERY)


class MeterConfig(ConfigModel):
    """The site meter: its device and the point of the site's power."""

    path: Text
    power_point: Text = "PowerKw"


class CommandLimits(ConfigModel):
    """What a command may ask of this VEN; a command outside them is refused (`ok: false`)."""

    max_event_duration_s: float = _num(4 * 3600.0, gt=0.0, le=7 * 86400.0)
    max_requested_kw: float = _num(100.0, gt=0.0, le=1e6)
    max_start_ahead_s: float = _num(86400.0, ge=0.0, le=366 * 86400.0)


class VenConfig(ConfigModel):
    """A site's ven.json."""

    ven_id: str
    site: Text | None = None
    meter: MeterConfig
    loads: tuple[LoadConfig, ...] = Field(min_length=1)
    limits: CommandLimits = CommandLimits()
    telemetry_period_s: float = _num(5.0, ge=0.2, le=3600.0)
    baseline_window_s: float = _num(900.0, ge=1.0)
    history_s: float = _num(1800.0, ge=60.0, le=7 * 86400.0)
    restore_stagger_s: float = _num(2.0, ge=0.0, le=600.0)
    restore_method: Literal["set", "revert"] = RESTORE_SET
    overshed_margin_kw: float = _num(0.05, ge=0.0)
    overshed_margin_percent: float = _num(2.0, ge=0.0, le=100.0)
    deadband_kw: float = _num(0.02, ge=0.0)
    deadband_percent: float = _num(1.0, ge=0.0, le=50.0)
    settle_s: float = _num(5.0, ge=0.0, le=60.0)
    rpc_timeout_s: float = _num(2.0, ge=0.05, le=60.0)
    retry_s: float = _num(5.0, ge=0.1, le=3600.0)
    late_write_window_s: float = _num(15.0, ge=0.0, le=600.0)
    live_read_after_shed_s: float = _num(0.2, ge=0.0, le=10.0)
    state_path: Text | None = None

    @field_validator("ven_id")
    @classmethod
    def _ven_id(cls, value: str) -> str:
        if not ID_RE.match(value):
            raise ValueError("must be 1-64 letters, digits or _ . : - starting with a letter or digit")
        return value

    @property
    def meter_path(self) -> str:
        """The meter's device path."""
        return self.meter.path

    @property
    def meter_point(self) -> str:
        """The meter's point of the site's power."""
        return self.meter.power_point

    @property
    def device_paths(self) -> list[str]:
        """Every platform.driver device this VEN reads, meter first, without duplicates."""
        paths = [self.meter_path]
        for load in self.loads:
            if load.path not in paths:
                paths.append(load.path)
        return paths

    def load(self, name: str) -> LoadConfig:
        """The load called `name` (KeyError if none)."""
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

def parse_config(raw: object) -> VenConfig:
    """Validate a ven.json mapping into a VenConfig; raises ConfigError naming the first bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError("<config>", f"expected an object, got {type(raw).__name__}")
    data = dict(raw)
    meter = data.get("meter")
    if not isinstance(meter, Mapping):
        raise ConfigError("meter", "required, an object with 'path' (and optional 'powerPoint')")
    data["meter"] = {**meter, "path": _device_path(meter.get("path"), "meter.path")}
    loads_raw = data.get("loads")
    if not isinstance(loads_raw, list) or not loads_raw:
        raise ConfigError("loads", "required, a non-empty list of loads")
    loads: list[LoadConfig] = []
    for index, item in enumerate(loads_raw):
        loads.extend(_parse_load(item, f"loads[{index}]"))
    names = [load.name for load in loads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("loads", f"duplicate load name(s) {', '.join(duplicates)}")
    data["loads"] = tuple(loads)
    cfg = load_model(VenConfig, data)
    if cfg.baseline_window_s > cfg.history_s:
        raise ConfigError("baselineWindowS", f"must be <= historyS ({cfg.history_s:g})")
    return cfg


def _parse_load(item: object, where: str) -> list[LoadConfig]:
    if not isinstance(item, Mapping):
        raise ConfigError(where, f"expected an object, got {type(item).__name__}")
    kind = item.get("kind")
    if kind not in LOAD_KINDS + (KIND_PANEL,):
        raise ConfigError(f"{where}.kind", f"must be one of {', '.join(LOAD_KINDS + (KIND_PANEL,))}")
    path = _device_path(item.get("path"), f"{where}.path")
    name = item.get("name", kind)
    if kind == KIND_PANEL:
        return _expand_panel(item, name, path, where)
    if kind == KIND_CIRCUIT and not item.get("circuit"):
        raise ConfigError(f"{where}.circuit", "required for a circuit load")
    data = {k: v for k, v in item.items() if k not in ("circuits",)}
    return [_build_load(data, kind, name, path, item.get("priority", DEFAULT_PRIORITY[kind]),
                        item.get("circuit"), where)]


def _expand_panel(item: Mapping[str, Any], name: Any, path: str, where: str) -> list[LoadConfig]:
    circuits = item.get("circuits")
    if not isinstance(circuits, list) or not circuits:
        raise ConfigError(f"{where}.circuits", "required for a panel, a non-empty list of circuit names or objects")
    base_priority = item.get("priority", DEFAULT_PRIORITY[KIND_CIRCUIT])
    if isinstance(base_priority, bool) or not isinstance(base_priority, int):
        raise ConfigError(f"{where}.priority", "expected an integer")
    critical_names = item.get("critical", [])
    if not isinstance(critical_names, list):
        raise ConfigError(f"{where}.critical", "for a panel, a list of circuit names")
    out = []
    for index, entry in enumerate(circuits):
        at = f"{where}.circuits[{index}]"
        if isinstance(entry, str):
            entry = {"circuit": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(at, "expected a circuit name or an object")
        circuit = entry.get("circuit") or entry.get("name")
        if not isinstance(circuit, str) or not circuit.strip():
            raise ConfigError(at, "needs a circuit name")
        circuit = circuit.strip()
        merged = {k: v for k, v in item.items() if k not in ("circuits", "critical", "name", "priority", "kind")}
        merged.update({k: v for k, v in entry.items() if k not in ("name", "circuit")})
        merged["critical"] = bool(entry.get("critical", circuit in critical_names))
        out.append(_build_load(merged, KIND_CIRCUIT, f"{name}.{circuit}", path,
                               entry.get("priority", base_priority + index), circuit, at))
    return out


def _build_load(item: Mapping[str, Any], kind: str, name: Any, path: str, priority: Any, circuit: Any,
                where: str) -> LoadConfig:
    points = dict(DEFAULT_POINTS[kind])
    overrides = item.get("points", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}.points", "expected an object of role -> point name")
    for role, point in overrides.items():
        if role not in points:
            raise ConfigError(f"{where}.points.{role}", f"unknown role for {kind}; roles: {', '.join(points)}")
        if not isinstance(point, str) or not point.strip():
            raise ConfigError(f"{where}.points.{role}", "expected a point name")
        points[role] = point.strip()
    if isinstance(circuit, str):
        circuit = circuit.strip()
        points = {role: point.replace("{circuit}", circuit) for role, point in points.items()}
    data = {**item, "kind": kind, "name": name.strip() if isinstance(name, str) else name, "path": path,
            "priority": priority, "points": points, "circuit": circuit}
    try:
        return load_model(LoadConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.key}", exc.reason) from None


__all__ = ["ConfigError", "VenConfig", "LoadConfig", "MeterConfig", "CommandLimits", "parse_config",
           "DEFAULT_POINTS", "DEFAULT_PRIORITY", "LOAD_KINDS", "RESTORE_SET", "RESTORE_REVERT"]
