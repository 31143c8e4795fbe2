"""The load-control VEN on a real platform with the demo site's simulated devices behind platform.driver.

The water heater's element is held off for the module (as the device tests do) so that the metered reduction
measures the VEN rather than a 4.5 kW thermostat switching mid-event; the unit tests cover the closed loop
against a cycling water heater (tests/unit/test_ven_engine.py). Events are short (35-50 s) at the shipped
5-second scrape and telemetry periods of the demo site.

The driver publishes `/all` from its last poll, polls and publishes running every 5 s, so the second meter
publish after a command is the first one sure to carry a scrape made after it ("the first scrape after the
command").
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import gevent
import pytest

from dr_common import topics
from dr_common.payloads import Ack, Telemetry
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, VenRpc, device_all_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / "platform-config" / "sites" / "demo" / "ven.json").read_text())
VEN_ID = CONFIG["venId"]
IDENTITY = topics.ven_identity(VEN_ID)
DEVICES = ("ev_charger", "water_heater", "hvac", "panel", "battery", "meter")
METER = device_all_topic("demo/meter")
WRITABLE = ["demo/ev_charger/PowerLimitKw", "demo/water_heater/SetpointC", "demo/water_heater/ElementEnable",
            "demo/hvac/CoolingSetpointC", "demo/panel/LightingEnable", "demo/panel/KitchenEnable",
            "demo/panel/LaundryEnable", "demo/panel/FridgeEnable", "demo/battery/PowerSetpointKw"]


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


def iso(dt: datetime, zone: bool = True) -> str:
    text = dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text if zone else text.replace("+00:00", "")


def writable(vp) -> dict[str, Any]:
    values, errors = vp.rpc(DRIVER_IDENTITY, DriverRpc.GET_MULTIPLE_POINTS, WRITABLE)
    assert errors == {}
    return values


def install_demo_building(vp, rec, config: dict[str, Any] = CONFIG) -> None:
    """The demo site's devices behind platform.driver (every one publishing, the water heater's element held
    off), then its VEN with `config`, telemetry flowing; `rec` records devices/demo/ and dr/ from the start."""
    ven_id = config["venId"]
    vp.install_lib("drivers")
    vp.install_site("demo", only=[DRIVER_IDENTITY])
    vp.bus.subscribe("devices/demo/", rec)
    vp.bus.subscribe("dr/", rec)
    vp.wait_for(lambda: all(rec.on(device_all_topic(f"demo/{d}")) for d in DEVICES), timeout=90,
                what="an /all publish of every demo device")
    vp.rpc(DRIVER_IDENTITY, DriverRpc.SET_POINT, "demo/water_heater", "ElementEnable", False)
    t0 = time.monotonic()
    vp.install_agent("ven_load_control", topics.ven_identity(ven_id), config=config)
    vp.wait_for(lambda: rec.on(topics.bus_telemetry(ven_id), since=t0), timeout=30,
                what=f"telemetry from {topics.ven_identity(ven_id)}")


@pytest.fixture(scope="module")
def ven(vplatform):
    vp = vplatform
    rec = Recorder()
    install_demo_building(vp, rec)
    yield vp, rec
    info = vp.agents().get(IDENTITY)
    if info is not None:
        vp.vctl("stop", info.uuid, timeout=60)
    for device in DEVICES:
        vp.rpc(DRIVER_IDENTITY, DriverRpc.REVERT_DEVICE, f"demo/{device}")


def send(vp, rec, payload: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Publish a command on the VEN's bus topic; (seconds until its ack arrived, the ack)."""
    correlation = payload.get("correlationId") or payload.get("correlation_id")
    t0 = time.monotonic()
    vp.publish(topics.bus_cmd(VEN_ID), payload)
    found = vp.wait_for(lambda: [(t, m) for t, m in rec.on(topics.bus_ack(VEN_ID), since=t0)
                                 if m.get("correlationId") == correlation], timeout=10, step=0.005,
                        what=f"the ack of {correlation}")
    arrived, ack = found[0]
    Ack.from_payload(ack)
    return arrived - t0, ack


def meter_after(vp, rec, since: float, count: int) -> list[float]:
    """PowerKw of the first `count` meter publishes after `since`."""
    got = vp.wait_for(lambda: len(rec.on(METER, since)) >= count and rec.on(METER, since), timeout=10 + 5 * count,
                      what=f"{count} meter publishes")
    return [m[0]["PowerKw"] for _, m in got[:count]]


