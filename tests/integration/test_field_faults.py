"""Faults of field equipment during a shed, on the `field` site (fixture and helpers of test_field_shed.py):
a device that stops answering mid-event, one that refuses the VEN's write, a slow one, and a driver whose
revert goes back to the shed value.

Order matters: the VEN leaves a load whose shed write failed out for 60 s, so the charger that refuses writes
comes after the test that needs it shed."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import gevent
import pytest

from dr_common import topics
from dr_common.topics import VenRpc

from .test_field_shed import (  # noqa: F401  (field is a fixture)
    COMMANDABLE, CONFIG, IDENTITY, METER, VEN_ID, ctl, field, iso, send, writable,
)

pytestmark = pytest.mark.integration

EVENT_S = 50


def idle(vp, rec, ports) -> None:
    """No fault, no event of an earlier test: restore and wait until the VEN holds no action."""
    ctl(ports, op="clear")
    send(vp, rec, {"op": "restore", "correlationId": f"itest-field-clean-{time.monotonic()}"})
    vp.wait_for(lambda: not vp.rpc(IDENTITY, VenRpc.STATUS)["actions"], timeout=60, what="the VEN idle")


def start_event(vp, rec, name: str) -> tuple[float, datetime, float]:
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=EVENT_S)
    t_cmd = time.monotonic()
    ack = send(vp, rec, {"op": "event", "correlationId": f"itest-{name}", "eventId": f"itest-{name}-evt",
                         "venId": VEN_ID, "requestedReductionKw": 2.0, "startTime": iso(now), "until": iso(until)})
    assert ack["ok"] is True, ack
    return t_cmd, until, vp.rpc(IDENTITY, VenRpc.STATUS)["event"]["baselineKw"]


def reductions(vp, rec, t_cmd: float, baseline: float, count: int) -> list[float]:
    got = vp.wait_for(lambda: len(rec.on(METER, t_cmd)) >= count and rec.on(METER, t_cmd), timeout=15 + 5 * count,
                      what=f"{count} meter publishes")
    return [baseline - m[0]["PowerKw"] for _, m in got[:count]]


def wait_past(until: datetime, extra_s: float) -> None:
    gevent.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + extra_s)


def last_loads(rec, t_cmd: float, event_id: str) -> dict:
    return [m for _, m in rec.on(topics.bus_telemetry(VEN_ID), t_cmd) if m.get("eventId") == event_id][-1]["loads"]


def assert_all_back(vp, ports, before) -> None:
    values = writable(vp)
    for point, value in before.items():
        assert values[point] == pytest.approx(value), point
    for device, obj in COMMANDABLE.items():
        assert ctl(ports, op="priority", device=device, object=obj)["slots"] == {}, device


def test_a_device_that_stops_answering_mid_event_is_restored_once_it_answers_again(field, figure):
    vp, rec, ports = field
    idle(vp, rec, ports)
    before = writable(vp)
    t_cmd, until, baseline = start_event(vp, rec, "field-silent")
    shed = reductions(vp, rec, t_cmd, baseline, 4)
    loads = last_loads(rec, t_cmd, "itest-field-silent-evt")
    assert loads["ev_charger"]["setPoints"], loads["ev_charger"]
    ctl(ports, op="fault", device="ev_charger", silent=True)
    t_silent = time.monotonic()
    shed += reductions(vp, rec, t_silent, baseline, 4)
    figure("field site, EV charger stops answering after the 4th scrape: metered reduction (kW per scrape)",
           ", ".join(f"{r:.3f}" for r in shed))
    for r in shed[5:]:
        assert r == pytest.approx(2.0, rel=0.10)       # the charger keeps its last limit; the shed holds
    wait_past(until, 0.0)
    # the thermostat is given back while the charger stays silent: its restore waits for no other device's
    # timeout, and a restore of it that fails is retried (bound: staggers, two timeouts and a retry, and slack)
    bound = 4 * CONFIG["restoreStaggerS"] + 2 * (CONFIG["rpcTimeoutS"] + CONFIG["retryS"]) + 10
    vp.wait_for(lambda: ctl(ports, op="priority", device="thermostat", object=COMMANDABLE["thermostat"])["slots"]
                == {}, timeout=bound, what="the thermostat's setpoint relinquished while the charger is silent")
    figure("field site, EV charger silent at the end: thermostat relinquished after the event's end (s)",
           f"{(datetime.now(timezone.utc) - until).total_seconds():.1f}")
    status = vp.rpc(IDENTITY, VenRpc.STATUS)
    assert "ev_charger" in status["actions"], status  # its restore failed: still held, retried
    health = vp.rpc(IDENTITY, VenRpc.HEALTH)
    assert any("ev_charger" in p for p in health["problems"]), health
    ctl(ports, op="clear")
    vp.wait_for(lambda: not vp.rpc(IDENTITY, VenRpc.STATUS)["actions"], timeout=90,
                what="the EV charger's restore retried once it answers")
    assert_all_back(vp, ports, before)


def test_a_write_the_device_refuses_is_reported_and_the_other_loads_make_up(field, figure):
    vp, rec, ports = field
    idle(vp, rec, ports)
    before = writable(vp)
    ctl(ports, op="fault", device="ev_charger", refuseWrites=True)      # Modbus exception 04 on every write
    t_cmd, until, baseline = start_event(vp, rec, "field-refused")
    shed = reductions(vp, rec, t_cmd, baseline, 7)
    figure("field site, EV charger refuses writes: metered reduction (kW per scrape)",
           ", ".join(f"{r:.3f}" for r in shed))
    steady = shed[3:]
    assert sum(steady) / len(steady) == pytest.approx(2.0, rel=0.05)
    loads = last_loads(rec, t_cmd, "itest-field-refused-evt")
    assert loads["ev_charger"]["setPoints"] == {}
    assert loads["battery"]["setPoints"] or loads["water_heater"]["setPoints"]   # made up by another load
    health = vp.rpc(IDENTITY, VenRpc.HEALTH)
    assert any("ev_charger" in p for p in health["problems"]), health
    assert ctl(ports, op="read", device="ev_charger", point="PowerLimitKw")["value"] == pytest.approx(7.2)
    wait_past(until, 4 * CONFIG["restoreStaggerS"] + 3)
    ctl(ports, op="clear")
    assert vp.rpc(IDENTITY, VenRpc.STATUS)["actions"] == {}
    assert_all_back(vp, ports, before)


def test_a_slow_device_within_its_timeout_still_sheds_and_restores(field, figure):
    vp, rec, ports = field
    idle(vp, rec, ports)
    before = writable(vp)
    ctl(ports, op="fault", device="ev_charger", delayS=0.6)   # the device config allows 1 s per request
    ctl(ports, op="fault", device="thermostat", delayS=0.6)   # BACnet apdu_timeout 1 s
    t_cmd, until, baseline = start_event(vp, rec, "field-slow")
    shed = reductions(vp, rec, t_cmd, baseline, 8)
    figure("field site, EV charger and thermostat answer 0.6 s late: metered reduction (kW per scrape)",
           ", ".join(f"{r:.3f}" for r in shed))
    # on target for the last 20 s (which scrape first shows the slow devices' writes varies by one period with
    # the machine's load: CI saw the first shed at the 3rd scrape, other runs at the 2nd)
    steady = shed[-4:]
    assert sum(steady) / len(steady) == pytest.approx(2.0, rel=0.05)
    wait_past(until, 4 * (CONFIG["restoreStaggerS"] + 1.2))
    vp.wait_for(lambda: vp.rpc(IDENTITY, VenRpc.STATUS)["actions"] == {}, timeout=20,
                what="every slow device given back")
    assert_all_back(vp, ports, before)
    ctl(ports, op="clear")


def test_a_device_slower_than_its_timeouts_that_applies_writes_late_is_given_back(field, figure):
    """Writes time out in the driver but the devices apply them late: the VEN counts them possibly written,
    restores them (retried while the devices stay slow) and corrects a revert that went back to the late value."""
    vp, rec, ports = field
    idle(vp, rec, ports)
    before = writable(vp)
    # beyond Modbus timeout 1 s x (1 retry + 1) and BACnet apdu_timeout 1 s x (1 retry + 1): the driver reports
    # each write failed, the device applies it 2.5 s after each attempt
    ctl(ports, op="fault", device="ev_charger", delayS=2.5)
    ctl(ports, op="fault", device="thermostat", delayS=2.5)
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=80)
    t_cmd = time.monotonic()
    vp.publish(topics.bus_cmd(VEN_ID), {"op": "event", "correlationId": "itest-field-late",
                                        "eventId": "itest-field-late-evt", "venId": VEN_ID,
                                        "requestedReductionKw": 2.0, "startTime": iso(now), "until": iso(until)})
    acks = vp.wait_for(lambda: [m for _, m in rec.on(topics.bus_ack(VEN_ID), since=t_cmd)
                                if m.get("correlationId") == "itest-field-late"], timeout=60,
                       what="the ack (its writes wait for the slow devices)")
    assert acks[0]["ok"] is True, acks[0]
    status = vp.rpc(IDENTITY, VenRpc.STATUS)
    assert status["counters"].get("writes_possibly_applied", 0) >= 1, status["counters"]
    assert any("possibly written" in p for p in status["problems"]), status["problems"]
    baseline = status["event"]["baselineKw"]
    shed = reductions(vp, rec, t_cmd, baseline, 13)
    figure("field site, EV charger and thermostat 2.5 s late (beyond their timeouts): metered reduction "
           "(kW per scrape)", ", ".join(f"{r:.3f}" for r in shed))
    # the loop acts on the meter: the over-shed of the late writes is taken back, the last scrapes on target
    steady = shed[-3:]
    assert sum(steady) / len(steady) == pytest.approx(2.0, rel=0.10)
    wait_past(until, 4 * CONFIG["restoreStaggerS"] + 5)
    assert vp.rpc(IDENTITY, VenRpc.STATUS)["actions"], "the slow devices' restores are still being retried"
    ctl(ports, op="clear")
    vp.wait_for(lambda: not vp.rpc(IDENTITY, VenRpc.STATUS)["actions"], timeout=120,
                what="every restore done once the devices answer in time")

    seen: dict = {}

    def back() -> bool:
        values = writable(vp)
        slots = [ctl(ports, op="priority", device=d, object=o)["slots"] for d, o in COMMANDABLE.items()]
        seen.update(differ={p: (values[p], v) for p, v in before.items() if values[p] != pytest.approx(v)},
                    slots=slots)
        return not seen["differ"] and slots == [{}, {}]

    t_back = time.monotonic()
    try:
        vp.wait_for(back, timeout=60, what="every point at its pre-event value, priority arrays empty")
    except AssertionError as exc:
        status = vp.rpc(IDENTITY, VenRpc.STATUS)
        raise AssertionError(f"{exc}: {seen} (now, before); VEN counters {status['counters']}; "
                             f"problems {status['problems'][-6:]}") from None
    figure("field site, late writes: pre-event values and empty priority arrays after the last restore (s)",
           f"{time.monotonic() - t_back:.1f}")
    assert_all_back(vp, ports, before)
    # the possibly-written points are checked at their next readings after the revert
    counters = vp.wait_for(lambda: (c := vp.rpc(IDENTITY, VenRpc.STATUS)["counters"]).get("restores_checked", 0)
                           + c.get("restore_checks_given_up", 0) >= 1 and c, timeout=30,
                           what="the possibly-written points checked after their restore")
    assert counters.get("restore_checks_given_up", 0) == 0, counters
    assert_all_back(vp, ports, before)
    figure("field site, late writes: VEN counters", ", ".join(
        f"{k}={counters.get(k, 0)}" for k in ("writes_possibly_applied", "restore_failures", "restore_corrections",
                                              "restores_checked")))


#: the Modbus loads the VEN may shed, and their point (the stock Modbus interface's revert goes to a scraped value)
MODBUS_LOADS = {"ev_charger": "PowerLimitKw", "battery": "PowerSetpointKw"}


def test_a_revert_that_goes_back_to_the_shed_value_is_corrected(field, figure):
    """The stock Modbus interface reverts a point to the last value it scraped while the point was not marked
    dirty. CI saw a scrape complete while the battery's shed write was on its way (behind a slow charger on the
    same Modbus proxy): the driver kept the shed setpoint as the value to revert to, and the event's final revert
    left the battery discharging. Made certain here: right after the VEN's revert of a Modbus load, the device
    shows the VEN's shed value again (as that scrape, or a late write, leaves it), so the driver's next scrape
    keeps it. The VEN reads its own value after the restore, reverts again, and writes the pre-event value."""
    vp, rec, ports = field
    idle(vp, rec, ports)
    before = writable(vp)
    t_cmd, until, baseline = start_event(vp, rec, "field-stale-revert")
    reductions(vp, rec, t_cmd, baseline, 3)
    actions = vp.rpc(IDENTITY, VenRpc.STATUS)["actions"]
    shed = {lid: (point, actions[lid]["commanded"][point], actions[lid]["originals"][point])
            for lid, point in MODBUS_LOADS.items() if point in actions.get(lid, {}).get("commanded", {})}
    assert shed, f"no Modbus load shed: {actions}"
    lid, (point, _, original) = next(iter(shed.items()))
    value = ctl(ports, op="read", device=lid, point=point)["value"]   # the shed value as the device holds it
    corrections = vp.rpc(IDENTITY, VenRpc.STATUS)["counters"].get("restore_corrections", 0)
    wait_past(until, 0.0)
    vp.wait_for(lambda: lid not in vp.rpc(IDENTITY, VenRpc.STATUS)["actions"], timeout=4 * CONFIG["restoreStaggerS"]
                + 2 * CONFIG["rpcTimeoutS"] + 10, what=f"{lid} reverted")
    t_revert = time.monotonic()
    ctl(ports, op="write", device=lid, point=point, value=value)   # the shed value back on the device
    try:
        vp.wait_for(lambda: vp.rpc(IDENTITY, VenRpc.STATUS)["counters"].get("restore_corrections", 0) > corrections
                    and ctl(ports, op="read", device=lid, point=point)["value"] == pytest.approx(original),
                    timeout=CONFIG.get("lateWriteWindowS", 15) + 30, what=f"{lid}/{point} corrected to {original}")
    except AssertionError as exc:
        status = vp.rpc(IDENTITY, VenRpc.STATUS)
        raise AssertionError(f"{exc}: the device reads {ctl(ports, op='read', device=lid, point=point)['value']} "
                             f"(shed value {value}); VEN counters {status['counters']}; "
                             f"problems {status['problems'][-4:]}") from None
    figure(f"field site, {lid} reverted by the driver to the shed value {value}: back at {original} after (s)",
           f"{time.monotonic() - t_revert:.1f}")
    status = vp.rpc(IDENTITY, VenRpc.STATUS)
    assert any(f"{lid} (field/{lid}/{point}) reads" in p and f"writing {original!r}" in p
               for p in status["problems"]), status["problems"]
    assert_all_back(vp, ports, before)
