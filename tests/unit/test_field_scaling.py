"""The `scaling` plugin of field_drivers/ (registry Scale and Scale Factor Point for the stock Modbus interface),
on the checkout's file, against the raw reads and writes the stock interface would do. The stock interface
module is stood in for (importing it monkey-patches sockets with gevent)."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "field_drivers" / "volttron" / "driver" / "plugins" / "interfaces" / "modbus" / "scaling.py"


class Modbus:
    """Stand-in for volttron.driver.interfaces.modbus.modbus.Modbus: raw registers in a dict."""

    interface_callable_methods: set[str] = set()
    INTERFACE_CONFIG_CLASS = type("RemoteConfig", (BaseModel,), {})
    REGISTER_CONFIG_CLASS = type("PointConfig", (BaseModel,), {})

    def __init__(self, raw: dict[str, int]) -> None:
        self.raw = dict(raw)
        self.reads: list[list[str]] = []

    def prepare_registry_config(self, rows: list[dict], remote_config: Any = None) -> list[dict]:
        return rows

    def _get_multiple_points(self, topics, **kwargs):
        topics = list(topics)
        self.reads.append(topics)
        return {t: self.raw[t] for t in topics if t in self.raw}, {t: "no such point" for t in topics
                                                                   if t not in self.raw}

    def _write_points(self, topics_values):
        for topic, value in topics_values:
            assert isinstance(value, int), "the stock interface writes the register's integer"
            self.raw[topic] = value
        return dict(topics_values), {}


@pytest.fixture
def plugin(monkeypatch):
    stub = types.ModuleType("volttron.driver.interfaces.modbus.modbus")
    stub.Modbus = Modbus
    monkeypatch.setitem(sys.modules, "volttron.driver.interfaces.modbus.modbus", stub)
    spec = importlib.util.spec_from_file_location("field_scaling_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROWS = [
    {"Volttron Point Name": "PowerKw", "Scale": "-0.001", "Scale Factor Point": "W_SF"},
    {"Volttron Point Name": "W_SF", "Scale": "", "Scale Factor Point": ""},
    {"Volttron Point Name": "PowerLimitKw", "Scale": "0.024"},
    {"Volttron Point Name": "WSetEna"},
]
P = "devices/field/battery/"


def make(plugin, raw: dict[str, int]) -> Modbus:
    interface = Modbus({P + k: v for k, v in raw.items()})
    plugin.INTERFACE_PLUGINS[0].plug_into(interface)
    interface.prepare_registry_config(ROWS, None)
    return interface


def test_reads_are_scaled_by_multiplier_and_scale_factor(plugin):
    iface = make(plugin, {"PowerKw": -250, "W_SF": 1, "PowerLimitKw": 125, "WSetEna": 1})
    values, errors = iface._get_multiple_points([P + "PowerKw", P + "PowerLimitKw", P + "WSetEna"])
    assert errors == {}
    assert values == {P + "PowerKw": pytest.approx(2.5), P + "PowerLimitKw": pytest.approx(3.0), P + "WSetEna": 1}
    assert P + "W_SF" in iface.reads[0]            # read along, not published unless asked for


def test_writes_are_divided_back_and_rounded_to_the_register_integer(plugin):
    iface = make(plugin, {"PowerKw": 0, "W_SF": 0, "PowerLimitKw": 300})
    results, errors = iface._write_points([(P + "PowerKw", 2.0), (P + "PowerLimitKw", 3.01)])
    assert errors == {}
    assert iface.raw[P + "PowerKw"] == -2000 and iface.raw[P + "PowerLimitKw"] == 125
    assert results == {P + "PowerKw": pytest.approx(2.0), P + "PowerLimitKw": pytest.approx(3.0)}
    assert [P + "W_SF"] in [[t for t in r if t.endswith("W_SF")] for r in iface.reads]   # SF read before writing
    _, errors = iface._write_points([(P + "PowerLimitKw", "lots")])
    assert "not a number" in errors[P + "PowerLimitKw"]


def test_bad_scaling_columns_are_refused_naming_the_point(plugin):
    with pytest.raises(ValueError, match="PowerKw: Scale Factor Point Nope"):
        plugin.parse_scaling([{"Volttron Point Name": "PowerKw", "Scale Factor Point": "Nope"}])
    with pytest.raises(ValueError, match="X: Scale"):
        plugin.parse_scaling([{"Volttron Point Name": "X", "Scale": "0"}])
    with pytest.raises(ValueError, match="X: Scale"):
        plugin.parse_scaling([{"Volttron Point Name": "X", "Scale": "ten"}])
