"""The simulated devices as platform-driver interfaces (volttron-lib-base-driver, no platform): discovery, the
demo and office site configs, set/revert semantics and limits, the shared site model seen by the meter."""
from __future__ import annotations

import csv
import gc
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from dr_devices import ConfigError, PointError, forget_sites, get_site
from dr_devices_driver.interface import site_of
from volttron.driver.base.config import RemoteConfig
from volttron.driver.base.interfaces import BaseInterface

ROOT = Path(__file__).resolve().parents[2]

TYPES = ["ev_charger", "water_heater", "hvac", "panel", "battery", "site_meter"]
SITES = ROOT / "platform-config" / "sites"
DEMO_DEVICES = {"ev_charger", "water_heater", "hvac", "panel", "battery", "meter"}
OFFICE_DEVICES = {"ev_charger_1", "ev_charger_2", "hvac_1", "hvac_2", "panel", "battery", "meter"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    forget_sites()
    yield FakeClock()
    forget_sites()


def build(device_topic: str, remote_config: dict[str, Any], rows: list[dict[str, str]]) -> Any:
    """What platform.driver's DriverAgent does: find the class, construct it, create and insert registers."""
    config = RemoteConfig(**remote_config)
    klass = BaseInterface.get_interface_subclass(config.driver_type)
    interface = klass(config, None)
    for row in rows:
        register = interface.create_register(interface.REGISTER_CONFIG_CLASS(**row))
        interface.insert_register(register, device_topic)
    interface.finalize_setup(initial_setup=True)
    return interface


def load_site(name: str, clock: FakeClock) -> dict[str, Any]:
    get_site(name, clock)
    folder = SITES / name / "driver"
    interfaces = {}
    for path in sorted((folder / "devices" / name).glob("*.json")):
        config = json.loads(path.read_text())
        registry = folder / config["registry_config"].removeprefix("config://")
        with registry.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        interfaces[path.stem] = build(f"devices/{name}/{path.stem}", config["remote_config"], rows)
    return interfaces


def scrape(interface: Any) -> dict[str, Any]:
    results, errors = interface.get_multiple_points(interface.get_register_names())
    assert errors == {}
    return {topic.rsplit("/", 1)[1]: value for topic, value in results.items()}


# -- discovery ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("driver_type", TYPES)
def test_each_interface_is_found_the_way_platform_driver_finds_it(driver_type):
    klass = BaseInterface.get_interface_subclass(driver_type)
    assert BaseInterface in klass.__bases__
    assert klass.DEVICE_KIND == driver_type
    assert klass.__module__ == f"volttron.driver.interfaces.{driver_type}.{driver_type}"
    assert Path(sys.modules[klass.__module__].__file__).is_relative_to(ROOT / "drivers")  # the checkout's code
    assert not klass.__abstractmethods__


def test_namespace_folders_have_no_init_files():
    for folder in ("volttron", "volttron/driver", "volttron/driver/interfaces"):
        assert not (ROOT / "drivers" / folder / "__init__.py").exists()


# -- the site configs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("site, devices", [("demo", DEMO_DEVICES), ("office", OFFICE_DEVICES)])
def test_site_configs_build_every_device_and_publish_all_every_5_s(site, devices, clock):
    folder = SITES / site / "driver"
    main = json.loads((folder / "config.json").read_text())
    assert main["publish_depth_first_all"] is True
    for path in (folder / "devices" / site).glob("*.json"):
        config = json.loads(path.read_text())
        assert config["interval"] == 5 and config["all_publish_interval"] == 5
        assert config["publish_depth_first_all"] is True
        assert config["remote_config"]["site"] == site
    interfaces = load_site(site, clock)
    assert set(interfaces) == devices
    values = {name: scrape(interface) for name, interface in interfaces.items()}
    device_sum = sum(v["PowerKw"] for name, v in values.items() if name != "meter")
    assert values["meter"]["PowerKw"] == pytest.approx(values["meter"]["BaseLoadKw"] + device_sum, abs=1e-3)
    for name, interface in interfaces.items():
        model_points = set(interface.model.points)
        assert {t.rsplit("/", 1)[1] for t in interface.get_register_names()} == model_points, name


def test_demo_site_makes_a_2_kw_shed_feasible(clock):
    interfaces = load_site("demo", clock)
    values = {name: scrape(interface) for name, interface in interfaces.items()}
    ev = values["ev_charger"]
    assert ev["PluggedIn"] is True and ev["PowerKw"] == 7.2 and ev["EnergyNeededKwh"] > 20
    assert ev["DepartureHours"] > 4
    assert values["panel"]["FridgeCritical"] is True
    assert [k for k, v in values["panel"].items() if k.endswith("Critical") and v] == ["FridgeCritical"]
    assert {k[:-len("Enable")] for k in values["panel"] if k.endswith("Enable")} == {
        "Lighting", "Kitchen", "Laundry", "Fridge"}
    assert values["hvac"]["OutdoorTempC"] > 30 and values["hvac"]["PowerKw"] > 0.5
    assert values["battery"]["CapacityKwh"] == 13.5 and values["battery"]["MaxPowerKw"] == 5
    assert values["water_heater"]["RatedPowerKw"] == 4.5 and values["water_heater"]["PowerKw"] == 4.5
    assert values["meter"]["PowerKw"] > 2 + values["meter"]["BaseLoadKw"]


def test_office_panel_has_8_circuits(clock):
    panel = scrape(load_site("office", clock)["panel"])
    assert len([k for k in panel if k.endswith("Enable")]) == 8
    assert sorted(k for k, v in panel.items() if k.endswith("Critical") and v) == [
        "EmergencyLightingCritical", "ServerRoomCritical"]


# -- writes, limits and reverts ----------------------------------------------------------------------------------
def test_a_write_shows_on_the_meter_at_the_next_scrape(clock):
    interfaces = load_site("demo", clock)
    meter, ev = interfaces["meter"], interfaces["ev_charger"]
    before = scrape(meter)["PowerKw"]
    assert ev.set_point("devices/demo/ev_charger/PowerLimitKw", 0) == 0.0
    assert scrape(meter)["PowerKw"] == pytest.approx(before - 7.2, abs=1e-3)
    assert interfaces["water_heater"].set_point("devices/demo/water_heater/ElementEnable", False) is False
    assert scrape(meter)["PowerKw"] == pytest.approx(before - 7.2 - 4.5, abs=1e-3)
    assert interfaces["battery"].set_point("devices/demo/battery/PowerSetpointKw", "-3.5") == -3.5
    assert scrape(meter)["PowerKw"] == pytest.approx(before - 7.2 - 4.5 - 3.5, abs=1e-3)


@pytest.mark.parametrize("device, point, value, match", [
    ("ev_charger", "PowerLimitKw", 7.5, "above the maximum 7.2 kW"),
    ("ev_charger", "PowerLimitKw", -0.1, "below the minimum 0 kW"),
    ("ev_charger", "PowerKw", 1.0, "read only"),
    ("water_heater", "SetpointC", 70, "above the maximum 65 degC"),  # registry limit, tighter than the model's 75
    ("water_heater", "ElementEnable", "maybe", "expected a boolean"),
    ("hvac", "CoolingSetpointC", 19, "below the minimum 20 degC"),
    ("battery", "PowerSetpointKw", 5.5, "above the maximum 5 kW"),
    ("panel", "FridgeEnable", False, "critical"),
    ("meter", "PowerKw", 0, "read only"),
])
def test_a_refused_write_raises_a_clear_error_and_changes_nothing(clock, device, point, value, match):
    interfaces = load_site("demo", clock)
    before = {name: scrape(i) for name, i in interfaces.items()}
    with pytest.raises(PointError, match=match) as info:
        interfaces[device].set_point(f"devices/demo/{device}/{point}", value)
    assert f"devices/demo/{device}" in str(info.value)
    assert {name: scrape(i) for name, i in interfaces.items()} == before


def test_revert_point_and_revert_all_return_to_the_device_defaults(clock):
    interfaces = load_site("demo", clock)
    heater, topic = interfaces["water_heater"], "devices/demo/water_heater"
    heater.set_point(f"{topic}/SetpointC", 45)
    heater.set_point(f"{topic}/ElementEnable", False)
    heater.revert_point(f"{topic}/SetpointC")
    assert scrape(heater)["SetpointC"] == 55.0 and scrape(heater)["ElementEnable"] is False
    heater.revert_point(f"{topic}/TankTempC")  # read-only: nothing to revert, no error
    heater.revert_all()
    assert scrape(heater)["ElementEnable"] is True
    panel = interfaces["panel"]
    for circuit in ("Lighting", "Kitchen", "Laundry"):
        panel.set_point(f"devices/demo/panel/{circuit}Enable", False)
    assert scrape(panel)["PowerKw"] == pytest.approx(0.15)
    for register in panel.get_register_names():  # what platform.driver's revert_device does
        panel.revert_point(register)
    assert scrape(panel)["PowerKw"] == pytest.approx(2.45)


# -- time ---------------------------------------------------------------------------------------------------------
def test_time_scale_in_the_device_config_speeds_up_the_physics(clock):
    get_site("fast", clock)
    rows = [{"Volttron Point Name": "PowerSetpointKw", "Writable": "TRUE", "Units": "kW"},
            {"Volttron Point Name": "SocPercent", "Units": "%"}]
    battery = build("devices/fast/battery", {"driver_type": "battery", "time_scale": 3600, "capacity_kwh": 10,
                                             "soc_percent": 50, "max_power_kw": 5}, rows)
    battery.set_point("devices/fast/battery/PowerSetpointKw", 2)
    clock.now += 1.0  # one wall second = one simulated hour
    assert battery.get_point("devices/fast/battery/SocPercent") == pytest.approx(70.0)
    assert battery.site is get_site("fast") and battery.site.name == "fast"  # site taken from the device topic


def test_elapsed_time_before_a_write_runs_with_the_old_value(clock):
    get_site("t", clock)
    rows = [{"Volttron Point Name": "PowerSetpointKw", "Writable": "TRUE"}, {"Volttron Point Name": "SocPercent"}]
    battery = build("devices/t/battery", {"driver_type": "battery", "site": "t", "capacity_kwh": 10,
                                          "soc_percent": 50, "max_power_kw": 5, "power_setpoint_kw": 4}, rows)
    clock.now += 900  # 15 min at +4 kW = 1 kWh
    battery.set_point("devices/t/battery/PowerSetpointKw", 0)
    clock.now += 900
    assert battery.get_point("devices/t/battery/SocPercent") == pytest.approx(60.0)


# -- configuration errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, match", [
    ({"Volttron Point Name": "Turbo"}, "not a point"),
    ({"Volttron Point Name": "PowerKw", "Writable": "TRUE"}, "read only on this device"),
    ({"Volttron Point Name": "PluggedIn", "Min": "0"}, "boolean"),
    ({"Volttron Point Name": "PowerLimitKw", "Writable": "TRUE", "Min": "5", "Max": "2"}, "Min 5 above Max 2"),
    ({"Volttron Point Name": "PowerLimitKw", "Writable": "TRUE", "Max": "3"}, "outside the registry limits"),
])
def test_a_bad_registry_row_is_a_config_error(clock, row, match):
    with pytest.raises(ConfigError, match=match):
        build("devices/t/ev", {"driver_type": "ev_charger", "rated_power_kw": 7.2}, [row])


def test_an_unknown_physics_parameter_is_a_config_error(clock):
    with pytest.raises(ConfigError, match="unknown parameter.*capacity_kw"):
        build("devices/t/ev", {"driver_type": "ev_charger", "capacity_kw": 60}, [])
    assert issubclass(ConfigError, ValueError)  # platform.driver skips equipment that raises ValueError


def test_a_removed_device_leaves_the_site(clock):
    site = get_site("t", clock)
    rows = [{"Volttron Point Name": "PowerKw"}]
    meter = build("devices/t/meter", {"driver_type": "site_meter", "base_load_kw": 1}, rows)
    ev = build("devices/t/ev", {"driver_type": "ev_charger"}, rows)
    assert meter.get_point("devices/t/meter/PowerKw") == pytest.approx(8.2)
    del ev
    gc.collect()
    assert set(site.devices) == {"devices/t/meter"}
    assert meter.get_point("devices/t/meter/PowerKw") == pytest.approx(1.0)


def test_site_of_a_device_topic():
    assert site_of("devices/demo/ev_charger") == "demo"
    assert site_of("devices/campus/building/ahu1") == "campus/building"
    assert site_of("devices/meter") == "meter"
