"""ven.json validation: the shipped site configs parse; every mistake names its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dr_ven_load_control.config import ConfigError, parse_config

SITES = Path(__file__).resolve().parents[2] / "platform-config" / "sites"


@pytest.mark.parametrize("site", ["demo", "office"])
def test_shipped_site_configs_parse_in_the_seeds_order(site):
    cfg = parse_config(json.loads((SITES / site / "ven.json").read_text()))
    kinds = [load.kind for load in sorted(cfg.loads, key=lambda load: load.priority)]
    order = ["ev_charger", "water_heater", "hvac", "circuit", "battery"]
    assert kinds == sorted(kinds, key=order.index)
    assert cfg.meter_path == f"{site}/meter"
    assert any(load.critical for load in cfg.loads)


def test_the_demo_devices_and_points_match_the_driver_registries():
    cfg = parse_config(json.loads((SITES / "demo" / "ven.json").read_text()))
    for load in cfg.loads:
        device = json.loads((SITES / "demo" / "driver" / "devices" / f"{load.path}.json").read_text())
        registry = SITES / "demo" / "driver" / "registry" / device["registry_config"].split("/")[-1]
        names = {line.split(",")[0] for line in registry.read_text().splitlines()[1:]}
        for role, point in load.points.items():
            if role != "outdoor":
                assert point in names, f"{load.name}: {role} -> {point} is not in {registry.name}"


BASE = {"venId": "v1", "meter": {"path": "demo/meter"},
        "loads": [{"kind": "ev_charger", "path": "demo/ev_charger"}]}


@pytest.mark.parametrize("change,field", [
    ({"venId": "bad id!"}, "venId"),
    ({"meter": {}}, "meter.path"),
    ({"loads": []}, "loads"),
    ({"loads": [{"kind": "toaster", "path": "x/y"}]}, "loads[0].kind"),
    ({"loads": [{"kind": "water_heater", "path": "demo/wh", "minTankTempC": "hot"}]}, "loads[0].minTankTempC"),
    ({"loads": [{"kind": "hvac", "path": "demo/hvac", "maxOffsetC": -1}]}, "loads[0].maxOffsetC"),
    ({"loads": [{"kind": "panel", "path": "demo/panel"}]}, "loads[0].circuits"),
    ({"loads": [{"kind": "circuit", "path": "demo/panel"}]}, "loads[0].circuit"),
    ({"loads": [{"kind": "ev_charger", "path": "a/b", "points": {"nozzle": "X"}}]}, "loads[0].points.nozzle"),
    ({"loads": [{"kind": "ev_charger", "path": "a/b"}, {"kind": "ev_charger", "path": "a/c"}]}, "duplicate"),
    ({"restoreMethod": "pray"}, "restoreMethod"),
    ({"telemetryPeriodS": 0}, "telemetryPeriodS"),
    ({"baselineWindowS": 4000}, "baselineWindowS"),
    ({"speed": 3}, "speed"),
])
def test_a_bad_value_names_its_field(change, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_config({**BASE, **change})


def test_defaults_and_path_normalisation():
    cfg = parse_config({**BASE, "loads": [{"kind": "ev_charger", "path": "/devices/demo/ev_charger/"}]})
    assert cfg.loads[0].path == "demo/ev_charger" and cfg.loads[0].name == "ev_charger"
    assert cfg.loads[0].priority == 10 and cfg.telemetry_period_s == 5.0 and cfg.restore_method == "set"
    assert cfg.margin_kw(10.0) == pytest.approx(0.2) and cfg.margin_kw(1.0) == pytest.approx(0.05)


def test_not_an_object():
    with pytest.raises(ConfigError, match="expected an object"):
        parse_config([1, 2])
