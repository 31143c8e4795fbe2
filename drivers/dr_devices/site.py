"""The site model: every simulated device of one site, advanced together, and the site meter that sums them."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .model import DeviceModel
from .params import require
from .points import PointSpec, Value

Clock = Callable[[], float]


@dataclass(frozen=True)
class SiteMeterParams:
    base_load_kw: float = 0.5

    def __post_init__(self) -> None:
        require(self.base_load_kw >= 0, "site_meter.base_load_kw must be >= 0")


class SiteMeter(DeviceModel):
    """Meters the whole site: PowerKw = base load + the power of every simulated device of the site.

    The meter's own contribution to the site (its `power_kw`) is the base load: the loads nobody simulates.
    """

    kind = "site_meter"

    def __init__(self, params: SiteMeterParams, **clock: Any) -> None:
        super().__init__(**clock)
        self.p = params
        self.site: SiteModel | None = None
        self._define(PointSpec("PowerKw", "float", lambda: self.net_power_kw, units="kW"))
        self._define(PointSpec("BaseLoadKw", "float", lambda: params.base_load_kw, units="kW"))

    @property
    def power_kw(self) -> float:
        return self.p.base_load_kw

    @property
    def net_power_kw(self) -> float:
        return self.site.net_power_kw() if self.site is not None else self.power_kw

    def defaults(self) -> dict[str, Value]:
        return {}

    def _step(self, dt_s: float) -> None:
        """The base load is constant."""


class SiteModel:
    """All simulated devices of one site, keyed by device topic; `sync` advances them all to the clock's now."""

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.devices: dict[str, DeviceModel] = {}

    def add(self, key: str, model: DeviceModel) -> None:
        """Add (or replace) the device `key`; it starts counting from now."""
        self.sync()
        self.devices[key] = model
        model.sync(self.clock())
        if isinstance(model, SiteMeter):
            model.site = self

    def remove(self, key: str, model: DeviceModel) -> None:
        """Remove device `key` if it is still `model` (a replacement registered since stays)."""
        if self.devices.get(key) is model:
            del self.devices[key]

    def sync(self) -> None:
        now = self.clock()
        for model in self.devices.values():
            model.sync(now)

    def net_power_kw(self) -> float:
        return sum(model.power_kw for model in self.devices.values())

    def device_powers(self) -> dict[str, float]:
        return {key: model.power_kw for key, model in self.devices.items()}


_SITES: dict[str, SiteModel] = {}


def get_site(name: str, clock: Clock = time.monotonic) -> SiteModel:
    """The process-wide site model `name`, created on first use with `clock`."""
    site = _SITES.get(name)
    if site is None:
        site = _SITES[name] = SiteModel(name, clock)
    return site


def forget_sites() -> None:
    """Drop every site model of this process."""
    _SITES.clear()