def status(vp) -> dict[str, Any] | None:
    """The VEN's status, None while it does not answer (restarting)."""
    try:
        return vp.rpc(IDENTITY, VenRpc.STATUS, timeout=3)
    except (Exception, gevent.Timeout):  # gevent.Timeout is a BaseException
        return None


def idle(vp, rec) -> dict[str, Any]:
    """Make sure no event of an earlier (possibly failed) test is still on: restore, wait for no action."""
    send(vp, rec, {"op": "restore", "correlationId": f"itest-ven-clean-{time.monotonic()}"})
    return vp.wait_for(lambda: (st := status(vp)) and not st["actions"] and st, timeout=30,
                       what="the VEN idle")


def baseline_of(vp) -> float:
    status = vp.rpc(IDENTITY, VenRpc.STATUS)
    assert status["event"] and status["event"]["baselineKw"] is not None, status
    return status["event"]["baselineKw"]


def wait_until(dt: datetime, extra_s: float) -> None:
    gevent.sleep(max(0.0, (dt - datetime.now(timezone.utc)).total_seconds()) + extra_s)


def assert_points_back(vp, before: dict[str, Any]) -> None:
    after = writable(vp)
    for point, value in before.items():
        assert after[point] == pytest.approx(value), point


def test_a_2_kw_event_is_acked_within_1_s_lands_on_target_and_every_point_is_back_at_until(ven, figure):
    vp, rec = ven
    idle(vp, rec)
    before = writable(vp)
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=45)
    t_cmd = time.monotonic()
    latency, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-1", "eventId": "itest-ven-evt-1",
                                  "venId": VEN_ID, "requestedReductionKw": 2.0, "startTime": iso(now),
                                  "until": iso(until)})
    figure("VEN event ack (bus publish -> ack received)", f"{latency * 1000:.1f} ms")
    assert latency < 1.0
    assert ack["ok"] is True and ack["eventId"] == "itest-ven-evt-1"
    assert ack["data"]["targetKw"] == 2.0 and ack["data"]["acceptedReduceKw"] == pytest.approx(2.0, rel=0.05)
    assert ack["data"]["until"].startswith(iso(until)[:19])
    baseline = baseline_of(vp)

    meters = meter_after(vp, rec, t_cmd, 7)
    reductions = [baseline - kw for kw in meters]
    figure("VEN metered reduction, 2 kW event (first scrape, then steady)",
           ", ".join(f"{r:.3f}" for r in reductions[1:]))
    assert reductions[1] == pytest.approx(2.0, rel=0.05)
    for r in reductions[2:]:
        assert r == pytest.approx(2.0, rel=0.02)

    reports = [m for _, m in rec.on(topics.bus_telemetry(VEN_ID), t_cmd) if m.get("eventId") == "itest-ven-evt-1"]
    assert reports, "no telemetry carried the event id"
    report = reports[-1]
    Telemetry.from_payload(report)
    for field in ("venId", "ts", "usedPowerKw", "shedPowerKw", "requestedReductionKw", "eventId", "baselinePowerKw"):
        assert report[field] is not None, field
    assert report["venId"] == VEN_ID and report["requestedReductionKw"] == 2.0
    assert report["baselinePowerKw"] == pytest.approx(baseline)
    assert report["shedPowerKw"] == pytest.approx(2.0, rel=0.05)
    assert report["loads"]["ev_charger"]["setPoints"] == {"PowerLimitKw": pytest.approx(5.2, abs=0.3)}

    wait_until(until, CONFIG["restoreStaggerS"] * 2 + 1.0)
    assert_points_back(vp, before)
    after = vp.rpc(IDENTITY, VenRpc.STATUS)
    assert after["event"] is None and after["actions"] == {}
    assert after["latencyMs"]["count"] >= 1
    figure("VEN command received -> first set_point sent (agent's own log)", f"{after['latencyMs']}")


