"""Modbus register maps of the field devices, as real equipment lays them out (plain data, no I/O).

A map is a list of `Reg`: one holding or input register block per Modbus unit. A register is either a constant
(a SunSpec marker, a model header, a scale factor `sunssf`), a read of a point of the physics model, or a
writable point. The physics models work in engineering units (kW, %, kWh); a register holds a raw integer:

    engineering value = raw * 10 ** sf * mult

`sf` is the value of the register named by `sf` (SunSpec scale factors), 0 without one; `mult` converts the
device's own unit to the model's (W -> kW is 0.001, a SunSpec inverter's + = export to a battery's + = charging
is -0.001, 0.1 A at 240 V -> kW is 0.024). The registry CSVs of the `field` site carry the same `Scale` and
`Scale Factor Point` so that the driver side undoes exactly this (tests/unit/test_field_maps.py checks it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-0x8000, 0x7FFF), "uint16": (0, 0xFFFF), "sunssf": (-10, 10), "enum16": (0, 0xFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF), "uint32": (0, 0xFFFFFFFF), "acc32": (0, 0xFFFFFFFF),
}
#: SunSpec "not implemented" values, answered when a point has no value
NOT_IMPLEMENTED = {"int16": -0x8000, "uint16": 0xFFFF, "int32": -0x80000000, "uint32": 0xFFFFFFFF,
                   "acc32": 0, "enum16": 0xFFFF, "sunssf": -0x8000}
#: registry "Data Type" of each register type (what the stock Modbus driver's parse_type_spec accepts)
DRIVER_TYPES = {"int16": "INT16", "uint16": "UINT16", "sunssf": "INT16", "enum16": "UINT16", "int32": "INT32",
                "uint32": "UINT32", "acc32": "UINT32"}


class RangeError(ValueError):
    """A write outside what the register accepts: the device answers ILLEGAL DATA VALUE and changes nothing."""


class ReadOnlyError(ValueError):
    """A write to a register that cannot be written: ILLEGAL DATA ADDRESS."""


@dataclass(frozen=True)
class Reg:
    """One register (or a pair, for 32-bit types) of a Modbus map."""

    name: str
    address: int
    dtype: str = "uint16"
    point: str | None = None          # the physics model's point, engineering units
    const: int | str | None = None    # a constant (an int, or text for `string` registers)
    sf: str | None = None             # name of the scale-factor register
    mult: float = 1.0
    writable: bool = False
    raw_min: int | None = None        # tighter raw limits a write must respect (besides the type's range)
    raw_max: int | None = None
    length: int = 0                   # registers of a string
    table: str = "holding"
    units: str = ""                   # engineering units of the model's point (registry `Units`)

    @property
    def count(self) -> int:
        if self.dtype == "string":
            return self.length
        return 2 if self.dtype in ("int32", "uint32", "acc32") else 1


@dataclass
class DeviceMap:
    """The registers of one Modbus unit, with lookups by name and by address."""

    kind: str
    regs: list[Reg]
    by_name: dict[str, Reg] = field(init=False)
    by_address: dict[tuple[str, int], tuple[Reg, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {r.name: r for r in self.regs}
        self.by_address = {}
        for reg in self.regs:
            for i in range(reg.count):
                key = (reg.table, reg.address + i)
                if key in self.by_address:
                    raise ValueError(f"{self.kind}: {reg.name} overlaps {self.by_address[key][0].name}")
                self.by_address[key] = (reg, i)


def sf_value(dmap: DeviceMap, reg: Reg) -> int:
    """The scale factor that applies to `reg` (0 without one)."""
    if reg.sf is None:
        return 0
    const = dmap.by_name[reg.sf].const
    return int(const) if isinstance(const, int) else 0


def to_raw(dmap: DeviceMap, reg: Reg, value: float | bool) -> int:
    """Engineering value -> the raw integer the register holds (rounded, clamped to the type's range)."""
    step = (10.0 ** sf_value(dmap, reg)) * reg.mult
    raw = round(float(value) / step)
    lo, hi = INT_RANGES[reg.dtype]
    return max(lo, min(hi, raw))


def from_raw(dmap: DeviceMap, reg: Reg, raw: int) -> float:
    """A raw register value -> engineering units."""
    return raw * (10.0 ** sf_value(dmap, reg)) * reg.mult


def check_write(reg: Reg, raw: int) -> None:
    """Refuse a raw write outside the register's type or limits (RangeError) or to a read-only one."""
    if not reg.writable:
        raise ReadOnlyError(f"{reg.name} is read only")
    lo, hi = INT_RANGES[reg.dtype]
    lo = lo if reg.raw_min is None else max(lo, reg.raw_min)
    hi = hi if reg.raw_max is None else min(hi, reg.raw_max)
    if not lo <= raw <= hi:
        raise RangeError(f"{reg.name}: {raw} outside {lo}..{hi}")


def words(reg: Reg, raw: int | str) -> list[int]:
    """The 16-bit words of a raw value, big-endian (high word first)."""
    if reg.dtype == "string":
        data = str(raw).encode()[: reg.length * 2].ljust(reg.length * 2, b"\0")
        return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if reg.count == 2:
        value = int(raw) & 0xFFFFFFFF
        return [value >> 16, value & 0xFFFF]
    return [int(raw) & 0xFFFF]


def join_words(reg: Reg, values: list[int]) -> int:
    """Words written by a client -> the signed or unsigned raw value of the register."""
    value = 0
    for word in values:
        value = (value << 16) | (word & 0xFFFF)
    bits = 16 * len(values)
    if reg.dtype in ("int16", "int32", "sunssf") and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _sunspec_common(base: int, model: str, serial: str) -> list[Reg]:
    """'SunS' marker and SunSpec model 1 (common): manufacturer, model, version, serial, device address."""
    return [
        Reg("SunS", base, "uint32", const=0x53756E53),
        Reg("ID_1", base + 2, "uint16", const=1), Reg("L_1", base + 3, "uint16", const=66),
        Reg("Mn", base + 4, "string", const="volttron-dr sim", length=16),
        Reg("Md", base + 20, "string", const=model, length=16),
        Reg("Opt", base + 36, "string", const="", length=8),
        Reg("Vr", base + 44, "string", const="1.0", length=8),
        Reg("SN", base + 52, "string", const=serial, length=16),
        Reg("DA", base + 68, "uint16", const=1), Reg("Pad_1", base + 69, "uint16", const=0x8000),
    ]


def battery_map(max_power_kw: float) -> DeviceMap:
    """Battery inverter: SunSpec models 1, 701-style AC measurement, 713-style storage state, 704-style controls.

    W and WSet follow the inverter convention (+ = export, i.e. discharging); the model's + is charging, so the
    multiplier is -0.001 (W -> kW, sign flipped). WSetEna (enum16, 1 = enabled) must be 1 for WSet to act.
    """
    max_w = round(max_power_kw * 1000)
    b = 40000
    regs = _sunspec_common(b, "DR-BAT-1", "BAT0001")
    m = b + 70
    regs += [
        Reg("ID_701", m, const=701), Reg("L_701", m + 1, const=10),
        Reg("W", m + 2, "int16", point="PowerKw", sf="W_SF", mult=-0.001, units="kW"),
        Reg("W_SF", m + 3, "sunssf", const=0),
    ]
    s = m + 12
    regs += [
        Reg("ID_713", s, const=713), Reg("L_713", s + 1, const=8),
        Reg("WHRtg", s + 2, "uint16", point="CapacityKwh", sf="WH_SF", mult=0.001, units="kWh"),
        Reg("SoC", s + 3, "uint16", point="SocPercent", sf="Pct_SF", units="%"),
        Reg("MinRsvPct", s + 4, "uint16", point="ReserveSocPercent", sf="Pct_SF", units="%"),
        Reg("WH_SF", s + 5, "sunssf", const=1), Reg("Pct_SF", s + 6, "sunssf", const=-1),
    ]
    c = s + 10
    regs += [
        Reg("ID_704", c, const=704), Reg("L_704", c + 1, const=10),
        Reg("WSetEna", c + 2, "enum16", point="_wset_enable", writable=True, raw_min=0, raw_max=1),
        Reg("WSet", c + 3, "int16", point="PowerSetpointKw", sf="WSet_SF", mult=-0.001, writable=True,
            raw_min=-max_w, raw_max=max_w, units="kW"),
        Reg("WSet_SF", c + 4, "sunssf", const=0),
        Reg("WMaxRtg", c + 5, "uint16", point="MaxPowerKw", sf="WSet_SF", mult=0.001, units="kW"),
    ]
    return DeviceMap("battery", regs)


def meter_map() -> DeviceMap:
    """Revenue meter: SunSpec models 1 and 203-style (total and per-phase active power, imported energy).

    W is + for import (the site draws), as a meter at the service entrance reports it.
    """
    b = 40000
    regs = _sunspec_common(b, "DR-MTR-1", "MTR0001")
    m = b + 70
    regs += [
        Reg("ID_203", m, const=203), Reg("L_203", m + 1, const=105),
        Reg("W", m + 2, "int16", point="PowerKw", sf="W_SF", mult=0.001, units="kW"),
        Reg("WphA", m + 3, "int16", point="_phase_a", sf="W_SF", mult=0.001, units="kW"),
        Reg("WphB", m + 4, "int16", point="_phase_b", sf="W_SF", mult=0.001, units="kW"),
        Reg("WphC", m + 5, "int16", point="_phase_c", sf="W_SF", mult=0.001, units="kW"),
        Reg("W_SF", m + 6, "sunssf", const=0),
        Reg("TotWhImp", m + 7, "acc32", point="_energy_import_kwh", sf="TotWh_SF", mult=0.001, units="kWh"),
        Reg("TotWh_SF", m + 9, "sunssf", const=0),
    ]
    return DeviceMap("meter", regs)


#: the EV charger's supply voltage: its current limit in 0.1 A converts to kW by 0.1 * 240 / 1000
EV_VOLTS = 240.0
EV_KW_PER_COUNT = 0.1 * EV_VOLTS / 1000.0


def ev_charger_map(rated_power_kw: float) -> DeviceMap:
    """EV charger (vendor map, input registers for measurements, holding registers for settings).

    The current limit is in 0.1 A at 240 V; session energy in Wh (uint32); plugged-in as 0/1.
    """
    max_count = int(round(rated_power_kw / EV_KW_PER_COUNT))
    regs = [
        Reg("ActivePowerW", 0, "uint16", point="PowerKw", mult=0.001, table="input", units="kW"),
        Reg("VehicleConnected", 1, "uint16", point="PluggedIn", table="input"),
        Reg("SessionEnergyWh", 2, "uint32", point="_session_energy_kwh", mult=0.001, table="input", units="kWh"),
        Reg("RatedCurrentDeciA", 4, "uint16", point="RatedPowerKw", mult=EV_KW_PER_COUNT, table="input",
            units="kW"),
        Reg("EvSocPct", 5, "uint16", point="SocPercent", table="input", units="%"),
        Reg("EnergyRequestWh", 6, "uint16", point="EnergyNeededKwh", mult=0.001, table="input", units="kWh"),
        Reg("DepartureMin", 7, "uint16", point="DepartureHours", mult=1 / 60, table="input", units="h"),
        Reg("CurrentLimitDeciA", 0, "uint16", point="PowerLimitKw", mult=EV_KW_PER_COUNT, writable=True,
            raw_min=0, raw_max=max_count, units="kW"),
    ]
    return DeviceMap("ev_charger", regs)


MAP_BUILDERS: Mapping[str, Callable[..., DeviceMap]] = {
    "battery": battery_map, "site_meter": meter_map, "ev_charger": ev_charger_map,
}


#: registry point names of the map's derived values (the rest use the physics model's point names)
REGISTRY_NAMES = {"_phase_a": "PhaseAPowerKw", "_phase_b": "PhaseBPowerKw", "_phase_c": "PhaseCPowerKw",
                  "_energy_import_kwh": "EnergyImportKwh", "_session_energy_kwh": "SessionEnergyKwh",
                  "_wset_enable": "WSetEna"}
REGISTRY_COLUMNS = ["Volttron Point Name", "Reference Point Name", "Units", "Writable", "Address", "Data Type",
                    "Table", "Scale", "Scale Factor Point", "Notes"]


def registry_rows(dmap: DeviceMap) -> list[dict[str, str]]:
    """The stock Modbus driver's registry rows (with the `scaling` plugin's columns) for a map's points and
    the scale factors they use: what platform-config/sites/field/driver/registry/*.csv hold."""
    used_sf = {r.sf for r in dmap.regs if r.point is not None and r.sf}
    rows = []
    for reg in dmap.regs:
        if reg.point is None and reg.name not in used_sf:
            continue
        name = reg.name if reg.point is None else REGISTRY_NAMES.get(reg.point, reg.point)
        sf_name = reg.sf or ""
        rows.append({
            "Volttron Point Name": name, "Reference Point Name": reg.name, "Units": reg.units,
            "Writable": "TRUE" if reg.writable else "FALSE", "Address": str(reg.address),
            "Data Type": DRIVER_TYPES[reg.dtype], "Table": reg.table,
            "Scale": "" if reg.point is None or reg.mult == 1.0 else f"{reg.mult:.10g}",
            "Scale Factor Point": sf_name,
            "Notes": "SunSpec scale factor" if reg.dtype == "sunssf" else "",
        })
    return rows
