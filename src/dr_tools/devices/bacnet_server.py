"""The field site's BACnet/IP devices (bacpypes3): one application, device object and UDP port per device.

Objects read their present value from the physics model at the instant of the request. Commandable objects
(setpoints, the water heater's element) keep a real 16-slot priority array: a write at priority P fills slot P,
a write of NULL relinquishes it, and the model follows the present value (the highest slot filled, else the
relinquish default). A write outside the object's minPresValue..maxPresValue answers value-out-of-range and
changes nothing; a write to an input answers write-access-denied. Faults: `silent` never answers, `refuseWrites`
answers write-access-denied, `delayS` answers that late.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any, Callable

from bacpypes3.app import Application
from bacpypes3.errors import PropertyError
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryValueObjectCmd
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.primitivedata import Null, ObjectIdentifier

from .fieldsite import FieldDevice, FieldSite

_log = logging.getLogger(__name__)

#: (object type, instance, name, model point, units, writable) of each device type's objects
OBJECTS: dict[str, list[tuple[str, int, str, str, str, bool]]] = {
    "hvac": [
        ("analogInput", 1, "ZoneTemperature", "ZoneTempC", "degreesCelsius", False),
        ("analogValue", 1, "CoolingSetpoint", "CoolingSetpointC", "degreesCelsius", True),
        ("analogInput", 2, "OutdoorTemperature", "OutdoorTempC", "degreesCelsius", False),
        ("analogInput", 3, "CompressorPower", "PowerKw", "kilowatts", False),
        ("analogInput", 4, "RatedPower", "RatedPowerKw", "kilowatts", False),
        ("multiStateValue", 1, "OccupancyMode", "_occupancy", "noUnits", True),
    ],
    "water_heater": [
        ("analogInput", 1, "TankTemperature", "TankTempC", "degreesCelsius", False),
        ("analogValue", 1, "TankSetpoint", "SetpointC", "degreesCelsius", True),
        ("binaryValue", 1, "ElementEnable", "ElementEnable", "", True),
        ("analogInput", 2, "ElementPower", "PowerKw", "kilowatts", False),
        ("analogInput", 3, "Deadband", "DeadbandC", "degreesCelsius", False),
        ("analogInput", 4, "RatedPower", "RatedPowerKw", "kilowatts", False),
    ],
}
OCCUPANCY_STATES = ["occupied", "unoccupied", "standby"]


class _Live:
    """Mixin: the present value is the model's at every read; faults gate every request."""

    field_site: FieldSite
    field_device: FieldDevice
    model_point: str

    async def _gate(self, write: bool) -> None:
        faults = self.field_device.faults
        if faults.silent:
            await asyncio.Event().wait()  # never answers: the client times out
        if faults.delay_s > 0:
            await asyncio.sleep(faults.delay_s)
        if write and faults.refuse_writes:
            raise PropertyError("writeAccessDenied")

    def _model_value(self) -> Any:
        self.field_site.sync()
        return self.field_site.read_point(self.field_device, self.model_point)


class LiveAnalogInput(_Live, AnalogInputObject):
    """An analog input whose present value is a model point (read only: write-access-denied)."""

    async def read_property(self, attr: int | str, index: int | None = None) -> Any:  # type: ignore[override]
        await self._gate(False)
        if attr in ("presentValue", 85):
            super().__setattr__("presentValue", float(self._model_value()))
        return await super().read_property(attr, index)

    async def write_property(self, attr: int | str, value: Any, index: int | None = None,  # type: ignore[override]
                             priority: int | None = None) -> None:
        await self._gate(True)
        raise PropertyError("writeAccessDenied")


class _LiveCommandable(_Live):
    """Commandable object: range check, then the priority array, then the model follows the present value."""

    lo: float | None = None
    hi: float | None = None

    def _check(self, value: Any) -> None:
        raise NotImplementedError

    def _push(self) -> None:
        raise NotImplementedError

    async def read_property(self, attr: int | str, index: int | None = None) -> Any:  # type: ignore[override]
        await self._gate(False)
        return await super().read_property(attr, index)  # type: ignore[misc]

    async def write_property(self, attr: int | str, value: Any, index: int | None = None,  # type: ignore[override]
                             priority: int | None = None) -> None:
        await self._gate(True)
        if attr in ("presentValue", 85) and not isinstance(value, Null):
            self._check(value)
        await super().write_property(attr, value, index, priority)  # type: ignore[misc]
        if attr in ("presentValue", 85):
            self._push()
            self.field_site.written.append((self.field_device.name, str(self.objectName), priority,
                                            None if isinstance(value, Null) else value))


