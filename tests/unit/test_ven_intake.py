"""Command intake bounds (limits, venId), the live report after shed writes, and the per-load telemetry detail."""

from __future__ import annotations

import logging

import pytest

from dr_common.payloads import Telemetry
from dr_ven_load_control.engine import Op
from tests.unit.test_ven_harness import SiteHarness, ven_config

LOAD_KEYS = {"kind", "priority", "state", "powerKw", "shedKw", "capacityKw", "action", "constraint", "override",
             "optOut", "critical", "blocked", "setPoints"}


@pytest.fixture()
def site():
    harness = SiteHarness()
    harness.run(30)
    return harness


# --- limits -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,field", [
    ({"until": "2999-01-01T00:00:00Z"}, "until"),
    ({"until": 253402300799000}, "until"),  # year 9999 as epoch milliseconds
    ({"durationS": 5 * 3600}, "until"),
    ({"requestedReductionKw": 1e6}, "requestedReductionKw"),
    ({"startTime": "2090-01-01T00:00:00Z", "until": "2090-01-01T01:00:00Z"}, "startTime"),
])
def test_a_command_outside_the_limits_is_refused_naming_the_field_and_counted(site, change, field):
    before = site.writable_values()
    payload = {"op": "event", "correlationId": "big", "eventId": "big", "requestedReductionKw": 2.0,
               "durationS": 600, **change}
    if "until" in change:
        payload.pop("durationS")
    ack = site.command(**payload)
    assert ack["ok"] is False and f"'{field}'" in ack["error"]
    assert site.engine.event is None and site.writable_values() == before
    assert site.engine.status()["rejects"]["byReason"][field] == 1


def test_limits_come_from_the_config():
    site = SiteHarness(config=ven_config(limits={"maxRequestedKw": 1.5, "maxEventDurationS": 120,
                                                 "maxStartAheadS": 60}))
    site.run(30)
    assert site.command(op="event", correlationId="a", requestedReductionKw=2.0, durationS=60)["ok"] is False
    assert site.command(op="event", correlationId="b", requestedReductionKw=1.0, durationS=600)["ok"] is False
    assert site.command(op="event", correlationId="c", requestedReductionKw=1.0, startTime=site.clock.now + 120,
                        until=site.clock.now + 150)["ok"] is False
    ack = site.command(op="event", correlationId="d", requestedReductionKw=1.5, durationS=120)
    assert ack["ok"] is True and site.engine.event is not None


def test_default_limits_accept_an_ordinary_event(site):
    ack = site.command(op="event", correlationId="ok", eventId="ok", requestedReductionKw=2.0, durationS=3600,
                       startTime=site.clock.now + 3600)
    assert ack["ok"] is True


# --- venId ----------------------------------------------------------------------------------------------------------
def test_commands_for_another_ven_are_refused_counted_and_logged_once_a_minute(site, caplog):
    before = site.writable_values()
    with caplog.at_level(logging.WARNING, logger="dr_ven_load_control.intake"):
        for i in range(50):
            ack = site.command(op="event", correlationId=f"x{i}", venId="ven-other", requestedReductionKw=2.0,
                               durationS=60)
            assert ack["ok"] is False and "'venId'" in ack["error"] and ack["venId"] == "ven-demo"
    assert site.writable_values() == before and site.engine.event is None
    assert site.engine.status()["rejects"]["byReason"]["venId"] == 50
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


# --- live report after shed writes -----------------------------------------------------------------------------------
def test_the_reported_shed_shows_the_devices_within_a_second_of_the_command(site):
    start = site.clock.now
    site.command(op="event", correlationId="e", eventId="e", requestedReductionKw=2.0, durationS=600)
    assert not site.engine.live_report_due()
    site.clock.now = site.engine.next_deadline()
    assert site.clock.now - start <= 1.0 and site.engine.live_report_due()
    site.engine.on_meter_live(site.meter_kw())  # what the agent reads through platform.driver
    report = site.engine.telemetry().to_payload()
    assert report["shedPowerKw"] >= 0.95 * 2.0 and report["eventId"] == "e"
    assert not site.engine.live_report_due()
    # the next publishes carry the driver's previous poll (before the writes): the report keeps the live value
    for _ in range(4):
        site.run(1.25)
        assert site.engine.telemetry().shed_power_kw >= 0.95 * 2.0
    # the closed loop's later corrections are reported by the periodic telemetry, not by more live reads
    site.engine.ops_done([(Op("set", "demo/ev_charger", "PowerLimitKw", 5.0, "ev_charger", "shed"), None)])
    assert site.engine.live_report_at is None


def test_no_live_report_when_switched_off():
    site = SiteHarness(config=ven_config(liveReadAfterShedS=0))
    site.run(30)
    site.command(op="event", correlationId="e", eventId="e", requestedReductionKw=2.0, durationS=600)
    site.clock.now += 1.0
    assert not site.engine.live_report_due()
    assert site.engine.telemetry().shed_power_kw < 0.95 * 2.0  # the last publish predates the writes


# --- telemetry loads ---------------------------------------------------------------------------------------------------
def test_every_load_reports_state_power_action_constraint_override_and_opt_out(site):
    site.engine.set_override("battery", True)
    site.command(op="event", correlationId="e", eventId="e", requestedReductionKw=3.0, durationS=600)
    site.run(11)
    payload = site.engine.telemetry().to_payload()
    loads = payload["loads"]
    assert set(loads) == set(site.engine.models)
    for lid, entry in loads.items():
        assert set(entry) == LOAD_KEYS, lid
    ev = loads["ev_charger"]
    assert ev["state"] == "shed" and ev["shedKw"] > 0 and ev["powerKw"] is not None
    assert ev["action"]["type"] == "powerLimit" and ev["action"]["from"] == {"PowerLimitKw": 7.2}
    assert ev["action"]["points"] == ev["setPoints"] and ev["action"]["restoring"] is False
    assert ev["constraint"]["type"] == "departureEnergy" and "text" in ev["constraint"]
    assert loads["water_heater"]["constraint"]["type"] == "tankTemperature"
    assert loads["hvac"]["constraint"]["type"] == "comfortBand"
    assert loads["battery"]["constraint"]["type"] == "reserve"
    assert loads["battery"]["override"] is True and loads["battery"]["state"] == "override"
    assert loads["panel.Fridge"]["critical"] is True and loads["panel.Fridge"]["state"] == "critical"
    assert loads["panel.Fridge"]["constraint"] == {"type": "critical", "limiting": True,
                                                   "text": "critical circuit, never shed"}
    assert loads["panel.Laundry"]["constraint"] is None
    assert not any(entry["optOut"] for entry in loads.values())
    Telemetry.from_payload(payload)  # what the bridge and dr.vtn accept

    site.engine.set_opt_out(True)
    site.run(11)
    loads = site.engine.telemetry().to_payload()["loads"]
    assert all(entry["optOut"] for entry in loads.values())


def test_a_binding_constraint_is_marked_limiting():
    site = SiteHarness(device_overrides={"water_heater": {"tank_temp_c": 44.0}})
    site.run(30)
    loads = site.engine.telemetry().to_payload()["loads"]
    heater = loads["water_heater"]
    assert heater["constraint"]["limiting"] is True and heater["state"] == "limited" and heater["blocked"]
