"""Smart panel: named circuits with nominal loads, a critical flag and a switch per circuit."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import DeviceModel
from .params import build_params, require
from .points import ConfigError, PointError, PointSpec, Value

_CIRCUIT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class Circuit:
    name: str
    nominal_kw: float
    critical: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        require(bool(_CIRCUIT_NAME.match(self.name)),
                f"panel circuit name {self.name!r} must be CamelCase letters and digits (e.g. Lighting)")
        require(self.nominal_kw >= 0, f"panel circuit {self.name}: nominal_kw must be >= 0")
        require(self.enabled or not self.critical, f"panel circuit {self.name}: a critical circuit must start enabled")


@dataclass(frozen=True)
class PanelParams:
    circuits: tuple[Circuit, ...] = ()

    def __post_init__(self) -> None:
        require(len(self.circuits) > 0, "panel.circuits must list at least one circuit")
        names = [c.name for c in self.circuits]
        require(len(set(names)) == len(names), "panel.circuits: circuit names must be unique")


def panel_params(data: Mapping[str, Any]) -> PanelParams:
    """PanelParams from a config mapping whose `circuits` is a list of {name, nominal_kw, critical, enabled}."""
    unknown = sorted(set(data) - {"circuits"})
    if unknown:
        raise ConfigError("panel", f"unknown parameter(s) {', '.join(unknown)}; known: circuits")
    raw = data.get("circuits", ())
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise ConfigError("panel.circuits", f"expected a list of circuits, got {raw!r}")
    circuits = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ConfigError(f"panel.circuits[{index}]", f"expected an object, got {item!r}")
        circuits.append(build_params(Circuit, item, f"panel.circuits[{index}]"))
    return PanelParams(circuits=tuple(circuits))


class Panel(DeviceModel):
    """Each enabled circuit draws its nominal load; the panel refuses to switch off a critical circuit."""

    kind = "panel"

    def __init__(self, params: PanelParams, **clock: Any) -> None:
        super().__init__(**clock)
        self.p = params
        self.circuits = {c.name: c for c in params.circuits}
        self.enabled = {c.name: c.enabled for c in params.circuits}
        self._define(PointSpec("PowerKw", "float", lambda: self.power_kw, units="kW"))
        for circuit in params.circuits:
            name = circuit.name
            self._define(PointSpec(f"{name}PowerKw", "float", lambda n=name: self.circuit_kw(n), units="kW"))
            self._define(PointSpec(f"{name}Enable", "bool", lambda n=name: self.enabled[n],
                                   lambda v, n=name: self._set_enable(n, bool(v))))
            self._define(PointSpec(f"{name}Critical", "bool", lambda c=circuit.critical: c))

    def circuit_kw(self, name: str) -> float:
        return self.circuits[name].nominal_kw if self.enabled[name] else 0.0

    @property
    def power_kw(self) -> float:
        return sum(self.circuit_kw(name) for name in self.circuits)

    def defaults(self) -> dict[str, Value]:
        return {f"{c.name}Enable": c.enabled for c in self.p.circuits}

    def _set_enable(self, name: str, on: bool) -> None:
        if not on and self.circuits[name].critical:
            raise PointError(f"{name}Enable: circuit {name} is critical and cannot be switched off")
        self.enabled[name] = on

    def _step(self, dt_s: float) -> None:
        """Circuit loads are constant while their switch does not change."""