class LiveAnalogValue(_LiveCommandable, AnalogValueObjectCmd):
    """A commandable analog value (setpoint) bound to a writable model point."""

    def _check(self, value: Any) -> None:
        number = float(value)
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            raise PropertyError("valueOutOfRange")

    def _push(self) -> None:
        self.field_site.sync()
        self.field_site.write_point(self.field_device, self.model_point, float(self.presentValue))


class LiveBinaryValue(_LiveCommandable, BinaryValueObjectCmd):
    """A commandable binary value (an enable) bound to a boolean model point."""

    def _check(self, value: Any) -> None:
        if str(value) not in ("active", "inactive", "0", "1", "True", "False"):
            raise PropertyError("valueOutOfRange")

    def _push(self) -> None:
        self.field_site.sync()
        self.field_site.write_point(self.field_device, self.model_point, str(self.presentValue) == "active")


class LiveMultiState(_Live, MultiStateValueObject):
    """A multi-state value held by the device itself (occupancy mode): 1..numberOfStates."""

    async def read_property(self, attr: int | str, index: int | None = None) -> Any:  # type: ignore[override]
        await self._gate(False)
        return await super().read_property(attr, index)

    async def write_property(self, attr: int | str, value: Any, index: int | None = None,  # type: ignore[override]
                             priority: int | None = None) -> None:
        await self._gate(True)
        if attr in ("presentValue", 85) and not 1 <= int(value) <= len(OCCUPANCY_STATES):
            raise PropertyError("valueOutOfRange")
        await super().write_property(attr, value, index, priority)


def _bind(obj: Any, **attrs: Any) -> None:
    """Plain Python attributes on a bacpypes3 object (its __setattr__ takes BACnet properties only)."""
    for key, value in attrs.items():
        object.__setattr__(obj, key, value)


def _objects(site: FieldSite, dev: FieldDevice) -> list[Any]:
    objs: list[Any] = []
    for obj_type, instance, name, point, units, _writable in OBJECTS[dev.kind]:
        common: dict[str, Any] = {"objectIdentifier": (obj_type, instance), "objectName": name}
        if obj_type == "analogInput":
            obj: Any = LiveAnalogInput(**common, presentValue=float(site.read_point(dev, point)), units=units)
        elif obj_type == "analogValue":
            spec = dev.model.spec(point)
            value = float(dev.model.read(point))
            obj = LiveAnalogValue(**common, presentValue=value, relinquishDefault=value, units=units,
                                  minPresValue=spec.minimum, maxPresValue=spec.maximum)
            _bind(obj, lo=spec.minimum, hi=spec.maximum)
        elif obj_type == "binaryValue":
            value = "active" if dev.model.read(point) else "inactive"
            obj = LiveBinaryValue(**common, presentValue=value, relinquishDefault=value)
        else:
            obj = LiveMultiState(**common, presentValue=1, numberOfStates=len(OCCUPANCY_STATES),
                                 stateText=OCCUPANCY_STATES)
        _bind(obj, field_site=site, field_device=dev, model_point=point)
        objs.append(obj)
    return objs


def start_bacnet(site: FieldSite, host: str, port_of: Callable[[FieldDevice], int]) -> dict[str, Application]:
    """One bacpypes3 application per BACnet device of the site, on host:port_of(device); needs a running loop."""
    apps: dict[str, Application] = {}
    for dev in site.devices.values():
        if dev.protocol != "bacnet":
            continue
        if dev.kind not in OBJECTS:
            raise ValueError(f"{dev.name}: no BACnet objects for {dev.kind}")
        args = argparse.Namespace(name=dev.name, instance=dev.device_id, vendoridentifier=999, network=0,
                                  address=f"{host}/32:{port_of(dev)}", foreign=None, bbmd=None, ttl=30)
        app = Application.from_args(args)
        for obj in _objects(site, dev):
            app.add_object(obj)
        apps[dev.name] = app
        _log.info("BACnet device %s (%s) on %s:%s", dev.device_id, dev.name, host, port_of(dev))
    return apps


def priority_slots(app: Application, obj_type: str, instance: int) -> dict[int, Any]:
    """The filled slots {priority: value} of a commandable object's priority array."""
    obj = app.get_object_id(ObjectIdentifier(f"{obj_type},{instance}"))
    if obj is None:
        raise KeyError(f"{obj_type},{instance}")
    slots: dict[int, Any] = {}
    for i, pv in enumerate(obj.priorityArray):
        if pv.null is None:
            value = getattr(pv, pv._choice)  # pylint: disable=protected-access
            slots[i + 1] = value if isinstance(value, (int, float)) else str(value)
    return slots
