"""The REST API with Flask's test client against the real dr.vtn service in-process (see test_web_harness):
the seed's endpoints, errors naming the field, bearer-token writes, 404s, silent and failing peers."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from dr_common import topics
from tests.unit.test_web_harness import TOKEN, WebHarness


@pytest.fixture
def web(tmp_path):
    harness = WebHarness(tmp_path)
    yield harness
    harness.close()


def iso(offset_s: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_s)).isoformat()


def event_body(**extra):
    body = {"status": "scheduled", "startTime": iso(600), "endTime": iso(4200), "requestedReductionKw": 2.0}
    if "venIds" not in extra and "groups" not in extra:
        body["allVens"] = True  # a fleet-wide event says so
    body.update(extra)
    return body


# --- VENs -----------------------------------------------------------------------------------------
def test_register_ven_then_list_and_get(web):
    created = web.post("/api/vens/", {"venId": "ven-1", "name": "Test VEN", "status": "online",
                                      "transport": "bus", "maxShedKw": 5})
    assert created.status_code == 201, created.json
    assert created.json["venId"] == "ven-1" and created.json["created"] is True
    assert created.json["status"] == "online"
    again = web.post("/api/vens", {"ven_id": "ven-1", "name": "Renamed"})  # snake_case, no trailing slash
    assert again.status_code == 200 and again.json["created"] is False and again.json["name"] == "Renamed"
    listed = web.get("/api/vens/")
    assert [v["venId"] for v in listed.json] == ["ven-1"]
    one = web.get("/api/vens/ven-1")
    assert one.status_code == 200 and one.json["name"] == "Renamed" and "servingEventId" in one.json
    assert web.get("/api/vens/?status=offline").json == []
    assert [v["venId"] for v in web.get("/api/vens/?status=online").json] == ["ven-1"]


def test_unknown_ven_is_404_naming_the_field(web):
    r = web.get("/api/vens/nobody")
    assert r.status_code == 404
    assert r.json == {"error": "venId: no VEN 'nobody' is registered", "field": "venId", "code": "not_found"}


# --- events: the seed's ten-step flow as far as the API goes ---------------------------------------
def test_event_create_get_metrics_stop(web):
    web.post("/api/vens/", {"venId": "ven-1", "transport": "bus", "status": "online"})
    created = web.post("/api/events/", event_body(name="afternoon peak"))
    assert created.status_code == 201, created.json
    event = created.json
    assert event["eventId"].startswith("evt-") and event["status"] == "far"
    assert created.headers["Location"] == f"/api/events/{event['eventId']}"
    assert event["requestedReductionKw"] == 2.0 and event["allVens"] is True

    got = web.get(f"/api/events/{event['eventId']}")
    assert got.status_code == 200 and got.json == event
    assert [e["eventId"] for e in web.get("/api/events/").json] == [event["eventId"]]
    assert [e["eventId"] for e in web.get("/api/events/?status=far").json] == [event["eventId"]]
    assert web.get("/api/events/?status=active").json == []

    metrics = web.get(f"/api/events/{event['eventId']}/metrics")
    assert metrics.status_code == 200
    assert {"currentReductionKw", "vensResponding", "avgResponseMs"} <= set(metrics.json)
    assert metrics.json["vensResponding"] == 0 and metrics.json["avgResponseMs"] is None

    stopped = web.post(f"/api/events/{event['eventId']}/stop")
    assert stopped.status_code == 200 and stopped.json["status"] == "cancelled"
    again = web.post(f"/api/events/{event['eventId']}/stop")
    assert again.status_code == 409 and again.json["field"] == "eventId" and again.json["code"] == "conflict"


def test_event_starting_now_dispatches_and_metrics_show_the_ack(web):
    """Created over HTTP with a start in the past: active at once, the command goes to the VEN, the ack
    shows in metrics with its response time, stop restores."""
    from dr_common.payloads import Ack

    web.post("/api/vens/", {"venId": "ven-1", "transport": "bus", "status": "online"})
    created = web.post("/api/events/", {"startTime": iso(-1), "durationS": 600, "requestedReductionKw": 1.5,
                                        "allVens": True})
    assert created.status_code == 201 and created.json["status"] == "active"
    event_id = created.json["eventId"]
    (command,) = [p for _, ven, p in web.sender.local if ven == "ven-1"]
    assert command["op"] == "event" and command["eventId"] == event_id and command["requestedReductionKw"] == 1.5
    web.clock.advance(0.25)
    web.vtn.on_acks([Ack.from_payload({"correlationId": command["correlationId"], "ok": True, "venId": "ven-1",
                                       "data": {"targetKw": 1.5, "acceptedReduceKw": 1.5}})])
    metrics = web.get(f"/api/events/{event_id}/metrics").json
    assert metrics["vensResponding"] == 1 and metrics["avgResponseMs"] == pytest.approx(250.0)
    (ven,) = metrics["vens"]
    assert ven["venId"] == "ven-1" and ven["state"] == "acked" and ven["ok"] is True
    stopped = web.post(f"/api/events/{event_id}/stop")
    assert stopped.status_code == 200 and stopped.json["status"] == "completed"
    assert web.sender.local[-1][2]["op"] == "restore"


def test_unknown_event_is_404_on_every_event_endpoint(web):
    for method, path in (("GET", "/api/events/evt-nope"), ("GET", "/api/events/evt-nope/metrics"),
                         ("POST", "/api/events/evt-nope/stop")):
        r = web.get(path) if method == "GET" else web.post(path)
        assert r.status_code == 404, (path, r.json)
        assert r.json["field"] == "eventId" and "evt-nope" in r.json["error"]


# --- bad input: 4xx naming the field, nothing written ---------------------------------------------
BAD_EVENTS = [
    (b"", "<payload>", "empty body"),
    (b"{not json", "<payload>", "not valid JSON"),
    (b"[1, 2]", "<payload>", "expected a JSON object"),
    (b"\xff\xfe", "<payload>", "not valid JSON"),
    (b'{"startTime": 1}' + b" " * 10 + b"1" * 5000, "<payload>", "not valid JSON"),
    (b'{"n": ' + b"1" * 5000 + b"}", "<payload>", "not valid JSON"),  # beyond Python's int digit limit
    (json.dumps({"endTime": iso(60), "requestedReductionKw": 1}), "startTime", "is required"),
    (json.dumps(event_body(startTime="tomorrow-ish")), "startTime", "ISO 8601"),
    (json.dumps(event_body(requestedReductionKw="lots")), "requestedReductionKw", "expected a number"),
    (json.dumps(event_body(requestedReductionKw=-1)), "requestedReductionKw", ">= 0"),
    (json.dumps(event_body(requestedReductionKw="NaN")), "requestedReductionKw", "finite"),
    (json.dumps(event_body(endTime=iso(300))), "endTime", "after startTime"),
    (json.dumps(event_body(venIds=["bad id!"])), "venIds", "letters, digits"),
    (json.dumps(event_body(venIds=["ven-unknown"])), "venIds", "unknown VEN"),  # refused by dr.vtn itself
    (json.dumps(event_body(startTime=iso(-7200), endTime=iso(-3600))), "endTime", "in the past"),  # dr.vtn
    (json.dumps(event_body(priority=1.5)), "priority", "whole number"),
    (json.dumps(event_body(test="maybe")), "test", "true or false"),
    (json.dumps({**event_body(), "start_time": iso(10)}), "startTime", "given twice"),
]


@pytest.mark.parametrize("raw,field,words", BAD_EVENTS)
def test_bad_event_body_is_400_naming_the_field_and_writes_nothing(web, raw, field, words):
    web.post("/api/vens/", {"venId": "ven-1"})
    before = web.snapshot()
    r = web.post("/api/events/", raw=raw)
    assert r.status_code == 400, r.json
    assert r.json["field"] == field and r.json["code"] == "invalid"
    assert words in r.json["error"]
    assert web.snapshot() == before


BAD_VENS = [
    ({}, "venId", "is required"),
    ({"venId": ""}, "venId", "must not be empty"),
    ({"venId": "has space"}, "venId", "letters, digits"),
    ({"venId": "v" * 65}, "venId", "longer than 64"),
    ({"venId": "ven-2", "transport": "pigeon"}, "transport", "must be one of"),
    ({"venId": "ven-2", "status": "sleepy"}, "status", "must be one of"),
    ({"venId": "ven-2", "maxShedKw": "a lot"}, "maxShedKw", "expected a number"),
    ({"venId": ["ven-2"]}, "venId", "expected a string"),
    ("ven-2", "<payload>", "expected a JSON object"),
]


@pytest.mark.parametrize("body,field,words", BAD_VENS)
def test_bad_ven_body_is_400_naming_the_field_and_writes_nothing(web, body, field, words):
    before = web.snapshot()
    r = web.post("/api/vens/", body)
    assert r.status_code == 400, r.json
    assert r.json["field"] == field and words in r.json["error"]
    assert web.snapshot() == before


def test_body_over_64_kib_is_413(web):
    r = web.post("/api/vens/", {"venId": "ven-big", "name": "x" * 70_000})
    assert r.status_code == 413 and r.json["code"] == "too_large"
    assert web.snapshot() == ([], [])


def test_only_the_schema_fields_are_forwarded_to_the_vtn(web):
    r = web.post("/api/vens/", {"venId": "ven-x", "nested": [[[[{"deep": 1}]]]], "Name": "n", "group_id": "g"})
    assert r.status_code == 201
    (forwarded,) = [args for _, method, args, _ in web.gateway.arguments if method == "register_ven"]
    assert forwarded == [{"venId": "ven-x", "Name": "n", "group_id": "g"}]
    assert r.json["name"] == "n" and r.json["group"] == "g"


@pytest.mark.parametrize("query,field", [("limit=abc", "limit"), ("limit=0", "limit"), ("offset=-1", "offset"),
                                         ("status=sleeping", "status")])
def test_bad_query_parameter_is_400_naming_it(web, query, field):
    r = web.get(f"/api/events/?{query}")
    assert r.status_code == 400 and r.json["field"] == field


# --- authorization --------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body", [("/api/vens/", {"venId": "ven-a"}), ("/api/events/", event_body()),
                                       ("/api/events/evt-x/stop", None)])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dW5pdDp0ZXN0", f"Token {TOKEN}", "Bearer "])
def test_writes_without_the_right_token_are_401_and_write_nothing(web, path, body, header):
    headers = {"Authorization": header} if header else {}
    r = web.client.post(path, data=json.dumps(body) if body else b"", headers=headers,
                        content_type="application/json")
    assert r.status_code == 401, r.json
    assert r.json["field"] == "Authorization" and r.json["code"] == "unauthorized"
    assert web.snapshot() == ([], [])
    assert not [c for c in web.gateway.calls if c[1] in ("register_ven", "create_event", "stop_event")]


def test_token_is_checked_before_the_body(web):
    r = web.post("/api/events/", raw=b"{broken", token=None)
    assert r.status_code == 401


def test_without_a_configured_token_writes_are_403(tmp_path):
    harness = WebHarness(tmp_path, token=None)
    try:
        r = harness.post("/api/vens/", {"venId": "ven-a"}, token="anything-at-all")
        assert r.status_code == 403 and "no api_token" in r.json["error"]
        assert harness.get("/api/vens/").status_code == 200
        assert harness.get("/api/health").json["writesEnabled"] is False
    finally:
        harness.close()


def test_reads_are_open(web):
    for path in ("/api/vens/", "/api/events/", "/api/health", "/api/dashboard", "/api/openapi.json",
                 "/api/telemetry/latest", "/api/telemetry/site"):
        assert web.get(path).status_code == 200, path


# --- silent and failing peers ---------------------------------------------------------------------
def test_silent_vtn_is_503_naming_it(web):
    web.gateway.down.add(topics.VTN_IDENTITY)
    for r in (web.get("/api/vens/"), web.get("/api/events/evt-1"), web.post("/api/vens/", {"venId": "ven-1"}),
              web.post("/api/events/", event_body())):
        assert r.status_code == 503, r.json
        assert r.json["field"] == "<dr.vtn>" and r.json["code"] == "unavailable"
        assert "dr.vtn" in r.json["error"] and "running" in r.json["error"]


def test_failing_vtn_is_502_with_an_error_id_and_the_detail_only_in_the_log(web, caplog):
    web.gateway.broken.add(topics.VTN_IDENTITY)
    r = web.get("/api/events/")
    assert r.status_code == 502 and r.json["code"] == "upstream" and "boom" not in r.json["error"]
    ref = re.search(r"error id ([0-9a-f]{12})", r.json["error"]).group(1)
    assert any(ref in rec.getMessage() and "boom" in rec.getMessage() for rec in caplog.records)


def test_bad_input_is_still_400_when_the_vtn_is_down(web):
    web.gateway.down.add(topics.VTN_IDENTITY)
    r = web.post("/api/events/", {"requestedReductionKw": 1})
    assert r.status_code == 400 and r.json["field"] == "startTime"


def test_performance_comes_from_the_historian_or_says_why_not(web):
    web.historian.reports["evt-1"] = {"eventId": "evt-1", "method": "meter-before", "reductionKw": 2.1}
    assert web.get("/api/events/evt-1/performance").json["reductionKw"] == 2.1
    missing = web.get("/api/events/evt-2/performance")
    assert missing.status_code == 404 and missing.json["field"] == "eventId"
    web.gateway.down.add(topics.HISTORIAN_IDENTITY)
    down = web.get("/api/events/evt-1/performance")
    assert down.status_code == 503 and "platform.historian" in down.json["error"]


def test_health_reports_each_peer(web):
    web.gateway.down.add(topics.HISTORIAN_IDENTITY)
    health = web.get("/api/health").json
    assert health["identity"] == topics.WEB_IDENTITY and health["writesEnabled"] is True
    assert health["peers"][topics.VTN_IDENTITY]["reachable"] is True
    assert health["peers"][topics.VTN_IDENTITY]["health"]["status"] == "ok"
    assert health["peers"][topics.HISTORIAN_IDENTITY]["reachable"] is False
    assert "no answer" in health["peers"][topics.HISTORIAN_IDENTITY]["error"]


def test_unknown_endpoint_and_method_are_json(web):
    r = web.get("/api/nothing")
    assert r.status_code == 404 and r.json["field"] == "<path>" and "openapi" in r.json["error"]
    r = web.client.delete("/api/events/")
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and r.json["field"] == "<path>"


# --- the dashboard's poll -------------------------------------------------------------------------
def test_dashboard_merges_registered_vens_with_live_telemetry_and_lists_open_events(web):
    web.post("/api/vens/", {"venId": "ven-1", "name": "Home", "transport": "bus", "status": "online"})
    web.post("/api/vens/", {"venId": "ven-2", "transport": "bus"})
    created = web.post("/api/events/", {"startTime": iso(-1), "durationS": 600, "requestedReductionKw": 1,
                                        "venIds": ["ven-1"]}).json
    later = web.post("/api/events/", event_body()).json
    done = web.post("/api/events/", event_body(startTime=iso(7200), endTime=iso(9000))).json
    web.post(f"/api/events/{done['eventId']}/stop")
    web.live.on_message("dr/telemetry/ven-1", {"usedPowerKw": 3.0, "baselinePowerKw": 4.0, "shedPowerKw": 1.0,
                                               "eventId": created["eventId"]})
    web.live.on_message("dr/telemetry/ven-stray", {"usedPowerKw": 2.0})  # before dr.web knows the registry
    dash = web.get("/api/dashboard").json
    rows = {v["venId"]: v for v in dash["vens"]}
    assert list(rows) == ["ven-1", "ven-2"]  # a VEN dr.vtn does not know is not shown
    assert rows["ven-1"]["registered"] and rows["ven-1"]["name"] == "Home"
    assert rows["ven-1"]["telemetry"]["shedPowerKw"] == 1.0
    assert rows["ven-1"]["telemetry"]["eventId"] == created["eventId"]
    assert rows["ven-2"]["telemetry"] is None
    assert [(e["eventId"], e["status"]) for e in dash["events"]] == [(created["eventId"], "active"),
                                                                     (later["eventId"], "far")]
    assert dash["counts"] == {"vens": 2, "online": 1, "activeEvents": 1}
    assert dash["site"]["latest"]["usedPowerKw"] == 3.0 and dash["site"]["latest"]["vens"] == 1
    assert "ven-stray" not in web.get("/api/telemetry/latest").json
    assert dash["notes"] == [] and dash["refreshS"] == 2.0


def test_dashboard_without_the_vtn_still_shows_what_the_bus_says(web):
    web.live.on_message("dr/telemetry/ven-1", {"usedPowerKw": 3.0})
    web.gateway.down.add(topics.VTN_IDENTITY)
    dash = web.get("/api/dashboard")
    assert dash.status_code == 200
    assert [v["venId"] for v in dash.json["vens"]] == ["ven-1"] and dash.json["events"] == []
    (note,) = dash.json["notes"]
    assert "dr.vtn did not answer" in note and "not shown" in note
