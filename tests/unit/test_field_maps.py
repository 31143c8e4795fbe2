"""Field devices without a network: register maps, the field site's raw Modbus reads and writes, faults, and
the `field` site's registries (they must undo exactly the scaling the device maps apply)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dr_tools.devices import maps
from dr_tools.devices.fieldsite import FieldConfigError, FieldSite, Faults, RangeError, ReadOnlyError
from dr_tools.devices.siteconfig import device_configs

ROOT = Path(__file__).resolve().parents[2]
FIELD = ROOT / "platform-config" / "sites" / "field"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def site(clock: Clock | None = None) -> FieldSite:
    return FieldSite(json.loads((FIELD / "devices.json").read_text()), clock=clock or Clock())


def read_reg(fs: FieldSite, unit: int, name: str) -> int:
    dmap = fs.units[unit].dmap
    reg = dmap.by_name[name]
    words = fs.modbus_read(unit, reg.table, reg.address, reg.count)
    assert words is not None
    return maps.join_words(reg, words)


@pytest.mark.parametrize("name,dmap", [("battery", maps.battery_map(5.0)), ("meter", maps.meter_map()),
                                       ("ev_charger", maps.ev_charger_map(7.2))])
def test_the_site_registries_are_the_device_maps(name, dmap):
    with (FIELD / "driver" / "registry" / f"{name}.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == maps.registry_rows(dmap)


def test_scaling_round_trips_and_signs():
    dmap = maps.battery_map(5.0)
    w = dmap.by_name["W"]
    assert maps.to_raw(dmap, w, 2.0) == -2000            # model +2 kW charging = inverter -2000 W (export +)
    assert maps.from_raw(dmap, w, -2000) == pytest.approx(2.0)
    soc = dmap.by_name["SoC"]
    assert maps.to_raw(dmap, soc, 80.04) == 800           # Pct_SF = -1
    ev = maps.ev_charger_map(7.2)
    limit = ev.by_name["CurrentLimitDeciA"]
    assert maps.to_raw(ev, limit, 3.0) == 125             # 12.5 A at 240 V
    assert maps.to_raw(dmap, w, 1e9) == -0x8000 and maps.to_raw(dmap, w, -1e9) == 0x7FFF  # clamped to int16
    assert maps.words(dmap.by_name["SunS"], 0x53756E53) == [0x5375, 0x6E53]
    assert maps.join_words(w, [0xFFFF]) == -1 and maps.join_words(soc, [0xFFFF]) == 0xFFFF


def test_writes_outside_the_register_limits_or_to_read_only_registers_are_refused():
    ev = maps.ev_charger_map(7.2)
    with pytest.raises(maps.RangeError):
        maps.check_write(ev.by_name["CurrentLimitDeciA"], 301)
    with pytest.raises(maps.ReadOnlyError):
        maps.check_write(ev.by_name["ActivePowerW"], 1)
    maps.check_write(ev.by_name["CurrentLimitDeciA"], 300)


def test_maps_do_not_overlap():
    with pytest.raises(ValueError, match="overlaps"):
        maps.DeviceMap("x", [maps.Reg("A", 0, "uint32"), maps.Reg("B", 1)])


def test_modbus_reads_come_from_the_physics_and_the_meter_sees_every_device():
    clock = Clock()
    fs = site(clock)
    assert read_reg(fs, 1, "SunS") == 0x53756E53 and read_reg(fs, 1, "ID_1") == 1
    meter_w = read_reg(fs, 2, "W")
    assert meter_w == pytest.approx(fs.model.net_power_kw() * 1000, abs=1)
    assert read_reg(fs, 2, "WphA") + read_reg(fs, 2, "WphB") + read_reg(fs, 2, "WphC") == pytest.approx(meter_w, abs=3)
    assert fs.modbus_read(2, "holding", 39990, 2) is None  # unmapped: ILLEGAL DATA ADDRESS
    assert fs.modbus_read(9, "holding", 40000, 1) is None  # no such unit
    ev_before = read_reg(fs, 3, "ActivePowerW")
    limit = fs.units[3].dmap.by_name["CurrentLimitDeciA"]
    fs.modbus_write(3, limit.address, [125])
    assert read_reg(fs, 3, "ActivePowerW") == 3000 and ev_before == 7200
    assert read_reg(fs, 2, "W") == pytest.approx(meter_w - 4200, abs=60)
    clock.now += 3600
    assert read_reg(fs, 3, "SessionEnergyWh") == pytest.approx(3000, abs=5)


def test_a_refused_write_changes_nothing():
    fs = site()
    dmap = fs.units[1].dmap
    wset = dmap.by_name["WSet"]
    with pytest.raises(RangeError):
        fs.modbus_write(1, wset.address, [(-6000) & 0xFFFF])      # beyond 5 kW
    with pytest.raises(ReadOnlyError):
        fs.modbus_write(1, dmap.by_name["W"].address, [1])
    with pytest.raises(LookupError):
        fs.modbus_write(1, wset.address - 100, [1])
    assert fs.devices["battery"].model.read("PowerSetpointKw") == 0.0
    fs.modbus_write(1, wset.address, [(-2000) & 0xFFFF])           # charge 2 kW (inverter import)
    assert fs.devices["battery"].model.read("PowerSetpointKw") == pytest.approx(2.0)
    fs.modbus_write(1, dmap.by_name["WSetEna"].address, [0])        # setpoint control off: back to 0
    assert fs.devices["battery"].model.read("PowerSetpointKw") == 0.0
    with pytest.raises(RangeError):
        fs.modbus_write(1, wset.address, [1000])


def test_faults_are_validated():
    faults = Faults()
    faults.update({"silent": True, "delayS": 2})
    assert faults.as_dict() == {"silent": True, "refuseWrites": False, "delayS": 2.0}
    for bad in ({"silent": "yes"}, {"delayS": -1}, {"delayS": 1e9}, {"delayS": True}, {"explode": True}):
        with pytest.raises(FieldConfigError):
            faults.update(bad)


@pytest.mark.parametrize("mutate,key", [
    (lambda c: c.pop("devices"), "devices"),
    (lambda c: c["devices"][0].update(unitId=2), "unitId"),
    (lambda c: c["devices"][0].update(protocol="lonworks"), "protocol"),
    (lambda c: c["devices"][0].update(type="hvac", params={}), "type"),
    (lambda c: c["devices"][1].update(params={"base_load_kw": -1}), "params"),
    (lambda c: c["devices"][1].update(name="battery"), "name"),
])
def test_a_bad_devices_json_is_refused_naming_the_key(mutate, key):
    config = json.loads((FIELD / "devices.json").read_text())
    mutate(config)
    with pytest.raises(FieldConfigError, match=key):
        FieldSite(config, clock=Clock())


def test_device_configs_point_at_the_served_ports():
    ports = {"host": "127.0.0.1", "modbus": 15020, "bacnet": {"thermostat": 15021, "water_heater": 15022}}
    configs = device_configs(FIELD / "driver", ports, 15019)
    assert set(configs) == {f"devices/field/{d}" for d in ("battery", "meter", "ev_charger", "thermostat",
                                                          "water_heater")}
    assert configs["devices/field/meter"]["remote_config"]["port"] == 15020
    assert configs["devices/field/meter"]["remote_config"]["plugins"] == ["scaling"]
    assert configs["devices/field/water_heater"]["remote_config"]["device_address"] == "127.0.0.1:15022"
    assert configs["devices/field/thermostat"]["remote_config"]["bacnet_port"] == 15019
