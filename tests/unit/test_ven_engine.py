"""The VEN engine on the demo site's simulated devices (dr_devices physics, fake clock, no platform):
accuracy, closed loop, constraints, restores, restart, opt-out and override."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from dr_ven_load_control.engine import REVERT

from tests.unit.test_ven_harness import SiteHarness, ven_config

# A water heater that holds still (mid-band, no hot-water draws): the site's power then moves only with the VEN.
STILL_HEATER = {"water_heater": {"tank_temp_c": 52.0, "draws_per_hour": 0.0}}


def settled(site: SiteHarness, seconds: float = 300) -> SiteHarness:
    site.run(seconds)
    return site


def reductions_after(site: SiteHarness, since: float) -> list[float]:
    base = site.engine.event.baseline_kw
    return [base - kw for t, kw in site.meter_log if t > since]


def test_two_kw_event_is_on_target_at_the_first_scrape_and_holds_within_2_percent():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    start = site.clock.now
    pre = [kw for t, kw in site.meter_log if t > start - 300]
    ack = site.event(2.0, duration_s=1800)
    assert ack["ok"] and ack["data"]["acceptedReduceKw"] == pytest.approx(2.0)
    assert site.engine.event.baseline_kw == pytest.approx(sum(pre) / len(pre), abs=1e-3)
    # the first point write went out with the command, before any scrape
    assert site.log[0][0] == start and site.log[0][1].point == "PowerLimitKw"
    site.run(5)
    first = reductions_after(site, start)[0]
    assert first == pytest.approx(2.0, rel=0.05)
    site.run(1790)
    steady = reductions_after(site, start + 10)
    assert len(steady) > 300
    assert all(abs(r - 2.0) <= 0.04 for r in steady), [round(r, 3) for r in steady if abs(r - 2.0) > 0.04][:5]
    assert site.engine.counters["write_failures"] == 0


def test_a_cycling_water_heater_is_absorbed_by_the_next_scrape():
    # hot-water draws cool the tank: the element switches on and off during the event
    site = settled(SiteHarness(device_overrides={"water_heater": {"tank_temp_c": 51.0, "draws_per_hour": 4.0}}))
    start = site.clock.now
    site.event(3.0, duration_s=3600)
    site.run(3590)
    red = reductions_after(site, start)
    heater = [r["loads"]["water_heater"]["powerKw"] for r in site.telemetry_log[-len(red):]]
    switches = sum(1 for a, b in zip(heater[:-1], heater[1:], strict=True) if a != b)
    assert switches >= 2, "the water heater did not cycle: the scenario did not exercise the loop"
    off_target = [i for i, r in enumerate(red[:-2]) if abs(r - 3.0) > 3.0 * 0.02]
    # off target only for the two scrapes after a thermostat switch (the driver publishes the previous poll, so
    # the VEN sees a switch one scrape late); the one after is back within 2 %
    assert len(off_target) <= 2 * (switches + 1)
    recovered = [i for i in off_target if abs(red[i + 1] - 3.0) <= 0.06 or abs(red[i + 2] - 3.0) <= 0.06]
    assert recovered == off_target, [round(r, 2) for r in red]


def test_big_event_uses_every_kind_in_order_and_never_the_critical_circuit():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    before = site.writable_values()
    ack = site.event(12.0, duration_s=600)
    assert ack["ok"]
    shed = site.engine.actions
    assert {"ev_charger", "hvac", "panel.Laundry", "panel.Kitchen"} <= set(shed)
    assert "panel.Fridge" not in shed
    assert sum(a.shed_kw for a in shed.values()) <= 12.0 + site.cfg.margin_kw(12.0) + 1e-6
    site.run(30)
    assert site.point("demo/panel", "FridgeEnable") is True
    assert all(op.point != "FridgeEnable" for _, op, _ in site.log)
    assert site.reduction() == pytest.approx(12.0, rel=0.05)
    site.run(600)
    assert site.writable_values() == before


def test_an_impossible_target_sheds_what_is_allowed_and_says_so():
    site = settled(SiteHarness(device_overrides={"battery": {"soc_percent": 25.0}}))
    ack = site.event(40.0, duration_s=3600)
    data = ack["data"]
    assert ack["ok"] and data["targetKw"] == 40.0 and 5.0 < data["acceptedReduceKw"] < 40.0
    assert "can shed" in data["detail"]
    # battery: (25 % - 20 %) of 13.5 kWh over the hour left, not its 5 kW rating
    assert site.engine.actions["battery"].shed_kw == pytest.approx(0.675, abs=0.01)
    assert "panel.Fridge" not in site.engine.actions
    site.run(20)
    assert site.reduction() == pytest.approx(data["acceptedReduceKw"], rel=0.1)


def test_at_until_every_point_goes_back_staggered_last_shed_first():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    before = site.writable_values()
    site.event(9.0, duration_s=60)
    shed_order = [op.load_id for _, op, _ in site.log if op.purpose == "shed"]
    assert len(shed_order) >= 3
    until = site.engine.event.until
    site.run(60 + site.cfg.restore_stagger_s * len(shed_order) + 5)
    restores = [(t, op) for t, op, err in site.log if op.purpose == "restore" and err is None]
    assert [op.load_id for _, op in restores] == list(reversed(sorted(set(shed_order), key=shed_order.index)))
    times = [t for t, _ in restores]
    assert times[0] == pytest.approx(until, abs=0.5)
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    assert all(g == pytest.approx(site.cfg.restore_stagger_s, abs=0.5) for g in gaps)
    assert site.writable_values() == before
    assert site.engine.actions == {} and site.engine.event is None
    assert site.engine.counters["events_completed"] == 1


def test_restore_method_revert_uses_revert_point():
    site = settled(SiteHarness(config=ven_config(restoreMethod="revert"), device_overrides=STILL_HEATER))
    site.event(2.0, duration_s=30)
    site.run(40)
    kinds = [op.kind for _, op, _ in site.log if op.purpose == "restore"]
    assert kinds == [REVERT] and site.point("demo/ev_charger", "PowerLimitKw") == 7.2


def test_a_crash_mid_event_resumes_from_the_state_file_and_still_restores_on_time(tmp_path):
    site = settled(SiteHarness(device_overrides=STILL_HEATER, state_path=tmp_path / "ven_state.json"))
    before = site.writable_values()
    site.event(2.0, duration_s=120)
    until = site.engine.event.until
    site.run(30)
    baseline = site.engine.event.baseline_kw
    # the process dies: no restore; a new engine reads the state file
    site.engine = site.new_engine()
    site.execute(site.engine.resume())
    assert site.engine.event.baseline_kw == baseline and "ev_charger" in site.engine.actions
    assert site.engine.actions["ev_charger"].originals == {"PowerLimitKw": 7.2}
    site.run(5)
    assert site.reduction() == pytest.approx(2.0, rel=0.02)
    site.run(until - site.clock.now + 1)
    assert site.writable_values() == before
    assert any(op.purpose == "restore" and abs(t - until) <= 0.5 for t, op, _ in site.log)


def test_a_stop_restores_everything_and_a_restart_resumes_the_event(tmp_path):
    site = settled(SiteHarness(device_overrides=STILL_HEATER, state_path=tmp_path / "ven_state.json"))
    before = site.writable_values()
    site.event(2.0, duration_s=120)
    site.run(20)
    site.execute(site.engine.restore_all("agent stop"))
    assert site.writable_values() == before and site.engine.actions == {}
    site.run(3)
    site.engine = site.new_engine()
    site.execute(site.engine.resume())
    assert site.engine.event is not None and site.engine.event.started
    site.run(10)
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)
    assert site.reduction() == pytest.approx(2.0, rel=0.02)


def test_an_event_that_ended_while_the_agent_was_down_is_restored_on_start(tmp_path):
    site = settled(SiteHarness(device_overrides=STILL_HEATER, state_path=tmp_path / "ven_state.json"))
    before = site.writable_values()
    site.event(9.0, duration_s=60)
    assert len(site.engine.actions) >= 2
    site.clock.now += 600  # down past `until`
    site.engine = site.new_engine()
    site.execute(site.engine.resume())
    site.run(30)
    assert site.writable_values() == before and site.engine.event is None
    assert site.engine.counters["events_expired_on_resume"] == 1


def test_a_pending_event_sheds_nothing_until_its_start():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    start = site.clock.now + 30
    ack = site.command(op="event", correlationId="p1", eventId="later", requestedReductionKw=2.0,
                       startTime=start, until=start + 60)
    assert ack["ok"] and ack["data"]["acceptedReduceKw"] == 2.0 and "starts at" in ack["data"]["detail"]
    site.run(29)
    assert site.log == [] and not site.engine.event.started
    site.run(2)
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)
    assert [t for t, _, _ in site.log][0] == pytest.approx(start, abs=0.5)


def test_shed_panel_naming_circuits_uses_only_those():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    ack = site.command(op="shedPanel", correlation_id="s1", event_id="sp", requested_reduction_kw=2.0,
                       duration_s=60, circuits=["Kitchen", "Laundry"])
    assert ack["ok"] and ack["data"]["acceptedReduceKw"] == pytest.approx(2.0, rel=0.01)
    assert set(site.engine.actions) == {"panel.Kitchen", "panel.Laundry"}
    site.run(5)
    assert site.reduction() == pytest.approx(2.0, rel=0.05)


def test_the_loop_releases_the_others_when_the_ev_finishes_charging():
    # 0.75 kWh left and leaving in 12 minutes: the EV must keep about 4.1 kW, so the HVAC and a circuit shed too
    ev = {"soc_percent": 89.0, "departure_hours": 0.2, "charge_efficiency": 1.0}
    site = settled(SiteHarness(device_overrides={**STILL_HEATER, "ev_charger": ev}), 60)
    keep_kw = (site.point("demo/ev_charger", "EnergyNeededKwh") * 1.1 / site.point("demo/ev_charger", "DepartureHours"))
    site.event(4.5, duration_s=3600)
    assert "ev_charger" in site.engine.actions and len(site.engine.actions) >= 2
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(keep_kw, abs=0.05)
    site.run(900)
    assert site.point("demo/ev_charger", "PowerKw") == 0.0  # done (and gone)
    # the EV's own 7.2 kW now exceed the request: every action went back, nothing is shed to no purpose
    assert site.engine.actions == {}
    assert site.point("demo/hvac", "CoolingSetpointC") == 24.0
    assert site.point("demo/ev_charger", "PowerLimitKw") == 7.2


def test_a_constraint_binding_mid_event_releases_the_load_and_others_make_up():
    site = settled(SiteHarness(device_overrides={"water_heater": {"tank_temp_c": 46.0, "draws_per_hour": 0.0}}))
    site.event(11.7, duration_s=3600)
    assert "water_heater" in site.engine.actions
    site.models["demo/water_heater"].temp_c = 44.9  # a big draw
    site.run(10)
    assert "water_heater" not in site.engine.actions
    assert site.point("demo/water_heater", "ElementEnable") is True
    assert site.engine.counters["forced_releases"] >= 1
    site.run(10)
    assert site.reduction() == pytest.approx(11.7, rel=0.05)


def test_opt_out_restores_and_is_reported_then_opting_back_in_sheds_again():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    before = site.writable_values()
    site.event(6.0, duration_s=600)
    state, ops = site.engine.set_opt_out(True)
    site.execute(ops)
    site.run(20)
    assert site.writable_values() == before and state["optOut"] is True
    assert site.telemetry_log[-1]["optOut"] is True
    ping = site.command(op="ping", correlationId="p")
    assert ping["data"]["optOut"] is True
    _, ops = site.engine.set_opt_out(False)
    site.execute(ops)
    site.run(5)
    assert site.reduction() == pytest.approx(6.0, rel=0.05)


def test_override_of_one_load_gives_it_back_and_shows_in_ack_and_telemetry():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    site.event(2.0, duration_s=600)
    _, ops = site.engine.set_override("ev_charger", True)
    site.execute(ops)
    assert site.point("demo/ev_charger", "PowerLimitKw") == 7.2
    assert site.engine.actions and "ev_charger" not in site.engine.actions
    site.run(10)
    assert site.reduction() == pytest.approx(2.0, rel=0.05)
    assert site.telemetry_log[-1]["loads"]["ev_charger"]["override"] is True
    ack = site.event(2.5, duration_s=600, eventId="evt-1", modificationNumber=1)
    assert ack["data"]["overrides"] == ["ev_charger"]
    with pytest.raises(ValueError, match="unknown load"):
        site.engine.set_override("jacuzzi", True)


def test_standing_opt_out_from_the_config_store_accepts_nothing():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    site.execute(site.engine.apply_config_overrides(True, []))
    ack = site.event(2.0, duration_s=60)
    assert ack["ok"] and ack["data"]["acceptedReduceKw"] == 0.0 and ack["data"]["optOut"] is True
    assert site.log == []


def test_telemetry_carries_the_seed_fields_and_the_event_id():
    site = settled(SiteHarness(device_overrides=STILL_HEATER), 60)
    idle = site.telemetry_log[-1]
    assert idle["eventId"] is None and idle["shedPowerKw"] == 0.0 and idle["requestedReductionKw"] == 0.0
    assert idle["baselinePowerKw"] == pytest.approx(idle["usedPowerKw"], abs=0.05)
    site.event(2.0, duration_s=60, eventId="evt-tel")
    site.run(10)
    report = site.telemetry_log[-1]
    for field in ("venId", "ts", "usedPowerKw", "shedPowerKw", "requestedReductionKw", "eventId", "baselinePowerKw"):
        assert field in report
    assert report["venId"] == "ven-demo" and report["eventId"] == "evt-tel" and report["requestedReductionKw"] == 2.0
    assert report["shedPowerKw"] == pytest.approx(2.0, rel=0.02)
    assert report["baselinePowerKw"] - report["usedPowerKw"] == pytest.approx(report["shedPowerKw"], abs=1e-3)
    assert report["loads"]["ev_charger"]["shedKw"] == pytest.approx(2.0)
    assert report["loads"]["ev_charger"]["setPoints"] == {"PowerLimitKw": 5.2}
    assert report["loads"]["panel.Fridge"]["critical"] is True
    assert report["availableShedKw"] > 5.0


def test_a_failed_shed_write_moves_on_to_the_next_load_and_a_failed_restore_is_retried():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    before = site.writable_values()
    real_apply = site.apply
    failing = {"demo/ev_charger"}

    def flaky(op):
        if op.path in failing:
            # a refusal (Modbus exception 4): nothing was written
            raise __import__("dr_devices").PointError("ExceptionResponse(dev_id=3, function_code=144, exception_code=4)")
        real_apply(op)

    site.apply = flaky
    site.event(2.0, duration_s=30)
    assert "ev_charger" not in site.engine.actions and site.engine.counters["write_failures"] == 1
    site.run(5)
    assert site.reduction() == pytest.approx(2.0, rel=0.05)  # made up by the next loads at the next scrape
    failing.clear()
    site.run(5)
    failing.update(site.engine.actions[lid].path for lid in site.engine.actions)
    site.run(30)  # until passes: every restore fails
    assert site.engine.actions and site.engine.counters["restore_failures"] >= 2
    failing.clear()
    site.run(70)
    assert site.engine.actions == {} and site.writable_values() == before


def test_a_new_event_replaces_the_current_one_and_keeps_its_baseline():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    site.event(2.0, duration_s=600, eventId="a")
    baseline = site.engine.event.baseline_kw
    site.run(30)
    ack = site.event(4.0, duration_s=600, eventId="b")
    assert ack["ok"] and site.engine.event.event_id == "b" and site.engine.event.baseline_kw == baseline
    site.run(10)
    assert site.reduction() == pytest.approx(4.0, rel=0.02)
    old = site.event(1.0, duration_s=600, eventId="b", modificationNumber=0)
    assert old["ok"]
    newer = site.event(1.0, duration_s=600, eventId="b", modificationNumber=2)
    stale = site.event(5.0, duration_s=600, eventId="b", modificationNumber=1)
    assert newer["ok"] and stale["ok"] is False and "modificationNumber" in stale["error"]


def test_bad_device_messages_are_counted_and_change_nothing():
    site = settled(SiteHarness(device_overrides=STILL_HEATER), 20)
    assert site.engine.on_device("demo/meter", ["not", "a", "dict"]) == []
    assert site.engine.on_device("demo/meter", {"PowerKw": "lots"}) == []
    assert site.engine.counters["problems"] == 2
    site.event(2.0, duration_s=60)
    site.run(5)
    assert site.reduction() == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("gap_s", [0.5, 2.0, 4.5, 5.0, 7.0])
def test_back_to_back_events_record_true_pre_event_values_despite_the_publish_lag(gap_s):
    """The driver publishes the previous poll: for one scrape after a restore the readings still show the shed.
    The next event must neither take those as pre-event values nor as the EV's power, nor put them in its
    baseline."""
    site = settled(SiteHarness(device_overrides=STILL_HEATER), 300.2)  # restores fall between scrapes
    before = site.writable_values()
    site.event(2.0, duration_s=30, eventId="first")
    site.run(30)
    assert site.point("demo/ev_charger", "PowerLimitKw") == 7.2
    first_baseline = site.engine.last_event_summary["baselineKw"]
    site.run(gap_s)
    site.event(2.0, duration_s=30, eventId="second")
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)
    assert site.engine.actions["ev_charger"].originals == {"PowerLimitKw": 7.2}
    assert site.engine.event.baseline_kw == pytest.approx(first_baseline, abs=0.01)
    site.run(10)
    assert site.reduction() == pytest.approx(2.0, rel=0.02)
    site.run(25)
    assert site.writable_values() == before


def test_a_meter_reading_that_may_or_may_not_show_the_last_write_asks_for_a_live_read():
    site = settled(SiteHarness(device_overrides=STILL_HEATER), 300.2)
    engine = site.engine
    shows = engine.site.meter[0]
    assert not engine.meter_uncertain()
    site.event(2.0, duration_s=60)  # a write 5.2 s after the instant the last publish shows
    assert not engine.meter_uncertain()
    engine.site.effects.append((shows + 0.1, -2.0, 0))  # as if a write had gone out right at that instant
    assert engine.meter_uncertain()
    site.clock.now += 0.01
    engine.on_meter_live(site.meter_kw())
    assert not engine.meter_uncertain() and engine.counters["meter_live_reads"] == 1
    assert engine.site.meter_now() == pytest.approx(site.meter_kw())


@pytest.mark.parametrize("restart_after_s", [1.2, 3.0, 5.0])
@pytest.mark.parametrize("gap_s", [2.0, 4.0, 6.0])
def test_an_event_right_after_one_that_survived_a_restart_lands_on_target(tmp_path, restart_after_s, gap_s):
    site = settled(SiteHarness(device_overrides=STILL_HEATER, state_path=tmp_path / "ven_state.json"), 300.2)
    before = site.writable_values()
    baseline = None
    site.event(2.0, duration_s=45, eventId="two")
    baseline = site.engine.event.baseline_kw
    site.run(restart_after_s)
    site.execute(site.engine.restore_all("agent stop"))
    site.run(0.4)
    site.engine = site.new_engine()
    for device in site.cfg.device_paths[::-1]:  # the agent reads every device once on start, meter last
        site.execute(site.engine.on_device(device, site.values(device), live=True))
    site.execute(site.engine.resume())
    site.run(45 - restart_after_s - 0.4 + gap_s)
    assert site.engine.event is None and site.writable_values() == before
    site.event(2.0, duration_s=35, eventId="three")
    assert site.engine.event.baseline_kw == pytest.approx(baseline, abs=0.01)
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)
    site.run(11)
    assert site.reduction() == pytest.approx(2.0, rel=0.02)


EXAMPLES = itertools.count()
STEPS = st.lists(st.tuples(st.sampled_from(["event", "event", "restore", "stop", "crash", "wait"]),
                           st.floats(0.1, 12.0), st.floats(0.5, 14.0)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
@example(steps=[("event", 5.0, 1.0), ("event", 1.0, 2.0), ("stop", 1.0, 1.0)])
@example(steps=[("event", 1.0, 1.0), ("crash", 11.0, 1.0)])
@example(steps=[("event", 1.5, 1.0), ("event", 1.75, 1.0), ("event", 1.75, 1.0), ("restore", 0.75, 1.0),
                ("event", 5.0, 1.0), ("event", 1.0, 1.0)])
def test_any_timing_of_events_restores_stops_and_crashes_keeps_the_site_on_target_and_gives_it_back(tmp_path,
                                                                                                     steps):
    """Events, restores, clean stops (restore, then resume) and crashes (resume only) at any moment, including
    within the driver's publish lag: never more shed than asked plus the margin, on target once settled, and
    every point back at its pre-event value in the end. (Run with many more examples while developing.)"""
    state = tmp_path / f"ven_state_{next(EXAMPLES)}.json"  # hypothesis reuses tmp_path: a file per example
    site = settled(SiteHarness(device_overrides=STILL_HEATER, state_path=state), 300.2)
    before = site.writable_values()
    last_change = site.clock.now
    for n, (kind, delay, kw) in enumerate(steps):
        if kind == "event":
            site.event(round(kw, 2), duration_s=40, eventId=f"e{n}")
            last_change = site.clock.now
        elif kind == "restore":
            site.command(op="restore", correlationId=f"r{n}")
            last_change = site.clock.now
        elif kind in ("stop", "crash"):
            if kind == "stop":
                site.execute(site.engine.restore_all("agent stop"))
            site.engine = site.new_engine()
            for device in site.cfg.device_paths[::-1]:
                site.execute(site.engine.on_device(device, site.values(device), live=True))
            site.execute(site.engine.resume())
            last_change = site.clock.now
        site.run(delay)
        event = site.engine.event
        if event is not None and event.started:
            planned = sum(a.shed_kw for a in site.engine.actions.values() if not a.restoring)
            assert planned <= event.requested_kw + site.cfg.margin_kw(event.requested_kw) + 0.3  # + an HVAC step
            # settled (two scrapes since the last change) on a target the EV alone covers: within 2 %
            if site.clock.now - last_change >= 11 and event.until - site.clock.now > 1 and event.requested_kw <= 7:
                assert site.reduction() == pytest.approx(event.requested_kw, rel=0.02, abs=0.02)
    site.run(60)
    assert site.engine.actions == {} and site.engine.event is None
    assert site.writable_values() == before
