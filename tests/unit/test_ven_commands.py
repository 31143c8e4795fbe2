"""Commands reach the engine in every tolerated form; a bad one gets ok:false with the field named, never a crash."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr_common.payloads import Ack
from tests.unit.test_ven_harness import SiteHarness


def iso(ts: float, zone: bool = True) -> str:
    text = datetime.fromtimestamp(ts, timezone.utc).isoformat()
    return text if zone else text.replace("+00:00", "")


@pytest.fixture()
def site():
    harness = SiteHarness()
    harness.run(30)
    return harness


def test_camel_case_event_is_acked_and_shed(site):
    ack = site.command(op="event", correlationId="c1", eventId="e1", requestedReductionKw=2.0,
                       until=iso(site.clock.now + 60))
    assert ack["ok"] is True and ack["correlationId"] == "c1" and ack["op"] == "event"
    assert ack["data"]["targetKw"] == 2.0 and ack["data"]["acceptedReduceKw"] == pytest.approx(2.0)
    assert ack["data"]["until"].startswith(iso(site.clock.now + 60)[:19])
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)


def test_snake_case_shed_panel_with_strings_and_a_naive_time_works_the_same(site):
    ack = site.command(operation="shedPanel", correlation_id="c2", event_id="e2", requested_reduction_kw="2.0",
                       end_time=iso(site.clock.now + 60, zone=False))
    assert ack["ok"] is True and ack["op"] == "shedPanel"
    assert ack["data"]["acceptedReduceKw"] == pytest.approx(2.0)
    assert site.engine.event.until == pytest.approx(site.clock.now + 60)
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)


def test_duration_instead_of_until_and_epoch_times(site):
    ack = site.command(cmd="event", cid="c3", event="e3", reductionKw=1, durationS="45")
    assert ack["ok"] and site.engine.event.until == pytest.approx(site.clock.now + 45, abs=2)
    ack = site.command(op="event", correlationId="c4", eventId="e4", kw=1.5, until=int(site.clock.now + 30))
    assert ack["ok"] and site.engine.event.requested_kw == 1.5


def test_a_json_text_payload_is_accepted(site):
    raw = json.dumps({"op": "ping", "correlationId": "p1"})
    assert site.engine.on_command(raw).ack.ok


@pytest.mark.parametrize("payload,field", [
    ({"op": "event", "correlationId": "b1", "until": "2999-01-01T00:00:00Z"}, "requestedReductionKw"),
    ({"op": "event", "correlationId": "b2", "requestedReductionKw": 2}, "until"),
    ({"op": "event", "correlationId": "b3", "requestedReductionKw": "lots", "durationS": 60}, "requestedReductionKw"),
    ({"op": "event", "correlationId": "b4", "requestedReductionKw": -1, "durationS": 60}, "requestedReductionKw"),
    ({"op": "dance", "correlationId": "b5"}, "op"),
    ({"correlationId": "b6"}, "op"),
    ({"op": "event", "correlationId": "b7", "requestedReductionKw": 1, "until": "tomorrow-ish"}, "until"),
    ({"op": "event", "correlationId": "b8", "requestedReductionKw": 1, "until": "2001-01-01T00:00:00Z"}, "until"),
    ({"op": "event", "correlationId": "b9", "venId": "someone-else", "requestedReductionKw": 1, "durationS": 9},
     "venId"),
    ({"op": "shedPanel", "correlationId": "b10", "requestedReductionKw": 1, "durationS": 9, "circuits": ["Pool"]},
     "circuits"),
])
def test_a_bad_command_gets_ok_false_naming_the_field_and_changes_nothing(site, payload, field):
    before = site.writable_values()
    ack = site.command(**payload)
    assert ack["ok"] is False and f"'{field}'" in ack["error"]
    assert ack["correlationId"] == payload["correlationId"]
    assert site.writable_values() == before and site.engine.event is None
    Ack.from_payload(ack)  # a well-formed ack


@pytest.mark.parametrize("raw", [b"\xff\xfe", "not json", "[1, 2]", 42, None, ["op", "event"], {"op": {"x": 1}}])
def test_garbage_is_answered_not_raised(site, raw):
    outcome = site.engine.on_command(raw)
    assert outcome.ack.ok is False and outcome.ack.error and outcome.ops == []
    assert site.engine.counters["bad_commands"] >= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["op", "operation", "correlationId", "requestedReductionKw", "until",
                                        "startTime", "durationS", "eventId", "circuits", "venId", "kw"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True),
                                 st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3),
                                 st.sampled_from(["event", "shedPanel", "restore", "ping", "2030-01-01T00:00:00",
                                                  "9999-12-31T23:00:00Z", 10**15]))))
def test_no_payload_makes_the_engine_raise(site, payload):
    outcome = site.engine.on_command(payload)
    Ack.from_payload(outcome.ack.to_payload())
    site.execute(outcome.ops)


def test_a_repeated_delivery_gets_the_same_ack_and_no_new_writes(site):
    payload = {"op": "event", "correlationId": "dup", "eventId": "e1", "requestedReductionKw": 2.0,
               "until": iso(site.clock.now + 60)}
    first = site.command(**payload)
    writes = len(site.log)
    site.run(1)
    again = site.command(**payload, issuedAt=iso(site.clock.now))
    assert again == first and len(site.log) == writes
    assert site.engine.counters["duplicate_commands"] == 1


def test_ping_reports_the_current_event(site):
    assert site.command(op="ping", correlationId="p0")["data"]["targetKw"] == 0.0
    site.command(op="event", correlationId="c1", eventId="e1", requestedReductionKw=2.0, durationS=60)
    site.run(11)  # the meter publishes its previous poll: the second publish shows the shed
    ack = site.command(op="ping", correlationId="p1")
    assert ack["ok"] and ack["eventId"] == "e1" and ack["data"]["targetKw"] == 2.0
    assert ack["data"]["acceptedReduceKw"] == pytest.approx(2.0, rel=0.02)


def test_restore_naming_another_event_is_refused_and_restores_nothing(site):
    site.command(op="event", correlationId="c1", eventId="e1", requestedReductionKw=2.0, durationS=60)
    ack = site.command(op="restore", correlationId="r1", eventId="other")
    assert ack["ok"] is False and "'eventId'" in ack["error"]
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)
    ack = site.command(op="restore", correlationId="r2", eventId="e1")
    assert ack["ok"] and ack["data"]["acceptedReduceKw"] == 0.0
    assert site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(7.2)


def test_ack_data_round_trips_opt_out_overrides_and_detail():
    ack = Ack(correlation_id="c", ok=True, op="event", target_kw=2.0, accepted_reduce_kw=0.0, opt_out=True,
              overrides=["ev_charger"], detail="opted out")
    payload = ack.to_payload()
    assert payload["data"]["optOut"] is True and payload["data"]["overrides"] == ["ev_charger"]
    back = Ack.from_payload(payload)
    assert back.opt_out and back.overrides == ["ev_charger"] and back.detail == "opted out"
    assert "optOut" not in Ack(correlation_id="c", ok=True).to_payload()["data"]


@pytest.mark.parametrize("ahead_s", [0.0, 0.0000004, 0.5])
def test_a_start_time_of_now_give_or_take_clock_skew_starts_at_once(site, ahead_s):
    start = site.clock.now + ahead_s
    ack = site.command(op="event", correlationId="now", eventId="now", requestedReductionKw=2.0, startTime=start,
                       until=start + 60)
    assert ack["ok"] and "detail" not in ack["data"]
    assert site.engine.event.started and site.point("demo/ev_charger", "PowerLimitKw") == pytest.approx(5.2)
