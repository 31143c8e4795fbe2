"""dr.oadr's mapping: OpenADR 3.1 event objects -> VtnEvents -> dr.ven command payloads over time (intervals,
capacity limit re-evaluation, modification, cancel, randomizeStart, hostile events)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from dr_common.payloads import Command
from dr_common.timeutil import UTC, parse_time, to_iso
from dr_oadr_ven import mapping
from dr_oadr_ven.config import parse_config
from dr_oadr_ven.mapping import CommandPlanner, command_event_id
from dr_oadr_ven.oadr31_events import EventRefused, duration_s, to_vtn_event

T0 = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
CONFIG = {"venId": "ven-1", "vtn": {"baseUrl": "http://127.0.0.1:8080/openadr3/3.1.0", "clientId": "c",
                                    "clientSecret": "secret-change-me"},
          "simpleLevelsKw": [0, 1.5, 3, 4.5]}


def event(intervals: list[dict], start: datetime = T0, duration: str = "PT10M", mod: datetime = T0, **extra):
    body = {"id": "ev-1", "programID": "p1", "modificationDateTime": to_iso(mod), "eventName": "x",
            "intervalPeriod": {"start": to_iso(start), "duration": duration}, "intervals": intervals}
    body.update(extra)
    return to_vtn_event(body)


def dsr(kw: float, **period) -> dict:
    out = {"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-kw]}]}
    if period:
        out["intervalPeriod"] = period
    return out


class Planner:
    def __init__(self, **overrides) -> None:
        self.config = parse_config({**CONFIG, **overrides})
        self.plans: dict = {}
        self.refused: list = []
        self.planner = CommandPlanner(self.config, self.plans, lambda eid, r: self.refused.append((eid, r.field)),
                                      random.Random(7))


def test_duration_parser():
    assert duration_s("PT15M", "d") == 900
    assert duration_s("P1DT1H", "d") == 90000
    assert duration_s("PT0.5S", "d") == 0.5
    assert duration_s("P9999Y", "d") == float("inf")
    for bad in ("15 minutes", "P", "PT", 12, None):
        with pytest.raises(EventRefused):
            duration_s(bad, "d")


def test_one_interval_is_one_command_for_the_whole_event():
    p = Planner()
    out = p.planner.accept(event([dsr(2.0)]), T0 - timedelta(seconds=30), None)
    assert len(out) == 1
    cmd = Command.from_payload(out[0])
    assert cmd.op == "event" and cmd.requested_reduction_kw == 2.0 and cmd.ven_id == "ven-1"
    assert cmd.start_time == T0 and cmd.until == T0 + timedelta(minutes=10)
    assert cmd.event_id == "ev-1" and cmd.modification_number == 1
    assert p.planner.tick(T0 + timedelta(minutes=5), None) == []  # nothing new mid-event


def test_intervals_follow_each_other_and_are_revisions_of_one_command():
    p = Planner()
    ev = event([dsr(1.0), dsr(3.0), {"id": 2, "payloads": [{"type": "SIMPLE", "values": [1]}]}])
    assert [i.start for i in ev.intervals] == [T0, T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]
    first = p.planner.accept(ev, T0 - timedelta(seconds=1), None)
    assert first[0]["requestedReductionKw"] == 1.0
    assert first[0]["until"] == to_iso(T0 + timedelta(minutes=30))
    assert p.planner.tick(T0 + timedelta(minutes=9), None) == []
    second = p.planner.tick(T0 + timedelta(minutes=10, seconds=1), None)
    assert [c["requestedReductionKw"] for c in second] == [3.0] and second[0]["modificationNumber"] == 2
    third = p.planner.tick(T0 + timedelta(minutes=20, seconds=1), None)
    assert [c["requestedReductionKw"] for c in third] == [1.5]  # SIMPLE level 1 -> simpleLevelsKw[1]
    assert third[0]["until"] == first[0]["until"]
    assert p.planner.tick(T0 + timedelta(minutes=31), None) == []
    assert p.plans["ev-1"]["state"] == "ended"


def test_interval_with_own_period_and_a_gap_sheds_nothing_in_the_gap():
    p = Planner()
    later = T0 + timedelta(minutes=30)
    ev = event([dsr(1.0), dsr(2.0, start=to_iso(later), duration="PT5M")])
    p.planner.accept(ev, T0, None)
    gap = p.planner.tick(T0 + timedelta(minutes=15), None)
    assert [c["requestedReductionKw"] for c in gap] == [0.0]
    assert [c["requestedReductionKw"] for c in p.planner.tick(later, None)] == [2.0]


def test_capacity_limit_is_a_cap_dr_ven_follows():
    p = Planner()
    ev = event([{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [4.0]}]}])
    first = p.planner.accept(ev, T0, None)
    assert [(c["capKw"], c["requestedReductionKw"]) for c in first] == [(4.0, 0.0)]
    assert Command.from_payload(first[0]).cap_kw == 4.0
    assert p.planner.tick(T0 + timedelta(seconds=3), 7.0) == []  # dr.ven re-evaluates the cap itself


def test_capacity_limit_follows_the_baseline_without_cap_kw(monkeypatch):
    monkeypatch.setattr(mapping, "CAP_FIELD", False)
    p = Planner(capacityReevalKw=0.2)
    ev = event([{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [4.0]}]}])
    assert p.planner.accept(ev, T0, None) == []  # no baseline yet: nothing to compute from
    first = p.planner.tick(T0 + timedelta(seconds=1), 6.0)
    assert [c["requestedReductionKw"] for c in first] == [2.0]
    assert p.planner.tick(T0 + timedelta(seconds=2), 6.1) == []  # within capacityReevalKw
    moved = p.planner.tick(T0 + timedelta(seconds=3), 7.0)
    assert [c["requestedReductionKw"] for c in moved] == [3.0] and moved[0]["modificationNumber"] == 2
    under = p.planner.tick(T0 + timedelta(seconds=4), 3.0)
    assert [c["requestedReductionKw"] for c in under] == [0.0]  # already under the cap


def test_modification_is_a_new_revision_and_a_reread_is_nothing():
    p = Planner()
    p.planner.accept(event([dsr(2.0)]), T0, None)
    assert p.planner.accept(event([dsr(2.0)]), T0, None) == []
    changed = p.planner.accept(event([dsr(2.5)], mod=T0 + timedelta(seconds=5)), T0 + timedelta(seconds=5), None)
    assert [(c["requestedReductionKw"], c["modificationNumber"]) for c in changed] == [(2.5, 2)]


def test_cancel_and_deletion_restore():
    p = Planner()
    p.planner.accept(event([dsr(2.0)]), T0, None)
    out = p.planner.cancel("ev-1", T0 + timedelta(minutes=1))
    assert [c["op"] for c in out] == ["restore"] and out[0]["eventId"] == "ev-1"
    assert p.planner.cancel("ev-1", T0 + timedelta(minutes=1)) == []  # once
    q = Planner()
    q.planner.accept(event([dsr(2.0)]), T0, None)
    assert q.planner.reconcile({"ev-1"}, T0 + timedelta(minutes=1)) == []
    gone = q.planner.reconcile(set(), T0 + timedelta(minutes=1))
    assert [c["op"] for c in gone] == ["restore"]


def test_randomize_start_shifts_start_and_end_once_per_event():
    p = Planner()
    ev = to_vtn_event({"id": "ev-r", "programID": "p1", "modificationDateTime": to_iso(T0),
                       "intervalPeriod": {"start": to_iso(T0), "duration": "PT10M", "randomizeStart": "PT5M"},
                       "intervals": [dsr(2.0)]})
    out = p.planner.accept(ev, T0 - timedelta(minutes=10), None)
    start, until = parse_time(out[0]["startTime"]), parse_time(out[0]["until"])
    shift = (start - T0).total_seconds()
    assert 0 < abs(shift) <= 300 and until - start == timedelta(minutes=10)
    changed = p.planner.accept(replace(ev, modification=ev.modification + 1,
                                       intervals=(replace(ev.intervals[0], value=-3.0),)),
                               T0 - timedelta(minutes=9), None)
    assert changed[0]["requestedReductionKw"] == 3.0
    assert changed[0]["startTime"] == out[0]["startTime"]  # the offset is drawn once per event


@pytest.mark.parametrize("intervals,duration,field", [
    ([dsr(5000.0)], "PT10M", "intervals.0.payloads"),                       # absurd kW
    ([dsr(1.0)], "P9999Y", "intervalPeriod.duration"),                       # endless
    ([dsr(1.0)], "P2D", "intervalPeriod.duration"),                          # beyond maxDurationS
    ([{"id": 0, "payloads": [{"type": "SIMPLE", "values": [7]}]}], "PT10M", "intervals.0.payloads"),
    ([dsr(1.0)] * 200, "PT1M", "intervals"),                                 # too many intervals
])
def test_hostile_events_get_no_command(intervals, duration, field):
    p = Planner()
    assert p.planner.accept(event(intervals, duration=duration), T0, None) == []
    assert p.refused == [("ev-1", field)]
    assert p.planner.tick(T0 + timedelta(minutes=1), 5.0) == []


def test_unknown_payload_and_bad_values_are_refused_when_parsed():
    with pytest.raises(EventRefused) as exc:
        event([{"id": 0, "payloads": [{"type": "PRICE", "values": [0.3]}]}])
    assert exc.value.field == "intervals.0.payloads"
    with pytest.raises(EventRefused):
        event([{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": ["lots"]}]}])
    with pytest.raises(EventRefused):
        to_vtn_event({"id": "e", "intervals": [dsr(1.0)]})  # no start anywhere


def test_accepted_event_that_turns_hostile_is_restored():
    p = Planner()
    p.planner.accept(event([dsr(2.0)]), T0, None)
    out = p.planner.accept(event([dsr(9999.0)], mod=T0 + timedelta(seconds=1)), T0 + timedelta(seconds=1), None)
    assert [c["op"] for c in out] == ["restore"] and p.plans["ev-1"]["state"] == "refused"


def test_start_far_ahead_waits_until_within_the_window():
    p = Planner(limits={"maxStartAheadS": 3600})
    start = T0 + timedelta(hours=3)
    assert p.planner.accept(event([dsr(1.0)], start=start), T0, None) == []
    assert p.planner.tick(T0 + timedelta(hours=1), None) == []
    out = p.planner.tick(T0 + timedelta(hours=2, seconds=1), None)
    assert [c["startTime"] for c in out] == [to_iso(start)]


def test_long_vtn_ids_become_valid_dr_ven_event_ids():
    long_id = "x" * 100
    assert command_event_id("ev-1") == "ev-1"
    assert command_event_id(long_id) != long_id and command_event_id(long_id) == command_event_id(long_id)
    assert len(command_event_id(long_id)) <= 64


def test_a_modification_that_changes_nothing_dr_ven_does_sends_nothing():
    p = Planner()
    p.planner.accept(event([dsr(2.0)]), T0, None)
    later = T0 + timedelta(seconds=30)
    assert p.planner.accept(event([dsr(2.0)], mod=later), later, None) == []  # e.g. the VTN marked it active
    assert p.plans["ev-1"]["modification"] == int(later.timestamp() * 1000)
    assert p.planner.tick(later + timedelta(seconds=1), None) == []


def test_a_listing_older_than_a_notification_does_not_cancel_its_event():
    p = Planner()
    learned = T0 + timedelta(seconds=10)
    p.planner.accept(event([dsr(2.0)]), learned, None)  # by webhook, while a poll was under way
    assert p.planner.reconcile(set(), learned + timedelta(seconds=1), listed_at=learned - timedelta(seconds=1)) == []
    gone = p.planner.reconcile(set(), learned + timedelta(seconds=5), listed_at=learned + timedelta(seconds=2))
    assert [c["op"] for c in gone] == ["restore"]
