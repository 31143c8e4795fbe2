"""The field site's devices: the physics models of `dr_devices`, their register maps, and injected faults.

Plain code, no network: `FieldSite` answers raw register reads and writes for a Modbus unit and point reads and
writes for a BACnet object, in the models' engineering units underneath. The servers (`modbus_server`,
`bacnet_server`) put it on the wire.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dr_devices import build_device
from dr_devices.model import DeviceModel
from dr_devices.points import PointError
from dr_devices.site import SiteModel

from .maps import (MAP_BUILDERS, NOT_IMPLEMENTED, DeviceMap, RangeError, ReadOnlyError, Reg, check_write, from_raw,
                   join_words, to_raw, words)

_log = logging.getLogger(__name__)

PROTOCOLS = ("modbus", "bacnet")
#: longest injected delay (s): a slow device, never a hung process
MAX_DELAY_S = 120.0


class FieldConfigError(ValueError):
    """A devices.json that cannot be used; the message names the key."""


@dataclass
class Faults:
    """Faults injected into one device: it stops answering, refuses writes, or answers `delay_s` late."""

    silent: bool = False
    refuse_writes: bool = False
    delay_s: float = 0.0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply `{"silent", "refuseWrites", "delayS"}` (any subset); a bad value raises FieldConfigError."""
        for key, value in changes.items():
            if key in ("silent", "refuseWrites"):
                if not isinstance(value, bool):
                    raise FieldConfigError(f"{key}: expected true or false")
                setattr(self, "silent" if key == "silent" else "refuse_writes", value)
            elif key == "delayS":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DELAY_S:
                    raise FieldConfigError(f"delayS: expected a number of seconds in 0..{MAX_DELAY_S:g}")
                self.delay_s = float(value)
            else:
                raise FieldConfigError(f"{key}: unknown fault; faults: silent, refuseWrites, delayS")

    def as_dict(self) -> dict[str, Any]:
        return {"silent": self.silent, "refuseWrites": self.refuse_writes, "delayS": self.delay_s}


@dataclass
class FieldDevice:
    """One device of the site: its model, protocol address and faults."""

    name: str
    kind: str
    protocol: str
    model: DeviceModel
    unit_id: int = 0
    device_id: int = 0
    port: int = 0
    dmap: DeviceMap | None = None
    faults: Faults = field(default_factory=Faults)
    extra: dict[str, float] = field(default_factory=dict)


