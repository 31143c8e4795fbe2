"""The OpenADR 3.1 API over HTTP for events of several intervals, OpenADR VENs in dr.vtn's registry, reports on
the bus and report descriptors: the `openadr3` client library against dr.web's blueprint and the real dr.vtn
service (manual clock), every response validated against `openadr3.yaml` (helpers of test_oadr3_api)."""

from __future__ import annotations

import pytest

from tests.unit.test_oadr3_api import BL, VEN1, VEN2, event_body, server  # noqa: F401 (the fixture)

SHED = "DISPATCH_SETPOINT_RELATIVE"
DESCRIPTORS = [{"payloadType": "USAGE", "readingType": "DIRECT_READ", "units": "KWH", "aggregate": True,
                "startInterval": -1, "numIntervals": 1, "historical": False, "frequency": 1, "repeat": 1},
               {"payloadType": "BASELINE", "units": "KW"}]


def stepped(*kw: float, **extra) -> dict:
    body = event_body("default", **extra)
    body["intervalPeriod"]["duration"] = "PT15M"
    body["intervals"] = [{"id": i, "payloads": [{"type": SHED, "values": [-value]}]} for i, value in enumerate(kw)]
    return body


def test_an_event_of_several_intervals_steps_and_is_served_with_its_intervals(server):
    vtn, clock = server.web.vtn, server.web.clock
    vtn.register_ven({"venId": "ven-1", "transport": "bus", "maxShedKw": 10})
    bl, ven = server.client(BL), server.client(VEN1)
    made = server.check(bl.create_event(stepped(1, 2.5, 4, targets=["ven-1"])))
    assert made.status_code == 201, made.json()
    event = made.json()
    periods = [i["intervalPeriod"]["duration"] for i in event["intervals"]]
    assert periods == ["PT900S"] * 3 and event["intervalPeriod"]["duration"] == "PT900S"
    seen = server.check(ven.get_event_by_id(event["id"])).json()
    assert [i["payloads"][0]["values"] for i in seen["intervals"]] == [[-1.0], [-2.5], [-4.0]]
    clock.advance(901)
    seed = vtn.get_event(event["id"])
    assert (seed["requestedReductionKw"], seed["modificationNumber"], seed["durationS"]) == (2.5, 1, 2700)
    assert server.check(bl.get_event_by_id(event["id"])).json()["intervals"] == seen["intervals"]


@pytest.mark.parametrize("change, field", [
    (lambda b: b.update(intervals=[{"id": i, "payloads": [{"type": SHED, "values": [-1]}]} for i in range(97)]),
     "intervals"),
    (lambda b: b["intervals"][1].update(intervalPeriod={"start": "2030-01-01T00:00:00Z"}),
     "intervals.1.intervalPeriod.start"),
    (lambda b: b["intervals"][2].update(payloads=[{"type": SHED, "values": [-20000]}]), "intervals.2.payloads"),
])
def test_bad_intervals_are_a_400_naming_the_field_and_write_nothing(server, change, field):
    body = stepped(1, 2, 3)
    change(body)
    answer = server.check(server.client(BL).create_event(body))
    assert answer.status_code == 400 and field in answer.json()["detail"], answer.json()
    assert server.web.vtn.list_events() == []


def test_a_ven_object_is_a_registered_ven_polling_keeps_online_and_deleting_deregisters(server):
    vtn, clock = server.web.vtn, server.web.clock
    ven = server.client(VEN1)
    made = server.check(ven.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": "ven-1"})).json()
    assert vtn.get_ven("ven-1")["transport"] == "oadr"
    clock.advance(60)
    assert vtn.get_ven("ven-1")["status"] == "unknown"                # never heard from yet
    server.check(ven.get_events())
    assert vtn.get_ven("ven-1")["status"] == "online"
    assert server.check(server.client(VEN2).delete_ven(made["id"])).status_code == 404   # not its VEN
    assert server.check(ven.delete_ven(made["id"])).status_code == 200
    assert [v["venId"] for v in vtn.list_vens()] == []


def test_a_report_is_published_as_the_vens_telemetry_and_descriptors_are_served(server):
    vtn, sender = server.web.vtn, server.web.sender
    bl, ven = server.client(BL), server.client(VEN1)
    server.check(ven.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": "ven-1"}))
    event = server.check(bl.create_event(event_body("default", targets=["ven-1"], reportDescriptors=DESCRIPTORS)))
    assert event.json()["reportDescriptors"] == DESCRIPTORS
    assert server.check(ven.get_event_by_id(event.json()["id"])).json()["reportDescriptors"] == DESCRIPTORS
    report = {"eventID": event.json()["id"], "clientName": "ven-1-client", "resources": [
        {"resourceName": "AGGREGATED_REPORT", "intervalPeriod": {"start": "2030-01-01T00:00:00Z", "duration": "PT15M"},
         "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [0.5]},
                                              {"type": "BASELINE", "values": [3]}]}]}]}
    assert server.check(ven.create_report(report)).status_code == 201
    [(ven_id, payload)] = sender.telemetry
    assert ven_id == "ven-1" and payload["usedPowerKw"] == 2.0 and payload["shedPowerKw"] == 1.0
    assert vtn.event_metrics(event.json()["id"])["currentReductionKw"] == 1.0


def test_an_import_capacity_limit_is_dispatched_as_a_cap(server):
    vtn, sender = server.web.vtn, server.web.sender
    vtn.register_ven({"venId": "ven-1", "transport": "bus", "maxShedKw": 10})
    body = event_body("default", targets=["ven-1"])
    body["intervals"] = [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [7.5]}]}]
    made = server.check(server.client(BL).create_event(body))
    assert made.status_code == 201 and made.json()["intervals"][0]["payloads"][0]["values"] == [7.5]
    assert server.check(server.client(VEN1).get_event_by_id(made.json()["id"])).json()["intervals"] == \
        made.json()["intervals"]
    [command] = [payload for _, ven_id, payload in sender.local if ven_id == "ven-1"]
    assert command["capKw"] == 7.5 and command["eventId"] == made.json()["id"]
    body["intervals"][0]["payloads"][0]["values"] = [-1]
    refused = server.check(server.client(BL).create_event(body))
    assert refused.status_code == 400 and "intervals.0.payloads" in refused.json()["detail"]