def test_a_restart_mid_event_resumes_and_still_restores_on_time(ven):
    vp, rec = ven
    idle(vp, rec)
    before = writable(vp)
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=45)
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-2", "eventId": "itest-ven-evt-2",
                            "requestedReductionKw": 2.0, "startTime": iso(now), "until": iso(until)})
    assert ack["ok"]
    baseline = baseline_of(vp)
    assert vp.rpc(DRIVER_IDENTITY, DriverRpc.GET_POINT, "demo/ev_charger", "PowerLimitKw") < 7.0
    t_restart = time.monotonic()
    vp.restart_agent(IDENTITY)
    back = vp.wait_for(lambda: status(vp), timeout=30, what="the VEN back")
    assert back["event"]["eventId"] == "itest-ven-evt-2" and back["event"]["baselineKw"] == baseline
    assert back["counters"].get("events_resumed") == 1
    # shedding again after the restart, on target
    meters = meter_after(vp, rec, time.monotonic(), 3)
    assert baseline - meters[-1] == pytest.approx(2.0, rel=0.02)
    assert [m for _, m in rec.on(topics.bus_telemetry(VEN_ID), t_restart) if m.get("eventId") == "itest-ven-evt-2"]
    wait_until(until, 2.0)
    assert_points_back(vp, before)
    assert vp.rpc(IDENTITY, VenRpc.STATUS)["actions"] == {}


def test_a_shed_panel_command_with_snake_case_fields_works_the_same(ven):
    vp, rec = ven
    idle(vp, rec)
    before = writable(vp)
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=35)
    t_cmd = time.monotonic()
    latency, ack = send(vp, rec, {"operation": "shedPanel", "correlation_id": "itest-ven-3",
                                  "event_id": "itest-ven-evt-3", "requested_reduction_kw": "2.0",
                                  "start_time": iso(now, zone=False), "end_time": iso(until, zone=False)})
    assert latency < 1.0
    assert ack["ok"] is True and ack["op"] == "shedPanel" and ack["eventId"] == "itest-ven-evt-3"
    assert ack["data"]["acceptedReduceKw"] == pytest.approx(2.0, rel=0.05)
    baseline = baseline_of(vp)
    meters = meter_after(vp, rec, t_cmd, 4)
    assert baseline - meters[1] == pytest.approx(2.0, rel=0.05)
    assert baseline - meters[3] == pytest.approx(2.0, rel=0.02)
    wait_until(until, CONFIG["restoreStaggerS"] * 2 + 1.0)
    assert_points_back(vp, before)


def test_override_opt_out_and_a_config_change_mid_event(ven):
    vp, rec = ven
    idle(vp, rec)
    before = writable(vp)
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=40)
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-4", "eventId": "itest-ven-evt-4",
                            "requestedReductionKw": 1.0, "startTime": iso(now), "until": iso(until)})
    assert ack["ok"] and vp.rpc(DRIVER_IDENTITY, DriverRpc.GET_POINT, "demo/ev_charger", "PowerLimitKw") < 7.0
    # the owner takes the EV charger out: it goes back, the others make up for it
    state = vp.rpc(IDENTITY, VenRpc.OVERRIDE, "ev_charger", True)
    assert state["overrides"] == ["ev_charger"] and "ev_charger" not in state["actions"] and state["actions"]
    assert vp.rpc(DRIVER_IDENTITY, DriverRpc.GET_POINT, "demo/ev_charger", "PowerLimitKw") == 7.2
    _, ping = send(vp, rec, {"op": "ping", "correlationId": "itest-ven-4p"})
    assert ping["data"]["overrides"] == ["ev_charger"]
    t0 = time.monotonic()
    vp.wait_for(lambda: [m for _, m in rec.on(topics.bus_telemetry(VEN_ID), t0)
                         if m["loads"]["ev_charger"].get("override")], timeout=12, what="telemetry with the override")
    # a config change restores everything, then the agent resumes the stored event with the new config
    vp.store_config(IDENTITY, "config", {**CONFIG, "restoreStaggerS": 1.0})
    vp.wait_for(lambda: (st := status(vp)) and st["actions"] and st["counters"].get("events_resumed") == 1,
                timeout=20, what="the event resumed under the new config")
    # opting out gives every load back and is reported
    state = vp.rpc(IDENTITY, VenRpc.OPT_OUT, True)
    assert state["optOut"] is True
    vp.wait_for(lambda: not status(vp)["actions"], timeout=15, what="every load back after the opt-out")
    assert_points_back(vp, before)
    _, ping = send(vp, rec, {"op": "ping", "correlationId": "itest-ven-4q"})
    assert ping["data"]["optOut"] is True
    vp.rpc(IDENTITY, VenRpc.OVERRIDE, "ev_charger", False)
    vp.store_config(IDENTITY, "config", CONFIG)
    _, ack = send(vp, rec, {"op": "restore", "correlationId": "itest-ven-4r", "eventId": "itest-ven-evt-4"})
    assert ack["ok"]
    vp.wait_for(lambda: (st := status(vp)) and st["event"] is None, timeout=20, what="the event ended")
    assert_points_back(vp, before)


