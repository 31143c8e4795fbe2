"""An import cap (`capKw`, OpenADR IMPORT_CAPACITY_LIMIT) at the VEN: the command payload, the reduction it
asks for, and the engine holding the site's meter at the cap on the demo site's simulated devices."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dr_common.payloads import Command
from dr_common.schema import PayloadError
from dr_ven_load_control.control import cap_reduction
from dr_ven_load_control.state import EventState
from tests.unit.test_ven_engine import STILL_HEATER, settled
from tests.unit.test_ven_harness import SiteHarness

UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_command_may_carry_a_cap_instead_of_a_reduction():
    cmd = Command.from_payload({"op": "event", "correlationId": "c1", "capKw": 3.5, "until": UNTIL.isoformat()})
    assert cmd.cap_kw == 3.5 and cmd.requested_reduction_kw == 0.0
    assert Command.from_payload(cmd.to_payload()).cap_kw == 3.5
    assert "capKw" not in Command.from_payload({"op": "event", "correlationId": "c2", "requestedReductionKw": 1,
                                                "until": UNTIL.isoformat()}).to_payload()
    for bad in ({"capKw": -1}, {"capKw": "lots"}, {}):
        with pytest.raises(PayloadError) as caught:
            Command.from_payload({"op": "event", "correlationId": "c3", "until": UNTIL.isoformat(), **bad})
        assert caught.value.field in ("capKw", "requestedReductionKw")


@pytest.mark.parametrize("cap, meter, shed, baseline, limit, expected", [
    (5.0, 7.0, 0.0, None, 100.0, 2.0),     # load 7 kW, cap 5: shed 2
    (5.0, 5.5, 1.5, 6.0, 100.0, 2.0),      # already shedding 1.5: the load is still 7
    (8.0, 7.0, 0.0, 7.0, 100.0, 0.0),      # under the cap: nothing
    (0.0, 7.0, 0.0, None, 3.0, 3.0),       # never more than limits.maxRequestedKw
    (5.0, None, 0.0, 6.5, 100.0, 1.5),     # meter unknown: the event's baseline
    (5.0, None, 0.0, None, 100.0, 0.0),    # nothing known: nothing asked
])
def test_cap_reduction(cap, meter, shed, baseline, limit, expected):
    assert cap_reduction(cap, meter, shed, baseline, limit) == pytest.approx(expected)


def test_a_capped_event_survives_the_state_file():
    event = EventState(event_id="e", correlation_id="c", op="event", requested_kw=0.0, start=1.0, until=2.0,
                       cap_kw=4.25)
    assert EventState.from_dict(event.to_dict()).cap_kw == 4.25
    assert EventState.from_dict({**event.to_dict(), "capKw": None}).cap_kw is None


def test_the_engine_holds_the_meter_at_the_cap():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    load = site.meter_kw()
    cap = round(load - 2.0, 3)
    start = site.clock.now
    ack = site.command(op="event", correlationId="cap-1", eventId="evt-cap", capKw=cap, until=start + 1800)
    assert ack["ok"], ack
    site.run(600)
    steady = [kw for t, kw in site.meter_log if t > start + 10]
    assert len(steady) > 100 and max(steady) <= cap + 0.05, max(steady)
    assert min(steady) >= cap - 0.3
    assert site.engine.event.requested_kw == pytest.approx(load - cap, abs=0.1)
    assert site.telemetry_log[-1]["requestedReductionKw"] == pytest.approx(load - cap, abs=0.1)


def test_the_reduction_follows_the_load_as_it_moves():
    site = settled(SiteHarness())                     # the water heater cycles: the uncurtailed load moves
    cap = round(site.meter_kw() - 1.0, 3)
    start = site.clock.now
    site.command(op="event", correlationId="cap-2", eventId="evt-cap", capKw=cap, until=start + 3600)
    asked = set()
    over = []
    for _ in range(120):
        site.run(15)
        asked.add(round(site.engine.event.requested_kw, 2))
        over.append(site.meter_kw() - cap)
    assert len(asked) > 1                              # re-evaluated, not fixed at the start
    assert sorted(over)[int(len(over) * 0.9)] <= 0.1, sorted(over)[-5:]   # at the cap 90 % of the time


def test_a_cap_above_the_load_sheds_nothing():
    site = settled(SiteHarness(device_overrides=STILL_HEATER))
    cap = site.meter_kw() + 5.0
    start = site.clock.now
    assert site.command(op="event", correlationId="cap-3", eventId="evt-cap", capKw=cap, until=start + 600)["ok"]
    site.run(60)
    assert site.engine.event.requested_kw == 0.0 and site.engine.control.shed_total() == pytest.approx(0.0)
