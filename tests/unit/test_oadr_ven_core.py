"""dr.oadr's core without a VTN: persistence across restarts (no repeated command, no lost report, interval
steps caught up), telemetry identity, the report builder's figures, and the thread -> gevent hand-off."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import gevent

from dr_common.timeutil import UTC, to_iso
from dr_oadr_ven.config import parse_config
from dr_oadr_ven.core import VenCore
from dr_oadr_ven.handoff import Handoff
from dr_oadr_ven.oadr31_events import to_vtn_event
from dr_oadr_ven.state import StateFile

T0 = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
CONFIG = {"venId": "ven-1", "vtn": {"baseUrl": "http://127.0.0.1:8080/openadr3/3.1.0", "clientId": "c",
                                    "clientSecret": "secret-change-me"},
          "reports": {"intervalS": 60}}


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send_report(self, event_id, body, report_id, seq) -> None:
        self.sent.append((event_id, body, report_id, seq))

    def status(self) -> dict:
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def two_step_event():
    steps = [{"id": i, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-kw]}]}
             for i, kw in enumerate((1.0, 2.0))]
    return to_vtn_event({"id": "ev-9", "programID": "p", "modificationDateTime": to_iso(T0),
                         "intervalPeriod": {"start": to_iso(T0), "duration": "PT10M"}, "intervals": steps})


def make(path, clock) -> tuple[VenCore, list, FakeLink]:
    published: list = []
    link = FakeLink()
    core = VenCore(parse_config({**CONFIG, "statePath": str(path)}), StateFile(path).load(), published.append, link,
                   clock=clock)
    return core, published, link


def telemetry(core: VenCore, ts: datetime, used: float = 5.0, baseline: float = 7.0, **extra) -> bool:
    return core.on_telemetry({"venId": "ven-1", "ts": to_iso(ts), "usedPowerKw": used, "baselinePowerKw": baseline,
                              "shedPowerKw": baseline - used, "requestedReductionKw": 2.0, **extra})


def test_restart_repeats_nothing_and_catches_up_an_interval_step(tmp_path):
    clock = Clock()
    path = tmp_path / "state.json"
    core, published, _ = make(path, clock)
    core.on_item(("events", [two_step_event()], [], True))
    assert [c["requestedReductionKw"] for c in published] == [1.0]

    clock.now = T0 + timedelta(minutes=12)  # down across the interval step
    again, published2, _ = make(path, clock)
    again.on_item(("events", [two_step_event()], [], True))
    assert published2 == []  # the event is known: its first command is not sent again
    again.tick()
    assert [(c["requestedReductionKw"], c["modificationNumber"]) for c in published2] == [(2.0, 2)]
    third, published3, _ = make(path, clock)
    third.on_item(("events", [two_step_event()], [], True))
    third.tick()
    assert published3 == []


def test_owed_report_survives_a_restart_and_is_sent_once(tmp_path):
    clock = Clock()
    path = tmp_path / "state.json"
    core, _, link = make(path, clock)
    core.on_item(("events", [two_step_event()], [], True))
    for second in range(0, 60, 5):
        telemetry(core, T0 + timedelta(seconds=second))
    clock.now = T0 + timedelta(seconds=63)
    core.tick()
    assert len(link.sent) == 1  # in flight when the agent stops
    event_id, body, report_id, seq = link.sent[0]
    usage = {p["type"]: p["values"][0] for p in body["resources"][0]["intervals"][0]["payloads"]}
    assert usage["USAGE"] == round(5.0 / 60, 6) and usage["DELTA_USAGE"] == round(2.0 / 60, 6)
    assert usage["BASELINE"] == 7.0

    again, _, link2 = make(path, clock)
    again.tick()
    assert [(e, s) for e, _, _, s in link2.sent] == [(event_id, seq)]  # owed, sent again
    again.on_item(("report_sent", event_id, "rep-1", seq))
    again.tick()
    assert again.pending == {} and again.report_ids == {event_id: "rep-1"} and len(link2.sent) == 1
    last, _, link3 = make(path, clock)
    last.tick()
    assert link3.sent == []


def test_report_give_up_after_repeated_refusals(tmp_path):
    clock = Clock()
    core, _, link = make(tmp_path / "s.json", clock)
    core.on_item(("link", {"up": True, "error": None}))
    core.on_item(("events", [two_step_event()], [], True))
    telemetry(core, T0 + timedelta(seconds=1))
    clock.now = T0 + timedelta(seconds=63)
    for attempt in range(5):
        core.tick()
        core.on_item(("report_failed", "ev-9", link.sent[-1][3], "400 Bad Request"))
    assert core.pending == {} and core.counts["reportsGivenUp"] == 1 and len(link.sent) == 5


def test_telemetry_for_another_ven_is_refused_and_opt_out_changes_are_said(tmp_path):
    core, _, _ = make(tmp_path / "s.json", Clock())
    assert core.on_telemetry({"venId": "ven-2", "usedPowerKw": 3}) is False
    assert core.on_telemetry({"venId": "ven-1"}) is False
    assert core.rejects.snapshot()["byReason"] == {"telemetry.venId": 1, "telemetry.usedPowerKw": 1}
    assert telemetry(core, T0) is False
    assert telemetry(core, T0, optOut=True) is True
    assert core.baseline_kw(T0) == 7.0 and core.baseline_kw(T0 + timedelta(minutes=5)) is None


def test_refused_event_is_logged_once_per_modification(tmp_path, caplog):
    core, published, _ = make(tmp_path / "s.json", Clock())
    for _ in range(3):
        core.on_item(("events", [], [("ev-x", 5, "intervals.0.payloads", "no payload")], True))
    assert published == [] and core.rejects.snapshot()["byReason"] == {"event.intervals.0.payloads": 1}
    assert sum("ev-x" in r.message for r in caplog.records) == 1


def test_handoff_from_threads_to_a_greenlet():
    handoff = Handoff()
    got: list = []

    def consume() -> None:
        while len(got) < 400:
            got.extend(handoff.take(1.0))

    consumer = gevent.spawn(consume)
    threads = [threading.Thread(target=lambda n=n: [handoff.put((n, i)) for i in range(100)]) for n in range(4)]
    for t in threads:
        t.start()
    consumer.join(timeout=10)
    for t in threads:
        t.join()
    assert sorted(got) == sorted((n, i) for n in range(4) for i in range(100))
    assert [i for n, i in got if n == 0] == list(range(100))  # each thread's order kept
    latency = handoff.latency()
    assert latency["items"] == 400 and 0 <= latency["p50Ms"] <= latency["p99Ms"] <= latency["maxMs"]
    assert handoff.take(0.01) == []
    handoff.close()


def test_mqtt_binding_of_the_notifiers_answer():
    import pytest

    from dr_oadr_ven.mqttnotify import NotifierUnusable, binding

    anonymous = {"WEBHOOK": True, "MQTT": {"URIS": ["mqtt://127.0.0.1:1883"], "serialization": "JSON",
                                           "authentication": {"method": "ANONYMOUS"}}}
    assert binding(anonymous) == ("127.0.0.1", 1883, False, None)
    bearer = {"MQTT": {"URIS": ["https://x", "mqtts://broker.example.com"], "serialization": "JSON",
                       "authentication": {"method": "OAUTH2_BEARER_TOKEN", "username": "{clientID}"}}}
    assert binding(bearer) == ("broker.example.com", 8883, True, "{clientID}")
    for bad in ({"WEBHOOK": True},
                {"MQTT": {"URIS": ["mqtt://h"], "serialization": "JSON",
                          "authentication": {"method": "CERTIFICATE"}}},
                {"MQTT": {"URIS": ["http://h"], "serialization": "JSON", "authentication": {"method": "ANONYMOUS"}}}):
        with pytest.raises(NotifierUnusable):
            binding(bad)


def test_report_failures_while_the_vtn_is_down_do_not_count(tmp_path):
    clock = Clock()
    core, _, link = make(tmp_path / "s.json", clock)
    core.on_item(("events", [two_step_event()], [], True))
    telemetry(core, T0 + timedelta(seconds=1))
    clock.now = T0 + timedelta(seconds=63)
    core.on_item(("link", {"up": False, "error": "unreachable"}))
    for _ in range(8):
        core.tick()
        core.on_item(("report_failed", "ev-9", link.sent[-1][3], "unreachable"))
    assert core.pending["ev-9"]["failures"] == 0 and core.counts["reportsGivenUp"] == 0


def test_operating_state_says_opt_out_and_the_site_owners_overrides(tmp_path):
    clock = Clock()
    core, _, link = make(tmp_path / "s.json", clock)
    core.on_item(("events", [two_step_event()], [], True))
    loads = {"ev_charger": {"override": True}, "hvac": {"override": False}}
    telemetry(core, T0 + timedelta(seconds=5), loads=loads)
    telemetry(core, T0 + timedelta(seconds=65), optOut=True)
    clock.now = T0 + timedelta(seconds=123)
    core.tick()
    intervals = link.sent[-1][1]["resources"][0]["intervals"]
    states = [next(p["values"] for p in i["payloads"] if p["type"] == "OPERATING_STATE") for i in intervals]
    assert states == [["RUNNING_CURTAILED", "OVERRIDE", "ev_charger"], ["RUNNING_OPTED_OUT"]]
