"""Build a device model from its type name and a plain parameter mapping (a device config)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .battery import Battery, BatteryParams
from .ev_charger import EvCharger, EvChargerParams
from .hvac import Hvac, HvacParams
from .model import DeviceModel
from .panel import Panel, panel_params
from .params import build_params
from .points import ConfigError
from .site import SiteMeter, SiteMeterParams
from .water_heater import WaterHeater, WaterHeaterParams


def _simple(params_cls: type, model_cls: type) -> Callable[..., DeviceModel]:
    def make(data: Mapping[str, Any], **clock: Any) -> DeviceModel:
        return model_cls(build_params(params_cls, data, model_cls.kind), **clock)
    return make


DEVICE_TYPES: dict[str, Callable[..., DeviceModel]] = {
    "ev_charger": _simple(EvChargerParams, EvCharger),
    "water_heater": _simple(WaterHeaterParams, WaterHeater),
    "hvac": _simple(HvacParams, Hvac),
    "panel": lambda data, **clock: Panel(panel_params(data), **clock),
    "battery": _simple(BatteryParams, Battery),
    "site_meter": _simple(SiteMeterParams, SiteMeter),
}


def build_device(kind: str, params: Mapping[str, Any], *, time_scale: float = 1.0, start_hour: float | None = None,
                 seed: int | None = None) -> DeviceModel:
    """A new model of device type `kind`; ConfigError names any bad parameter."""
    try:
        make = DEVICE_TYPES[kind]
    except KeyError:
        raise ConfigError("type", f"unknown device type {kind!r}; known: {', '.join(sorted(DEVICE_TYPES))}") from None
    return make(params, time_scale=time_scale, start_hour=start_hour, seed=seed)