def test_bad_commands_are_refused_and_the_agent_carries_on(ven):
    vp, rec = ven
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-bad", "requestedReductionKw": "lots",
                            "durationS": 30})
    assert ack["ok"] is False and "'requestedReductionKw'" in ack["error"]
    vp.publish(topics.bus_cmd(VEN_ID), "this is not json")
    _, ack = send(vp, rec, {"op": "ping", "correlationId": "itest-ven-ping"})
    assert ack["ok"] is True
    rpc_ack = vp.rpc(IDENTITY, VenRpc.HANDLE_COMMAND, {"op": "ping", "correlationId": "itest-ven-rpc"})
    assert rpc_ack["ok"] is True and rpc_ack["correlationId"] == "itest-ven-rpc"
    # a command for another VEN whose id starts with this one's is not this VEN's
    t0 = time.monotonic()
    vp.publish(topics.bus_cmd(VEN_ID + "x"), {"op": "ping", "correlationId": "itest-ven-other"})
    gevent.sleep(1.0)
    assert not [m for _, m in rec.on(topics.bus_ack(VEN_ID), t0) if m.get("correlationId") == "itest-ven-other"]
    health = vp.rpc(IDENTITY, VenRpc.HEALTH)
    assert health["ok"] is True and health["configured"] is True
    assert vp.rpc(IDENTITY, VenRpc.STATUS)["counters"]["bad_commands"] >= 2


def test_the_reported_shed_shows_the_devices_within_2_s_and_every_load_is_detailed(ven, figure):
    vp, rec = ven
    idle(vp, rec)
    gevent.sleep(11.0)  # two scrapes: the driver's publishes show the restored site
    t0 = time.monotonic()
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-5", "eventId": "itest-ven-evt-5",
                            "requestedReductionKw": 2.0, "durationS": 40})
    assert ack["ok"] is True
    found = vp.wait_for(lambda: [(t, m) for t, m in rec.on(topics.bus_telemetry(VEN_ID), t0)
                                 if m.get("eventId") == "itest-ven-evt-5" and m["shedPowerKw"] >= 0.95 * 2.0],
                        timeout=20, step=0.02, what="a report of 95 % of the shed")
    elapsed = found[0][0] - t0
    figure("VEN command -> reported shed >= 95 % of 2 kW", f"{elapsed:.2f} s")
    report = found[0][1]
    Telemetry.from_payload(report)
    ev = report["loads"]["ev_charger"]
    assert ev["state"] == "shed" and ev["action"]["type"] == "powerLimit"
    assert ev["constraint"]["type"] == "departureEnergy" and ev["override"] is False and ev["optOut"] is False
    assert report["loads"]["panel.Fridge"]["state"] == "critical"
    # no over-shedding: the reports of the next 10 s stay within the margin
    gevent.sleep(10.0)
    later = [m["shedPowerKw"] for _, m in rec.on(topics.bus_telemetry(VEN_ID), t0)
             if m.get("eventId") == "itest-ven-evt-5"]
    assert max(later) <= 2.0 + max(CONFIG["overshedMarginKw"], 2.0 * CONFIG["overshedMarginPercent"] / 100) + 0.1
    idle(vp, rec)


def test_commands_for_another_ven_or_outside_the_limits_are_refused_and_counted(ven):
    vp, rec = ven
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-6", "venId": "ven-other",
                            "requestedReductionKw": 2.0, "durationS": 30})
    assert ack["ok"] is False and "'venId'" in ack["error"]
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-7", "requestedReductionKw": 1e6,
                            "durationS": 30})
    assert ack["ok"] is False and "'requestedReductionKw'" in ack["error"]
    _, ack = send(vp, rec, {"op": "event", "correlationId": "itest-ven-8", "requestedReductionKw": 2,
                            "until": "2999-01-01T00:00:00Z"})
    assert ack["ok"] is False and "'until'" in ack["error"]
    rejects = vp.rpc(IDENTITY, VenRpc.STATUS)["rejects"]["byReason"]
    assert rejects["venId"] >= 1 and rejects["requestedReductionKw"] >= 1 and rejects["until"] >= 1
    assert vp.rpc(IDENTITY, VenRpc.STATUS)["event"] is None
