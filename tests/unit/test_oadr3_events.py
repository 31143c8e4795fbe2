"""OpenADR 3.1 events as dr.vtn events: several intervals (steps of one event), IMPORT_CAPACITY_LIMIT (a kW cap),
OpenADR VENs in dr.vtn's registry, and reports on the bus (dr_vtn_dispatcher.oadr_events, events, registry,
oadr_reports through VtnService; the manual clock drives every instant)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dr_common.timeutil import to_iso
from dr_vtn_dispatcher.errors import api_call
from dr_vtn_dispatcher.lifecycle import split_steps
from dr_vtn_dispatcher.oadr_events import MAX_INTERVALS, interval_steps
from dr_common.payloads import Telemetry
from dr_web.livestate import LiveState
from tests.unit.test_oadr3_service import BL, VEN_A, Vtn, _report, _resource, oadr_event, vtn  # noqa: F401 (fixture)

SHED = "DISPATCH_SETPOINT_RELATIVE"


def iso(ts: float) -> str:
    return to_iso(datetime.fromtimestamp(ts, UTC))


def interval(index: int, kind: str, value: float, **period) -> dict:
    out = {"id": index, "payloads": [{"type": kind, "values": [value]}]}
    if period:
        out["intervalPeriod"] = period
    return out


def stepped(start: float, *kw: float, duration: str = "PT10M", **extra) -> dict:
    body = {"programID": "default", "intervalPeriod": {"start": iso(start), "duration": duration},
            "intervals": [interval(i, SHED, -value) for i, value in enumerate(kw)]}
    body.update(extra)
    return body


def commands_for(vtn: Vtn, ven_id: str) -> list[dict]:
    return [payload for _, venue, payload in vtn.service.sender.local if venue == ven_id]


# --- several intervals ------------------------------------------------------------------------------
def test_interval_steps_follow_each_other_and_inherit_the_event_period():
    steps = interval_steps(stepped(1_000_000.0, 1, 2, 3), 0.0, 86400)
    assert [(s, e, c) for s, e, c in steps] == [
        (1_000_000.0, 1_000_600.0, {"requestedReductionKw": 1.0}),
        (1_000_600.0, 1_001_200.0, {"requestedReductionKw": 2.0}),
        (1_001_200.0, 1_001_800.0, {"requestedReductionKw": 3.0})]
    own = stepped(1_000_000.0, 1, 2)
    own["intervals"][1]["intervalPeriod"] = {"start": iso(1_000_600.0), "duration": "PT1H"}
    own["intervals"].append(interval(2, "SIMPLE", 2))
    assert [(s, e, c) for s, e, c in interval_steps(own, 0.0, 86400)][1:] == [
        (1_000_600.0, 1_004_200.0, {"requestedReductionKw": 2.0}), (1_004_200.0, 1_004_800.0, {"level": 2})]


@pytest.mark.parametrize("change, field", [
    (lambda b: b["intervals"][1].update(intervalPeriod={"start": iso(1_000_900.0)}),   # a gap
     "intervals.1.intervalPeriod.start"),
    (lambda b: b["intervals"][1].update(intervalPeriod={"start": iso(1_000_300.0)}),   # an overlap
     "intervals.1.intervalPeriod.start"),
    (lambda b: b["intervals"][0].update(intervalPeriod={"duration": "P9999Y"}), "intervals.0.intervalPeriod.duration"),
    (lambda b: b["intervals"][1].update(payloads=[{"type": SHED, "values": [3]}]), "intervals.1.payloads"),
    (lambda b: b["intervals"][1].update(payloads=[{"type": "PRICE", "values": [3]}]), "intervals.1.payloads"),
    (lambda b: b.update(intervals=[interval(i, SHED, -1) for i in range(MAX_INTERVALS + 1)]), "intervals"),
    (lambda b: b["intervalPeriod"].update(duration="PT13H"), "intervals"),
])
def test_bad_intervals_name_the_field(change, field):
    body = stepped(1_000_000.0, 1, 2)
    change(body)
    with pytest.raises(Exception) as caught:
        interval_steps(body, 0.0, 86400)
    assert getattr(caught.value, "field", None) == field, caught.value


def test_an_open_ended_last_interval_runs_to_the_longest_event():
    body = stepped(1_000_000.0, 1, 2)
    body["intervals"][1]["intervalPeriod"] = {"duration": "P9999Y"}
    assert interval_steps(body, 0.0, 3600)[-1][:2] == (1_000_600.0, 1_003_600.0)


def test_split_steps_gives_the_latest_due_and_the_rest_in_order():
    steps = [(30.0, {"level": 3}), (10.0, {"level": 1}), (20.0, {"level": 2})]
    assert split_steps(steps, 5.0) == (None, sorted(steps, key=lambda s: s[0]))
    assert split_steps(steps, 25.0) == ({"level": 2}, [(30.0, {"level": 3})])


def test_several_intervals_are_modifications_of_one_event_at_each_boundary(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 10})
    start = float(int(vtn.clock.now()) + 60)
    made = api_call(vtn.service.oadr_create, "events", stepped(start, 1, 2.5, 4), BL)
    assert made["intervals"][1]["intervalPeriod"] == {"start": iso(start + 600), "duration": "PT600S"}
    assert [i["payloads"][0]["values"] for i in made["intervals"]] == [[-1.0], [-2.5], [-4.0]]
    seed = vtn.service.get_event(made["id"])
    assert seed["durationS"] == 1800 and seed["requestedReductionKw"] == 1 and seed["modificationNumber"] == 0

    seen = []
    for at in (start, start + 600, start + 1200):
        vtn.clock.advance_to(at + 1)
        event = vtn.service.get_event(made["id"])
        command = commands_for(vtn, "ven-a")[-1]
        seen.append((event["requestedReductionKw"], event["modificationNumber"], command["requestedReductionKw"],
                     command.get("modificationNumber", 0), command["eventId"]))
    assert seen == [(1.0, 0, 1.0, 0, made["id"]), (2.5, 1, 2.5, 1, made["id"]), (4.0, 2, 4.0, 2, made["id"])]
    ids = dict.fromkeys(tuple(c["correlationId"].split(":")[:3]) for c in commands_for(vtn, "ven-a"))  # retries
    assert list(ids) == [(made["id"], "m0", "r0"), (made["id"], "m1", "r0"), (made["id"], "m2", "r0")]
    vtn.clock.advance_to(start + 1801)
    assert vtn.service.get_event(made["id"])["status"] == "completed"
    assert commands_for(vtn, "ven-a")[-1]["op"] == "restore"
    assert vtn.service.counters["eventSteps"] == 2
    # served as written, whatever step it is at
    assert [i["payloads"][0]["values"] for i in api_call(vtn.service.oadr_get, "events", made["id"], BL)
            ["intervals"]] == [[-1.0], [-2.5], [-4.0]]


def test_steps_switch_between_simple_levels_and_kw(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 10})
    start = float(int(vtn.clock.now()) + 60)
    body = stepped(start, 1)
    body["intervals"].append(interval(1, "SIMPLE", 2))
    made = api_call(vtn.service.oadr_create, "events", body, BL)
    vtn.clock.advance_to(start + 601)
    event = vtn.service.get_event(made["id"])
    assert event["signal"] == "SIMPLE" and event["level"] == 2 and event["modificationNumber"] == 1


def test_a_step_over_the_vtns_limit_is_refused_and_nothing_written(tmp_path):
    vtn = Vtn(tmp_path, {"maxRequestedKw": 5})
    try:
        before = vtn.service.list_events()
        answer = api_call(vtn.service.oadr_create, "events", stepped(vtn.clock.now() + 60, 1, 6), BL)
        assert answer["code"] == "invalid" and answer["field"] == "intervals.1.payloads", answer
        assert vtn.service.list_events() == before and not vtn.service.oadr_book.objects["EVENT"]
    finally:
        vtn.close()


def test_updating_replaces_the_steps_and_deleting_stops_them(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 10})
    start = float(int(vtn.clock.now()) + 60)
    made = api_call(vtn.service.oadr_create, "events", stepped(start, 1, 2, 3), BL)
    vtn.clock.advance_to(start + 1)
    changed = api_call(vtn.service.oadr_update, "events", made["id"], stepped(start, 1, 5), BL)
    assert [i["payloads"][0]["values"] for i in changed["intervals"]] == [[-1.0], [-5.0]]
    vtn.clock.advance_to(start + 601)
    assert vtn.service.get_event(made["id"])["requestedReductionKw"] == 5
    assert vtn.service.get_event(made["id"])["durationS"] == 1200
    api_call(vtn.service.oadr_delete, "events", made["id"], BL)
    assert made["id"] not in vtn.service.event_manager.steps
    assert vtn.service.get_event(made["id"])["status"] == "cancelled"


def test_steps_survive_a_restart_and_a_step_missed_while_down_is_applied(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 10})
    start = float(int(vtn.clock.now()) + 60)
    made = api_call(vtn.service.oadr_create, "events", stepped(start, 1, 2, 3), BL)
    vtn.clock.advance_to(start + 1)
    vtn.restart()
    assert vtn.service.event_manager.steps[made["id"]] == [(start + 600, {"requestedReductionKw": 2.0}),
                                                           (start + 1200, {"requestedReductionKw": 3.0})]
    vtn.service.stop()
    vtn.store.close()
    vtn.clock.advance_to(start + 700)        # the 2 kW step is due while dr.vtn is down
    vtn._open()
    event = vtn.service.get_event(made["id"])
    assert event["requestedReductionKw"] == 2 and event["modificationNumber"] == 1
    vtn.restart()                             # applied once: a second start does not modify it again
    assert vtn.service.get_event(made["id"])["modificationNumber"] == 1
    vtn.clock.advance_to(start + 1201)
    assert vtn.service.get_event(made["id"])["requestedReductionKw"] == 3


# --- OpenADR VENs in dr.vtn's registry ---------------------------------------------------------------
def make_oadr_ven(vtn: Vtn, name: str = "ven-a", who: dict = VEN_A) -> dict:
    return api_call(vtn.service.oadr_create, "vens", {"objectType": "VEN_VEN_REQUEST", "venName": name}, who)


def test_a_ven_object_registers_a_vtn_ven_that_is_sent_nothing(vtn):
    made = make_oadr_ven(vtn)
    ven = vtn.service.get_ven("ven-a")
    assert ven["transport"] == "oadr" and ven["status"] == "unknown"
    assert [v["venId"] for v in vtn.service.list_vens(transport="oadr")] == ["ven-a"]
    vtn.restart()
    assert vtn.service.get_ven("ven-a")["transport"] == "oadr"
    event = api_call(vtn.service.oadr_create, "events", oadr_event(targets=["ven-a"]), VEN_A | {"role": "bl"})
    assert vtn.service.get_event(event["id"])["venIds"] == ["ven-a"]            # it is a registered VEN
    assert [e["id"] for e in api_call(vtn.service.oadr_search, "events", VEN_A, {})] == [event["id"]]
    assert vtn.service.event_metrics(event["id"])["vens"][0]["venId"] == "ven-a"
    vtn.clock.advance(120)                                                      # retries would be due by now
    assert vtn.service.sender.local == [] and vtn.service.sender.batches == []
    assert vtn.service.counters["oadrVenCommandsNotSent"] == 1 and vtn.service.health()["pendingCommands"] == 0
    refused = api_call(vtn.service.oadr_delete, "vens", made["id"], VEN_A)
    assert refused["code"] == "invalid" and refused["field"] == "venID"        # it serves a live event
    api_call(vtn.service.oadr_delete, "events", event["id"], BL)
    api_call(vtn.service.oadr_delete, "vens", made["id"], VEN_A)
    assert api_call(vtn.service.get_ven, "ven-a")["code"] == "not_found"
    vtn.restart()
    assert api_call(vtn.service.get_ven, "ven-a")["code"] == "not_found"


def test_a_seed_ven_keeps_its_transport_and_a_bad_ven_name_is_refused(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus"})
    made = make_oadr_ven(vtn)
    assert vtn.service.get_ven("ven-a")["transport"] == "bus"
    api_call(vtn.service.oadr_delete, "vens", made["id"], VEN_A)
    assert vtn.service.get_ven("ven-a")["transport"] == "bus"                   # not the OpenADR side's to remove
    bad = make_oadr_ven(vtn, "ven a/1", {"clientId": "c", "role": "ven", "venName": "ven a/1"})
    assert bad["code"] == "invalid" and bad["field"] == "venName"
    assert not vtn.service.oadr_book.objects["VEN"] and len(vtn.service.list_vens()) == 1


def test_renaming_the_ven_object_moves_the_registration(vtn):
    made = api_call(vtn.service.oadr_create, "vens", {"objectType": "BL_VEN_REQUEST", "venName": "ven-a",
                                                       "clientID": "c"}, BL)
    api_call(vtn.service.oadr_update, "vens", made["id"], {"objectType": "BL_VEN_REQUEST", "venName": "ven-b",
                                                           "clientID": "c"}, BL)
    assert [v["venId"] for v in vtn.service.list_vens()] == ["ven-b"]


def test_polling_and_reports_keep_an_oadr_ven_online(vtn):
    make_oadr_ven(vtn)
    vtn.clock.advance(5)
    api_call(vtn.service.oadr_search, "programs", VEN_A, {})
    assert vtn.service.get_ven("ven-a")["status"] == "online"
    vtn.clock.advance(31)                                                       # offlineTimeoutS 30 s
    assert vtn.service.get_ven("ven-a")["status"] == "offline"
    api_call(vtn.service.oadr_get, "programs", "default", VEN_A)
    assert vtn.service.get_ven("ven-a")["status"] == "online"
    api_call(vtn.service.oadr_search, "programs", BL, {})                       # business logic is no VEN
    vtn.clock.advance(31)
    assert vtn.service.get_ven("ven-a")["status"] == "offline"


# --- reports on the bus --------------------------------------------------------------------------------
def test_an_oadr_vens_report_is_published_as_its_telemetry_and_counts_in_metrics(vtn):
    make_oadr_ven(vtn)
    start = float(int(vtn.clock.now()) + 10)
    event = api_call(vtn.service.oadr_create, "events", stepped(start, 2, targets=["ven-a"]), BL)
    vtn.clock.advance_to(start + 1)
    report = _report(event["id"], _resource("AGGREGATED_REPORT", ("DEMAND", 3), ("BASELINE", 5)))
    api_call(vtn.service.oadr_create, "reports", report, VEN_A)
    [(ven_id, payload)] = vtn.service.sender.telemetry
    published = Telemetry.from_payload(payload)
    assert ven_id == "ven-a" and (published.ven_id, published.used_power_kw, published.baseline_power_kw,
                                  published.shed_power_kw, published.event_id) == ("ven-a", 3, 5, 2, event["id"])
    metrics = vtn.service.event_metrics(event["id"])
    assert metrics["currentReductionKw"] == 2 and vtn.service.counters["oadrReportsPublished"] == 1


def test_a_seed_vens_report_is_not_published_again(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus"})
    event = api_call(vtn.service.oadr_create, "events", oadr_event(), BL)
    api_call(vtn.service.oadr_create, "reports", _report(event["id"], _resource("r", ("DEMAND", 3))), VEN_A)
    assert vtn.service.get_ven("ven-a")["usedPowerKw"] == 3 and vtn.service.sender.telemetry == []


def test_dr_web_takes_dr_vtn_telemetry_for_its_oadr_vens_only():
    live = LiveState(vtn_identity="dr.vtn", oadr_vens=frozenset({"ven-a"}))
    payload = {"venId": "ven-a", "usedPowerKw": 3, "shedPowerKw": 2}
    assert live.on_message("dr/telemetry/ven-a", payload, sender="dr.vtn") == 0
    assert live.latest["ven-a"]["usedPowerKw"] == 3
    assert live.on_message("dr/telemetry/ven-b", {**payload, "venId": "ven-b"}, sender="dr.vtn") == 1
    assert live.on_message("dr/telemetry/ven-a", payload, sender="dr.ven.ven-b") == 1
    assert live.on_message("dr/telemetry/ven-a", payload, sender="dr.other") == 1
    assert live.rejected == 3 and "ven-b" not in live.latest


# --- IMPORT_CAPACITY_LIMIT ------------------------------------------------------------------------------
def capped(start: float, cap: float, **extra) -> dict:
    body = stepped(start, 1, **extra)
    body["intervals"] = [interval(0, "IMPORT_CAPACITY_LIMIT", cap)]
    return body


def test_a_cap_goes_to_every_targeted_ven_as_capkw(vtn):
    for ven_id in ("ven-a", "ven-b"):
        vtn.service.register_ven({"venId": ven_id, "transport": "bus", "maxShedKw": 3})
    start = float(int(vtn.clock.now()) + 60)
    made = api_call(vtn.service.oadr_create, "events", capped(start, 4.5, targets=["ven-a", "ven-b"]), BL)
    assert made["intervals"][0]["payloads"] == [{"type": "IMPORT_CAPACITY_LIMIT", "values": [4.5]}]
    seed = vtn.service.get_event(made["id"])
    assert (seed["signal"], seed["capKw"], seed["requestedReductionKw"]) == ("IMPORT_CAPACITY_LIMIT", 4.5, 0.0)
    vtn.clock.advance_to(start + 1)
    sent = {ven_id: commands_for(vtn, ven_id)[-1] for ven_id in ("ven-a", "ven-b")}
    assert {v: (c["capKw"], c["requestedReductionKw"]) for v, c in sent.items()} == {"ven-a": (4.5, 0.0),
                                                                                     "ven-b": (4.5, 0.0)}
    command = sent["ven-a"]                    # ven-a sheds what the cap needs; nothing is re-allocated
    assert vtn.service.ingest("ack", {"venId": "ven-a", "correlationId": command["correlationId"], "ok": True,
                                      "data": {"acceptedReduceKw": 1.0}}, "ven-a", sender="dr.ven.ven-a") == []
    metrics = vtn.service.event_metrics(made["id"])
    assert metrics["requestedReductionKw"] == 0.0 and metrics["vensResponding"] == 1
    assert vtn.service.counters["reallocations"] == 0
    vtn.restart()                               # kept in the store; ven-b's retry after a restart still carries it
    assert vtn.service.get_event(made["id"])["capKw"] == 4.5
    vtn.service.sender.clear()
    vtn.clock.advance(120)
    retried = commands_for(vtn, "ven-b")
    assert retried and {(c["correlationId"], c["capKw"]) for c in retried} == {(sent["ven-b"]["correlationId"], 4.5)}
    assert commands_for(vtn, "ven-a") == []


def test_a_step_from_a_shed_to_a_cap_and_a_bad_cap(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 10})
    start = float(int(vtn.clock.now()) + 60)
    body = stepped(start, 2, targets=["ven-a"])
    body["intervals"].append(interval(1, "IMPORT_CAPACITY_LIMIT", 6))
    made = api_call(vtn.service.oadr_create, "events", body, BL)
    vtn.clock.advance_to(start + 601)
    command = commands_for(vtn, "ven-a")[-1]
    assert (command["capKw"], command["requestedReductionKw"], command["modificationNumber"]) == (6.0, 0.0, 1)
    assert vtn.service.get_event(made["id"])["signal"] == "IMPORT_CAPACITY_LIMIT"
    bad = api_call(vtn.service.oadr_create, "events", capped(start, -1), BL)
    assert bad["code"] == "invalid" and bad["field"] == "intervals.0.payloads"


def test_the_seed_api_takes_a_cap_too_and_refuses_a_cap_with_a_reduction(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus"})
    start = iso(vtn.clock.now() + 60)
    made = vtn.service.create_event({"startTime": start, "durationS": 600, "capKw": 3, "venIds": ["ven-a"]})
    assert made["capKw"] == 3 and made["signal"] == "IMPORT_CAPACITY_LIMIT"
    changed = vtn.service.update_event(made["eventId"], {"requestedReductionKw": 1})
    assert (changed["capKw"], changed["requestedReductionKw"], changed["signal"]) == (None, 1, "LOAD_DISPATCH")
    both = api_call(vtn.service.create_event, {"startTime": start, "durationS": 600, "capKw": 3,
                                               "requestedReductionKw": 1, "allVens": True})
    assert both["code"] == "invalid" and both["field"] == "capKw"


def test_an_oadr_ven_whose_object_is_gone_is_deregistered_at_start(vtn):
    made = make_oadr_ven(vtn)
    ven = vtn.service.registry.get("ven-a")
    api_call(vtn.service.oadr_delete, "vens", made["id"], VEN_A)
    vtn.store.save(vens=[ven])                  # a flush of its last-seen time that was in flight at the delete
    vtn.service.register_ven({"venId": "ven-s", "transport": "bus"})
    vtn.restart()
    assert [v["venId"] for v in vtn.service.list_vens()] == ["ven-s"]
    assert api_call(vtn.service.get_ven, "ven-a")["code"] == "not_found"


def test_an_update_mid_event_asks_the_current_interval_in_one_modification(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 10})
    start = float(int(vtn.clock.now()) + 60)
    made = api_call(vtn.service.oadr_create, "events", stepped(start, 1, 2, 3), BL)
    vtn.clock.advance_to(start + 700)                               # in the second interval: 2 kW, m1
    api_call(vtn.service.oadr_update, "events", made["id"], stepped(start, 1, 5, 6), BL)
    event = vtn.service.get_event(made["id"])
    assert (event["requestedReductionKw"], event["modificationNumber"]) == (5.0, 2)
    vtn.clock.advance_to(start + 1201)
    assert vtn.service.get_event(made["id"])["requestedReductionKw"] == 6
