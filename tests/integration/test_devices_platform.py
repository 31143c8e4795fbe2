"""The simulated devices on a real VOLTTRON platform: the demo site's driver configs installed the way
scripts/install_site does, driven through platform.driver's RPC API."""
from __future__ import annotations

import csv
import importlib.metadata
import time
from pathlib import Path

import gevent
import pytest

from dr_common.topics import DRIVER_IDENTITY, DriverRpc, device_all_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "platform-config" / "sites" / "demo" / "driver"
DEVICES = ("ev_charger", "water_heater", "hvac", "panel", "battery", "meter")
REGISTRY = {"ev_charger": "ev_charger", "water_heater": "water_heater", "hvac": "hvac", "panel": "panel",
            "battery": "battery", "meter": "site_meter"}


DIST = "volttron-dr-sim-drivers"
PACKAGES = ("dr_devices", "dr_devices_driver", "volttron/driver/interfaces")


def stale_driver_files() -> list[str]:
    """Files of drivers/ that the platform's environment does not have as in this checkout."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return [f"{DIST} is not installed"]
    installed = {str(f): f for f in dist.files or () if f.suffix == ".py"}
    checkout = {p.relative_to(ROOT / "drivers").as_posix() for pkg in PACKAGES
                for p in (ROOT / "drivers" / pkg).rglob("*.py")}
    stale = sorted(set(installed) ^ checkout)
    for name in sorted(set(installed) & checkout):
        if Path(dist.locate_file(installed[name])).read_bytes() != (ROOT / "drivers" / name).read_bytes():
            stale.append(name)
    return stale


def registry_points(device: str) -> set[str]:
    with (DEMO / "registry" / f"{REGISTRY[device]}.csv").open(newline="") as handle:
        return {row["Volttron Point Name"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def demo(vplatform):
    t0 = time.monotonic()
    vplatform.install_lib("drivers")
    if stale_driver_files():
        # `vctl install-lib` keeps an installed distribution of the same version: remove it, then install
        vplatform.vctl("remove-lib", DIST, check=False)
        vplatform.vctl("install-lib", str(vplatform.plat.stage("drivers")), timeout=300)
    assert stale_driver_files() == []
    done = vplatform.install_site("demo", only=[DRIVER_IDENTITY])
    alls = vplatform.subscribe("devices/demo/")
    vplatform.wait_for(lambda: all(alls.on_topic(device_all_topic(f"demo/{d}")) for d in DEVICES), timeout=90,
                       what="an /all publish of every demo device")
    print(f"\ndemo driver site up in {time.monotonic() - t0:.1f} s: {done}")
    yield vplatform, alls
    for device in DEVICES:
        vplatform.rpc(DRIVER_IDENTITY, DriverRpc.REVERT_DEVICE, f"demo/{device}")


def rpc(vp, method: str, *args):
    return vp.rpc(DRIVER_IDENTITY, method, *args)


def powers(vp) -> dict[str, float]:
    """PowerKw of every demo device read in one RPC: the devices are read within milliseconds of each other."""
    results, errors = rpc(vp, DriverRpc.GET_MULTIPLE_POINTS, [f"demo/{d}/PowerKw" for d in DEVICES])
    assert errors == {}
    return {topic.split("/")[2]: value for topic, value in results.items()}


def others_drift(before: dict[str, float], after: dict[str, float], *devices: str) -> float:
    return sum(after[d] - before[d] for d in DEVICES if d not in devices and d != "meter")


def next_published_meter(vp, alls, publishes: int = 2) -> float:
    """The meter's PowerKw in its second /all publish from now: publishes and scrapes both run every 5 s, so the
    second one carries a scrape made after this call."""
    topic = device_all_topic("demo/meter")
    seen = len(alls.on_topic(topic))
    vp.wait_for(lambda: len(alls.on_topic(topic)) >= seen + publishes, timeout=20, what="meter /all publishes")
    return alls.on_topic(topic)[seen + publishes - 1][0]["PowerKw"]


def test_every_demo_device_publishes_all_its_points(demo):
    vp, alls = demo
    for device in DEVICES:
        values, meta = alls.on_topic(device_all_topic(f"demo/{device}"))[-1]
        assert set(values) == registry_points(device), device
        assert meta["PowerKw"]["units"] == "kW" and meta["PowerKw"]["type"] == "float"
    ev = alls.on_topic(device_all_topic("demo/ev_charger"))[-1][0]
    assert ev["PluggedIn"] is True and ev["PowerKw"] == 7.2
    assert alls.on_topic(device_all_topic("demo/panel"))[-1][1]["FridgeEnable"]["type"] == "boolean"


def test_meter_reads_base_load_plus_every_device(demo):
    vp, _ = demo
    snap = powers(vp)
    base = rpc(vp, DriverRpc.GET_POINT, "demo/meter", "BaseLoadKw")
    assert snap["meter"] == pytest.approx(base + sum(v for d, v in snap.items() if d != "meter"), abs=0.01)


def test_ev_limit_to_zero_sheds_its_share_at_the_next_scrape_and_revert_restores(demo):
    vp, alls = demo
    # hold the water heater's thermostat still so the published meter changes by the EV alone
    rpc(vp, DriverRpc.SET_POINT, "demo/water_heater", "ElementEnable", False)
    try:
        before = powers(vp)
        assert before["ev_charger"] == 7.2
        assert rpc(vp, DriverRpc.SET_POINT, "demo/ev_charger", "PowerLimitKw", 0) == 0.0
        after = powers(vp)
        assert after["ev_charger"] == 0.0
        drift = others_drift(before, after, "ev_charger")
        assert abs(drift) < 0.05
        assert after["meter"] - before["meter"] == pytest.approx(-7.2 + drift, abs=0.01)
        assert next_published_meter(vp, alls) == pytest.approx(before["meter"] - 7.2, abs=0.15)

        rpc(vp, DriverRpc.REVERT_DEVICE, "demo/ev_charger")
        assert rpc(vp, DriverRpc.GET_POINT, "demo/ev_charger", "PowerLimitKw") == 7.2
        restored = powers(vp)
        assert restored["ev_charger"] == 7.2
        assert restored["meter"] - after["meter"] == pytest.approx(7.2 + others_drift(after, restored, "ev_charger"),
                                                                   abs=0.01)
        assert next_published_meter(vp, alls) == pytest.approx(before["meter"], abs=0.15)
    finally:
        rpc(vp, DriverRpc.REVERT_DEVICE, "demo/water_heater")


def test_water_heater_element_off_sheds_its_share_and_revert_restores(demo):
    vp, _ = demo
    # a setpoint at the registry's maximum makes the element call for heat (the tank is below 60 degC)
    assert rpc(vp, DriverRpc.SET_POINT, "demo/water_heater", "SetpointC", 65) == 65.0
    heating = powers(vp)
    assert heating["water_heater"] == 4.5
    assert rpc(vp, DriverRpc.SET_POINT, "demo/water_heater", "ElementEnable", False) is False
    off = powers(vp)
    assert off["water_heater"] == 0.0
    assert off["meter"] - heating["meter"] == pytest.approx(-4.5 + others_drift(heating, off, "water_heater"),
                                                            abs=0.01)
    rpc(vp, DriverRpc.REVERT_DEVICE, "demo/water_heater")
    assert rpc(vp, DriverRpc.GET_POINT, "demo/water_heater", "SetpointC") == 55.0
    assert rpc(vp, DriverRpc.GET_POINT, "demo/water_heater", "ElementEnable") is True


def test_battery_discharge_and_a_panel_circuit_show_on_the_meter(demo):
    vp, _ = demo
    before = powers(vp)
    rpc(vp, DriverRpc.SET_POINT, "demo/battery", "PowerSetpointKw", -3)
    rpc(vp, DriverRpc.SET_POINT, "demo/panel", "LaundryEnable", False)
    after = powers(vp)
    assert after["battery"] == -3.0
    assert after["panel"] == pytest.approx(before["panel"] - 0.8)
    assert after["meter"] - before["meter"] == pytest.approx(
        -3.0 - 0.8 + others_drift(before, after, "battery", "panel"), abs=0.01)
    rpc(vp, DriverRpc.REVERT_DEVICE, "demo/battery")
    rpc(vp, DriverRpc.REVERT_POINT, "demo/panel", "LaundryEnable")
    assert rpc(vp, DriverRpc.GET_POINT, "demo/panel", "LaundryEnable") is True
    reverted = powers(vp)
    assert reverted["battery"] == 0.0 and reverted["panel"] == pytest.approx(before["panel"])


@pytest.mark.parametrize("device, point, value, match", [
    ("ev_charger", "PowerLimitKw", 50, "above the maximum 7.2 kW"),
    ("water_heater", "SetpointC", 90, "above the maximum 65 degC"),
    ("battery", "PowerSetpointKw", -9, "below the minimum -5 kW"),
    ("meter", "BaseLoadKw", 0, "read only"),
    ("panel", "FridgeEnable", False, "critical"),
])
def test_a_refused_write_returns_an_error_and_leaves_the_point_unchanged(demo, device, point, value, match):
    vp, _ = demo
    before = rpc(vp, DriverRpc.GET_POINT, f"demo/{device}", point)
    with pytest.raises(Exception, match=match) as info:
        rpc(vp, DriverRpc.SET_POINT, f"demo/{device}", point, value)
    assert type(info.value).__name__ == "RemoteError" and "PointError" in str(info.value)
    assert rpc(vp, DriverRpc.GET_POINT, f"demo/{device}", point) == before


def test_time_scaled_device_integrates_on_the_platform(demo):
    """A battery at 3600x simulated time added at runtime: its SoC follows wall time x power / capacity."""
    vp, _ = demo
    config = {"remote_config": {"driver_type": "battery", "site": "fast", "time_scale": 3600, "capacity_kwh": 60,
                                "max_power_kw": 5, "soc_percent": 80, "reserve_soc_percent": 0},
              "registry_config": "config://registry/battery.csv", "interval": 5}
    vp.store_config(DRIVER_IDENTITY, "devices/fast/battery", config)
    try:
        vp.wait_for(lambda: rpc(vp, DriverRpc.GET_POINT, "fast/battery", "CapacityKwh") == 60, timeout=20,
                    what="devices/fast/battery configured")
        rpc(vp, DriverRpc.SET_POINT, "fast/battery", "PowerSetpointKw", -1)  # 1 kWh per wall second
        t0, soc0 = time.monotonic(), rpc(vp, DriverRpc.GET_POINT, "fast/battery", "SocPercent")
        gevent.sleep(3)
        t1, soc1 = time.monotonic(), rpc(vp, DriverRpc.GET_POINT, "fast/battery", "SocPercent")
        expected = -100.0 * (t1 - t0) / 60
        assert soc1 - soc0 == pytest.approx(expected, abs=0.15)
        snap, base = powers(vp), rpc(vp, DriverRpc.GET_POINT, "demo/meter", "BaseLoadKw")
        # another site: not on the demo meter
        assert snap["meter"] == pytest.approx(base + sum(v for d, v in snap.items() if d != "meter"), abs=0.01)
    finally:
        vp.vctl("config", "delete", DRIVER_IDENTITY, "devices/fast/battery", timeout=60)
