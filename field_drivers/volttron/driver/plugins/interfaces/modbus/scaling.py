"""Plugin `scaling` for VOLTTRON's stock Modbus interface: engineering units from raw registers.

The stock `modbus` interface (volttron-lib-modbus-driver) reads and writes raw register values; real equipment
scales them (SunSpec scale-factor registers, fixed multipliers such as 0.1 A or W -> kW). This plugin, loaded by
platform.driver's own plugin hook when a device config says `"plugins": ["scaling"]`, adds two optional
registry columns and converts on the way in and out, so that agents see engineering units:

    value = raw * 10 ** <value of the Scale Factor Point> * <Scale>

* `Scale`: a multiplier (default 1): 0.001 for W -> kW, -0.001 when the device counts the other way round.
* `Scale Factor Point`: the Volttron Point Name of a register holding a SunSpec scale factor (int16).

A write is divided back and rounded to the register's integer; the device itself refuses what it cannot take.
Scale factors are read with the points they scale and kept (they are constants on SunSpec devices); a write
before any read reads them first. Rows without either column pass through unchanged.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable

from volttron.driver.base.plugin import InterfacePlugin
from volttron.driver.interfaces.modbus.modbus import Modbus

_log = logging.getLogger(__name__)

POINT_KEYS = ("Volttron Point Name", "volttron_point_name")
SCALE_KEYS = ("Scale", "scale")
SF_KEYS = ("Scale Factor Point", "scale_factor_point")


def _cell(row: dict, keys: Iterable[str]) -> Any:
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip() != "":
            return value
    return None


def parse_scaling(rows: list[dict]) -> dict[str, tuple[float, str | None]]:
    """{point name: (multiplier, scale-factor point or None)} for the rows that scale; ValueError names the row."""
    scaling: dict[str, tuple[float, str | None]] = {}
    names = {str(_cell(r, POINT_KEYS)).strip() for r in rows if _cell(r, POINT_KEYS) is not None}
    for row in rows:
        name = _cell(row, POINT_KEYS)
        scale, sf_point = _cell(row, SCALE_KEYS), _cell(row, SF_KEYS)
        if name is None or (scale is None and sf_point is None):
            continue
        name = str(name).strip()
        try:
            mult = 1.0 if scale is None else float(scale)
        except ValueError:
            raise ValueError(f"{name}: Scale {scale!r} is not a number") from None
        if not math.isfinite(mult) or mult == 0:
            raise ValueError(f"{name}: Scale must be a finite non-zero number")
        sf = None if sf_point is None else str(sf_point).strip()
        if sf is not None and sf not in names:
            raise ValueError(f"{name}: Scale Factor Point {sf} is not a point of this registry")
        scaling[name] = (mult, sf)
    return scaling


class ModbusScaling(InterfacePlugin):
    """Scales the stock Modbus interface's points by registry `Scale` and `Scale Factor Point` columns."""

    EXTENDED_CLASS = Modbus
    PLUGIN_METHODS = {"prepare_registry_config", "_get_multiple_points", "_write_points"}

    @classmethod
    def plug_into(cls, interface: Modbus) -> None:
        """Attach the plugin, keeping the stock raw read for scale factors needed before a write."""
        interface._dr_raw_read = interface._get_multiple_points  # pylint: disable=protected-access
        super().plug_into(interface)

    def prepare_registry_config(self, registry_config: list[dict], remote_config: Any = None,
                                overridden: Any = None) -> list[dict]:
        """Record each row's scaling (by point name) before the stock validation drops the extra columns."""
        self._dr_scaling = parse_scaling(registry_config)  # pylint: disable=attribute-defined-outside-init
        if not hasattr(self, "_dr_sf_values"):
            self._dr_sf_values: dict[str, int] = {}  # pylint: disable=attribute-defined-outside-init
        return overridden(registry_config, remote_config)

    # -- helpers (attached as plain functions below) -----------------------------------------------------------
    def _dr_scale_of(self, topic: str) -> tuple[float, str | None] | None:
        scaling = getattr(self, "_dr_scaling", {})
        return scaling.get(topic.rsplit("/", 1)[-1])

    def _get_multiple_points(self, topics: Iterable[str], overridden: Any = None, **kwargs: Any
                             ) -> tuple[dict, dict]:
        """Raw reads (plus the scale factors they need) -> engineering units."""
        topics = list(topics)
        sf_values: dict[str, int] = getattr(self, "_dr_sf_values", {})
        needed: set[str] = set()
        for topic in topics:
            scale = ModbusScaling._dr_scale_of(self, topic)
            if scale and scale[1]:
                needed.add(topic.rsplit("/", 1)[0] + "/" + scale[1])
        extra = [t for t in needed if t not in topics]
        results, errors = overridden(topics + extra, **kwargs)
        for topic in needed:
            if isinstance(results.get(topic), int):
                sf_values[topic] = results[topic]
        self._dr_sf_values = sf_values  # pylint: disable=attribute-defined-outside-init
        out: dict[str, Any] = {}
        for topic, raw in results.items():
            if topic in extra:
                continue
            scale = ModbusScaling._dr_scale_of(self, topic)
            if scale is None or isinstance(raw, (bool, str, list)) or raw is None:
                out[topic] = raw
                continue
            factor = ModbusScaling._dr_factor(self, topic, scale)
            if factor is None:
                errors[topic] = f"scale factor {scale[1]} not read"
            else:
                out[topic] = round(raw * factor, 6) + 0.0  # no -0.0
        return out, {t: e for t, e in errors.items() if t not in extra}

    def _dr_factor(self, topic: str, scale: tuple[float, str | None]) -> float | None:
        mult, sf_point = scale
        if sf_point is None:
            return mult
        sf = getattr(self, "_dr_sf_values", {}).get(topic.rsplit("/", 1)[0] + "/" + sf_point)
        if sf is None or not -10 <= sf <= 10:
            return None
        return mult * 10.0 ** sf

    def _write_points(self, topics_values: list[tuple[str, Any]], overridden: Any = None) -> tuple[dict, dict]:
        """Engineering units -> raw integers (rounded), written by the stock interface; results scaled back."""
        pending: list[tuple[str, Any]] = []
        factors: dict[str, float] = {}
        errors: dict[str, str] = {}
        missing_sf = [t for t, _ in topics_values
                      if (s := ModbusScaling._dr_scale_of(self, t)) and s[1]
                      and ModbusScaling._dr_factor(self, t, s) is None]
        if missing_sf:
            ModbusScaling._get_multiple_points(self, missing_sf, overridden=self._dr_raw_read)
        for topic, value in topics_values:
            scale = ModbusScaling._dr_scale_of(self, topic)
            if scale is None:
                pending.append((topic, value))
                continue
            factor = ModbusScaling._dr_factor(self, topic, scale)
            try:
                number = float(value)
            except (TypeError, ValueError):
                errors[topic] = f"value {value!r} is not a number"
                continue
            if factor is None or not math.isfinite(number):
                errors[topic] = f"cannot scale {value!r}: scale factor {scale[1]} not read"
                continue
            factors[topic] = factor
            pending.append((topic, int(round(number / factor))))
        results, write_errors = overridden(pending) if pending else ({}, {})
        errors.update(write_errors)
        return {t: (round(v * factors[t], 6) if t in factors and isinstance(v, (int, float)) else v)
                for t, v in results.items()}, errors


INTERFACE_PLUGINS = [ModbusScaling]
