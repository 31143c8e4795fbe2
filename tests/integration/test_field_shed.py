"""The `field` site on a real platform: the VEN sheds field equipment through VOLTTRON's stock drivers.

`scripts/devices` serves the site's devices (battery inverter, revenue meter, EV charger on Modbus TCP; thermostat
and water heater on BACnet/IP) on free loopback ports; platform.driver reads and writes them with
volttron-lib-modbus-driver (plus the `scaling` plugin of field_drivers/) and volttron-lib-bacnet-driver, with the
registries and device configs of platform-config/sites/field installed by install_site. The VEN is the stock
dr.ven agent configured by the site's ven.json only.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import gevent
import pytest

from dr_common import topics
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, VenRpc, device_all_topic
from dr_tools.devices import cli as devices
from dr_tools.devices.siteconfig import device_configs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIELD = ROOT / "platform-config" / "sites" / "field"
CONFIG = json.loads((FIELD / "ven.json").read_text())
VEN_ID = CONFIG["venId"]
IDENTITY = topics.ven_identity(VEN_ID)
DEVICES = ("battery", "meter", "ev_charger", "thermostat", "water_heater")
METER = device_all_topic("field/meter")
WRITABLE = ["field/ev_charger/PowerLimitKw", "field/battery/PowerSetpointKw", "field/thermostat/CoolingSetpointC",
            "field/water_heater/ElementEnable"]
#: the BACnet objects the VEN may command, and the priority the registries write them at
COMMANDABLE = {"thermostat": "analogValue,1", "water_heater": "binaryValue,1"}
BACNET_PRIORITY = 10


class Recorder:
    """Every message on a prefix with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, peer, sender, bus, topic, headers, message) -> None:
        with self.lock:
            self.items.append((time.monotonic(), topic, message))

    def on(self, topic: str, since: float = 0.0) -> list[tuple[float, Any]]:
        with self.lock:
            return [(t, m) for t, top, m in self.items if top == topic and t >= since]


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ctl(field_ports: dict[str, Any], **request: Any) -> dict[str, Any]:
    answer = devices.control(field_ports, request)
    assert answer["ok"], answer
    return answer


@pytest.fixture(scope="module")
def field(vplatform):
    vp = vplatform
    dev_site = f"{vp.site}-devices"
    devices.stop(dev_site)
    ports = devices.start(dev_site, FIELD / "devices.json", 0, 0, 0)
    configs = device_configs(FIELD / "driver", ports, free_udp_port())
    try:
        t0 = time.monotonic()
        vp.install_site("field", only=[DRIVER_IDENTITY])
        for name, config in configs.items():
            vp.store_config(DRIVER_IDENTITY, name, config)
        vp.restart_agent(DRIVER_IDENTITY)  # platform.driver applies device configs changed in its store on start
        rec = Recorder()
        vp.bus.subscribe("devices/field/", rec)
        vp.bus.subscribe("dr/", rec)
        since = time.monotonic()
        vp.wait_for(lambda: all(rec.on(device_all_topic(f"field/{d}"), since) for d in DEVICES), timeout=90,
                    what="an /all publish of every field device")
        print(f"\nfield devices on {ports}, driver up in {time.monotonic() - t0:.1f} s")
        t1 = time.monotonic()
        vp.install_site("field", only=[IDENTITY])
        vp.wait_for(lambda: rec.on(topics.bus_telemetry(VEN_ID), since=t1), timeout=60,
                    what=f"telemetry from {IDENTITY}")
        yield vp, rec, ports
        info = vp.agents().get(IDENTITY)
        if info is not None:
            vp.vctl("stop", info.uuid, timeout=60)
    finally:
        # the platform is shared with the other test modules: leave no field device for platform.driver to poll
        for name in configs:
            vp.vctl("config", "delete", DRIVER_IDENTITY, name, check=False)
        if DRIVER_IDENTITY in vp.agents():
            vp.restart_agent(DRIVER_IDENTITY)
        devices.stop(dev_site)


def send(vp, rec, payload: dict[str, Any]) -> dict[str, Any]:
    """Publish a command on the VEN's bus topic and return its ack."""
    t0 = time.monotonic()
    vp.publish(topics.bus_cmd(VEN_ID), payload)
    found = vp.wait_for(lambda: [m for _, m in rec.on(topics.bus_ack(VEN_ID), since=t0)
                                 if m.get("correlationId") == payload["correlationId"]], timeout=15,
                        what=f"the ack of {payload['correlationId']}")
    return found[0]


def writable(vp) -> dict[str, Any]:
    values, errors = vp.rpc(DRIVER_IDENTITY, DriverRpc.GET_MULTIPLE_POINTS, WRITABLE)
    assert errors == {}
    return values


