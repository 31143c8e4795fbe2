"""Platform-driver glue shared by the simulated device interfaces.

`SimDevice` is mixed in first by every interface class of `volttron.driver.interfaces.<type>.<type>`:

    class EvCharger(SimDevice, BasicRevert, BaseInterface):
        DEVICE_KIND = "ev_charger"

The device config's `remote_config` carries `driver_type`, the optional `site` (default: the device topic's parent,
e.g. `demo` for `devices/demo/ev_charger`), `time_scale`, `seed`, `start_hour`, and the physics parameters of
dr_devices for that type. The registry CSV lists the points to publish with `Volttron Point Name`, `Units`,
`Writable`, and optional `Min` / `Max` limits for writes.

All devices of a site live in one `dr_devices.SiteModel` of the platform.driver process, so a write to any device
shows on the site meter at its next scrape.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

from dr_devices import ConfigError, DeviceModel, PointError, SiteModel, build_device, get_site
from dr_devices.points import PointSpec, Value, check_range, coerce
from pydantic import Field
from volttron.driver.base.config import PointConfig, RemoteConfig, empty_str_is
from volttron.driver.base.interfaces import BaseInterface, BaseRegister, BasicRevert, DriverInterfaceError

_log = logging.getLogger(__name__)

#: decimals of published float values
DECIMALS = 4


class SimRemoteConfig(RemoteConfig):
    """`remote_config` of a simulated device; physics parameters arrive as extra fields."""

    site: str | None = None
    time_scale: float = 1.0
    seed: int | None = None
    start_hour: float | None = None


class SimPointConfig(PointConfig):
    """A registry row; `Min` and `Max` bound what `set_point` accepts."""

    minimum: Annotated[float | None, empty_str_is(None)] = Field(default=None, alias="Min")
    maximum: Annotated[float | None, empty_str_is(None)] = Field(default=None, alias="Max")


class SimRegister(BaseRegister):
    def __init__(self, spec: PointSpec, read_only: bool, units: str, description: str,
                 minimum: float | None, maximum: float | None) -> None:
        super().__init__("bit" if spec.kind == "bool" else "byte", read_only, spec.name, units, description)
        self.python_type = spec.python_type
        self.minimum = minimum
        self.maximum = maximum


def _tighter(a: float | None, b: float | None, pick: Any) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return pick(a, b)


class SimDevice:
    """Interface behaviour of a simulated device; see the module docstring."""

    DEVICE_KIND: ClassVar[str] = ""
    REGISTER_CONFIG_CLASS = SimPointConfig
    INTERFACE_CONFIG_CLASS = SimRemoteConfig

    config: SimRemoteConfig
    point_map: dict[str, BaseRegister]

    def __init__(self, config: RemoteConfig, *args: Any, **kwargs: Any) -> None:
        if self.default_config is None:  # set by platform.driver from the config store entry interfaces/<type>
            self.default_config = {}
        BasicRevert.__init__(self, **kwargs)  # type: ignore[arg-type]
        BaseInterface.__init__(self, config, *args, **kwargs)  # type: ignore[arg-type]
        self.model: DeviceModel = build_device(self.DEVICE_KIND, dict(self.config.model_extra or {}),
                                               time_scale=self.config.time_scale, start_hour=self.config.start_hour,
                                               seed=self.config.seed)
        self.site: SiteModel | None = None
        self.device_topic: str | None = None

    # -- configuration ------------------------------------------------------------------------------------------
    def create_register(self, register_definition: SimPointConfig) -> SimRegister:
        name = register_definition.volttron_point_name
        kind = self.DEVICE_KIND
        spec = self.model.points.get(name)
        if spec is None:
            raise ConfigError(f"{kind} registry", f"{name!r} is not a point of this device;"
                              f" points: {', '.join(self.model.points)}")
        if register_definition.writable and not spec.writable:
            raise ConfigError(f"{kind} registry", f"{name} is read only on this device; set Writable to FALSE")
        minimum, maximum = register_definition.minimum, register_definition.maximum
        if spec.kind == "bool" and (minimum is not None or maximum is not None):
            raise ConfigError(f"{kind} registry", f"{name} is a boolean; Min and Max apply to numeric points only")
        minimum = _tighter(minimum, spec.minimum, max)
        maximum = _tighter(maximum, spec.maximum, min)
        if minimum is not None and maximum is not None and minimum > maximum:
            raise ConfigError(f"{kind} registry", f"{name} has Min {minimum:g} above Max {maximum:g}")
        if register_definition.writable and spec.kind == "float":
            default = float(self.model.defaults()[name])
            try:
                check_range(name, default, minimum, maximum, spec.units)
            except PointError as exc:
                raise ConfigError(f"{kind} registry", f"the configured value is outside the registry limits: {exc}"
                                  ) from None
        return SimRegister(spec, not register_definition.writable, register_definition.units or spec.units,
                           register_definition.notes, minimum, maximum)

    def insert_register(self, register: BaseRegister, base_topic: str) -> None:
        BaseInterface.insert_register(self, register, base_topic)  # type: ignore[arg-type]
        self._attach(base_topic)
        if not register.read_only:
            default = self.model.defaults()[register.point_name]
            self.set_default(f"{base_topic}/{register.point_name}", default)  # type: ignore[attr-defined]

    def _attach(self, device_topic: str) -> None:
        if self.device_topic is not None:
            if device_topic != self.device_topic:
                _log.warning("%s: registers for %s ignored; this interface simulates %s",
                             self.DEVICE_KIND, device_topic, self.device_topic)
            return
        site_name = self.config.site or site_of(device_topic)
        self.device_topic = device_topic
        self.site = get_site(site_name)
        self.site.add(device_topic, self.model)
        weakref.finalize(self, self.site.remove, device_topic, self.model)
        _log.info("simulated %s %s joined site %s (time_scale=%s)", self.DEVICE_KIND, device_topic, site_name,
                  self.model.time_scale)

    # -- reads --------------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.site is not None:
            self.site.sync()

    def _read(self, register: BaseRegister) -> Value:
        value = self.model.read(register.point_name)
        return round(value, DECIMALS) if isinstance(value, float) else value

    def get_point(self, topic: str, **kwargs: Any) -> Value:
        register = self.get_register_by_name(topic)  # type: ignore[attr-defined]
        self._sync()
        return self._read(register)

    def _get_multiple_points(self, topics: Iterable[str], **kwargs: Any) -> tuple[dict, dict]:
        self._sync()
        results: dict[str, Value] = {}
        errors: dict[str, str] = {}
        for topic in topics:
            try:
                results[topic] = self._read(self.get_register_by_name(topic))  # type: ignore[attr-defined]
            except (DriverInterfaceError, PointError) as exc:
                errors[topic] = str(exc)
        return results, errors

    # -- writes -------------------------------------------------------------------------------------------------
    def _set_point(self, topic: str, value: Any) -> Value:
        register = self.get_register_by_name(topic)  # type: ignore[attr-defined]
        name = register.point_name
        try:
            if register.read_only:
                raise PointError(f"{name}: read only")
            spec = self.model.spec(name)
            typed = coerce(spec, value)
            if spec.kind == "float":
                check_range(name, float(typed), register.minimum, register.maximum, register.units)
            self._sync()  # the time before the write runs with the old value
            self.model.write(name, typed)
        except PointError as exc:
            raise PointError(f"{self.device_topic or topic}: {exc}; nothing was changed") from None
        _log.info("%s set to %r", topic, typed)
        return self._read(register)

    def revert_point(self, topic: str, **kwargs: Any) -> None:
        """Return a writable point to its configured value; read-only points have nothing to revert."""
        if self.get_register_by_name(topic).read_only:  # type: ignore[attr-defined]
            return
        BasicRevert.revert_point(self, topic)  # type: ignore[arg-type]


def site_of(device_topic: str) -> str:
    """`demo` for `devices/demo/ev_charger`: the device topic's parent without the `devices` root."""
    parts = [p for p in device_topic.split("/") if p]
    if parts and parts[0] == "devices":
        parts = parts[1:]
    return "/".join(parts[:-1]) or (parts[0] if parts else "default")