class FieldSite:
    """Every device of one site around one `dr_devices` site model (the meter sums them)."""

    def __init__(self, config: Mapping[str, Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.name = _text(config, "site")
        self.clock = clock
        self.model = SiteModel(self.name, clock)
        self.devices: dict[str, FieldDevice] = {}
        self.units: dict[int, FieldDevice] = {}
        #: the last BACnet writes (device, object, priority, value), newest last
        self.written: deque[tuple[str, str, int | None, Any]] = deque(maxlen=200)
        self._last_sync = clock()
        time_scale = config.get("timeScale", 1.0)
        seed = config.get("seed")
        start_hour = config.get("startHour")
        items = config.get("devices")
        if not isinstance(items, list) or not items:
            raise FieldConfigError("devices: expected a non-empty list")
        for i, item in enumerate(items):
            self._add(i, item, time_scale, seed, start_hour)

    def _add(self, i: int, item: Any, time_scale: Any, seed: Any, start_hour: Any) -> None:
        where = f"devices[{i}]"
        if not isinstance(item, Mapping):
            raise FieldConfigError(f"{where}: expected an object")
        name, kind, protocol = (_text(item, k, where) for k in ("name", "type", "protocol"))
        if name in self.devices:
            raise FieldConfigError(f"{where}.name: {name} is listed twice")
        if protocol not in PROTOCOLS:
            raise FieldConfigError(f"{where}.protocol: expected one of {', '.join(PROTOCOLS)}")
        params = item.get("params", {})
        try:
            model = build_device(kind, params, time_scale=time_scale, start_hour=start_hour,
                                 seed=None if seed is None else int(seed) + i)
        except (ValueError, TypeError) as exc:
            raise FieldConfigError(f"{where}.params: {exc}") from None
        dev = FieldDevice(name, kind, protocol, model)
        if protocol == "modbus":
            dev.unit_id = _int(item, "unitId", where, 1, 247)
            if dev.unit_id in self.units:
                raise FieldConfigError(f"{where}.unitId: {dev.unit_id} is used twice")
            builder = MAP_BUILDERS.get(kind)
            if builder is None:
                raise FieldConfigError(f"{where}.type: no Modbus map for {kind}")
            if kind == "battery":
                dmap = builder(model.read("MaxPowerKw"))
                dev.extra["_wset_enable"] = 1.0 if item.get("wsetEnabled", True) else 0.0
            elif kind == "ev_charger":
                dmap = builder(model.read("RatedPowerKw"))
                dev.extra["_session_energy_kwh"] = 0.0
            else:
                dmap = builder()
                dev.extra["_energy_import_kwh"] = 0.0
            dev.dmap = dmap
            self.units[dev.unit_id] = dev
        else:
            dev.device_id = _int(item, "deviceId", where, 0, 4194302)
            dev.port = _int(item, "port", where, 0, 65535) if "port" in item else 0
        self.devices[name] = dev
        self.model.add(name, model)

    # --- time ----------------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Advance every model to now, integrating the energy counters."""
        now = self.clock()
        dt_h = max(0.0, now - self._last_sync) / 3600.0
        self.model.sync()
        self._last_sync = now
        for dev in self.devices.values():
            if "_session_energy_kwh" in dev.extra:
                dev.extra["_session_energy_kwh"] += max(0.0, dev.model.power_kw) * dt_h
            if "_energy_import_kwh" in dev.extra:
                dev.extra["_energy_import_kwh"] += max(0.0, self.model.net_power_kw()) * dt_h

    # --- engineering values ----------------------------------------------------------------------------------
    def read_point(self, dev: FieldDevice, point: str) -> float | bool:
        """A point of the device's model, or one of the map's derived values (`_phase_a`, counters)."""
        if point in dev.extra:
            return dev.extra[point]
        if point.startswith("_phase_"):
            return dev.model.read("PowerKw") / 3.0
        return dev.model.read(point)

    def write_point(self, dev: FieldDevice, point: str, value: Any) -> None:
        """Write a point of the model; PointError (out of range, read only) leaves everything as it was."""
        if point == "_wset_enable":
            enabled = float(value) != 0
            if not enabled:
                dev.model.write("PowerSetpointKw", 0.0)
            dev.extra[point] = 1.0 if enabled else 0.0
            return
        if point == "PowerSetpointKw" and dev.extra.get("_wset_enable", 1.0) == 0.0:
            raise PointError("PowerSetpointKw: WSetEna is 0 (setpoint control disabled)")
        dev.model.write(point, value)

    # --- Modbus ---------------------------------------------------------------------------------------------
    def modbus_read(self, unit: int, table: str, address: int, count: int) -> list[int] | None:
        """`count` words from `address`; None when an address is not mapped (ILLEGAL DATA ADDRESS)."""
        dev = self.units.get(unit)
        if dev is None or dev.dmap is None:
            return None
        self.sync()
        out: list[int] = []
        cache: dict[str, list[int]] = {}
        for addr in range(address, address + count):
            hit = dev.dmap.by_address.get((table, addr))
            if hit is None:
                return None
            reg, offset = hit
            if reg.name not in cache:
                cache[reg.name] = words(reg, self._raw(dev, reg))
            out.append(cache[reg.name][offset])
        return out

    def _raw(self, dev: FieldDevice, reg: Reg) -> int | str:
        if reg.const is not None:
            return reg.const
        if dev.dmap is None or reg.point is None:
            return NOT_IMPLEMENTED.get(reg.dtype, 0)
        return to_raw(dev.dmap, reg, float(self.read_point(dev, reg.point)))

    def modbus_write(self, unit: int, address: int, values: list[int]) -> None:
        """Holding-register write: whole registers only, each checked before any is applied.

        Raises LookupError (unmapped address), ReadOnlyError, RangeError (ILLEGAL DATA VALUE)."""
        dev = self.units.get(unit)
        if dev is None or dev.dmap is None:
            raise LookupError(f"unit {unit}")
        self.sync()
        pending: list[tuple[Reg, int]] = []
        i = 0
        while i < len(values):
            hit = dev.dmap.by_address.get(("holding", address + i))
            if hit is None or hit[1] != 0 or i + hit[0].count > len(values):
                raise LookupError(f"unit {unit} address {address + i}")
            reg = hit[0]
            raw = join_words(reg, values[i:i + reg.count])
            check_write(reg, raw)
            pending.append((reg, raw))
            i += reg.count
        for reg, raw in pending:
            if reg.point is None:
                raise ReadOnlyError(f"{reg.name} is read only")
            try:
                self.write_point(dev, reg.point, from_raw(dev.dmap, reg, raw))
            except PointError as exc:
                raise RangeError(str(exc)) from None

    def status(self) -> dict[str, Any]:
        """Every device's protocol address, power and faults."""
        self.sync()
        return {"site": self.name, "netPowerKw": round(self.model.net_power_kw(), 4),
                "devices": {d.name: {"type": d.kind, "protocol": d.protocol, "unitId": d.unit_id or None,
                                     "deviceId": d.device_id if d.protocol == "bacnet" else None,
                                     "powerKw": round(d.model.power_kw, 4), "faults": d.faults.as_dict()}
                            for d in self.devices.values()}}


def _text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise FieldConfigError(f"{where + '.' if where else ''}{key}: expected a non-empty string")
    return value.strip()


def _int(data: Mapping[str, Any], key: str, where: str, lo: int, hi: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FieldConfigError(f"{where}.{key}: expected an integer {lo}..{hi}")
    return value


__all__ = ["FieldConfigError", "FieldDevice", "FieldSite", "Faults", "RangeError", "ReadOnlyError"]