def test_the_stock_drivers_read_every_field_device_in_engineering_units(field):
    vp, rec, ports = field
    meter = vp.rpc(DRIVER_IDENTITY, DriverRpc.SCRAPE_ALL, "field/meter")
    truth = ctl(ports, op="status")
    assert meter["devices/field/meter/PowerKw"] == pytest.approx(truth["netPowerKw"], abs=0.3)
    ev = vp.rpc(DRIVER_IDENTITY, DriverRpc.SCRAPE_ALL, "field/ev_charger")
    assert ev["devices/field/ev_charger/RatedPowerKw"] == pytest.approx(7.2)
    battery = vp.rpc(DRIVER_IDENTITY, DriverRpc.SCRAPE_ALL, "field/battery")
    assert battery["devices/field/battery/CapacityKwh"] == pytest.approx(13.5)        # WHRtg 1350 * 10^1 Wh
    assert battery["devices/field/battery/SocPercent"] == pytest.approx(80.0, abs=1)  # SoC 800 * 10^-1
    thermostat = vp.rpc(DRIVER_IDENTITY, DriverRpc.SCRAPE_ALL, "field/thermostat")
    assert thermostat["devices/field/thermostat/CoolingSetpointC"] == pytest.approx(24.0)
    heater = vp.rpc(DRIVER_IDENTITY, DriverRpc.SCRAPE_ALL, "field/water_heater")
    assert heater["devices/field/water_heater/ElementEnable"] in (0, 1)


def test_out_of_range_writes_are_refused_by_the_devices_and_change_nothing(field):
    vp, rec, ports = field
    before = writable(vp)
    with pytest.raises(Exception, match="exception_code=3"):       # Modbus ILLEGAL DATA VALUE
        vp.rpc(DRIVER_IDENTITY, DriverRpc.SET_POINT, "field/ev_charger", "PowerLimitKw", 9.0)
    with pytest.raises(Exception, match="value-out-of-range"):     # BACnet
        vp.rpc(DRIVER_IDENTITY, DriverRpc.SET_POINT, "field/thermostat", "CoolingSetpointC", 40.0)
    assert ctl(ports, op="read", device="ev_charger", point="PowerLimitKw")["value"] == pytest.approx(7.2)
    assert ctl(ports, op="priority", device="thermostat", object=COMMANDABLE["thermostat"])["slots"] == {}
    assert writable(vp) == before


def test_a_2_kw_event_sheds_through_modbus_and_bacnet_and_everything_is_back_at_the_end(field, figure):
    vp, rec, ports = field
    before = writable(vp)
    truth_before = {d: ctl(ports, op="priority", device=d, object=o)["slots"] for d, o in COMMANDABLE.items()}
    assert truth_before == {"thermostat": {}, "water_heater": {}}
    written_before = len(ctl(ports, op="written")["written"])
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=50)
    t_cmd = time.monotonic()
    ack = send(vp, rec, {"op": "event", "correlationId": "itest-field-1", "eventId": "itest-field-evt-1",
                         "venId": VEN_ID, "requestedReductionKw": 2.0, "startTime": iso(now), "until": iso(until)})
    assert ack["ok"] is True, ack
    status = vp.rpc(IDENTITY, VenRpc.STATUS)
    baseline = status["event"]["baselineKw"]

    got = vp.wait_for(lambda: len(rec.on(METER, t_cmd)) >= 7 and rec.on(METER, t_cmd), timeout=60,
                      what="7 meter publishes")
    reductions = [baseline - m[0]["PowerKw"] for _, m in got[:7]]
    figure("field site: metered reduction of a 2 kW event through Modbus + BACnet (per 5 s scrape)",
           ", ".join(f"{r:.3f}" for r in reductions))
    steady = reductions[3:]
    assert sum(steady) / len(steady) == pytest.approx(2.0, rel=0.05)
    for r in steady:
        assert r == pytest.approx(2.0, rel=0.10)

    loads = [m for _, m in rec.on(topics.bus_telemetry(VEN_ID), t_cmd)
             if m.get("eventId") == "itest-field-evt-1"][-1]["loads"]
    assert loads["thermostat"]["setPoints"].get("CoolingSetpointC", 0) > 24.0      # a BACnet write
    assert 0 < loads["ev_charger"]["setPoints"].get("PowerLimitKw", 99) < 7.2      # a Modbus write
    during = ctl(ports, op="priority", device="thermostat", object=COMMANDABLE["thermostat"])["slots"]
    assert list(during) == [str(BACNET_PRIORITY)]
    assert ctl(ports, op="read", device="ev_charger", point="PowerLimitKw")["value"] < 7.2

    gevent.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + 4 * CONFIG["restoreStaggerS"] + 3)
    after = vp.rpc(IDENTITY, VenRpc.STATUS)
    assert after["event"] is None and after["actions"] == {}
    values = writable(vp)
    for point, value in before.items():
        assert values[point] == pytest.approx(value), point
    # BACnet: relinquished (NULL at the priority written), not overwritten with the old value
    for device, obj in COMMANDABLE.items():
        assert ctl(ports, op="priority", device=device, object=obj)["slots"] == {}, device
    writes = ctl(ports, op="written")["written"][written_before:]
    thermostat = [w for w in writes if w[0] == "thermostat"]
    assert thermostat and all(w[2] == BACNET_PRIORITY for w in thermostat)
    assert thermostat[-1][3] is None
    assert ctl(ports, op="read", device="ev_charger", point="PowerLimitKw")["value"] == pytest.approx(7.2)
    assert ctl(ports, op="read", device="thermostat", point="CoolingSetpointC")["value"] == pytest.approx(24.0)
