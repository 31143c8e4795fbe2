"""The OpenAPI document describes every endpoint the app serves, its request schemas are the shared
library's, and real responses of the API validate against the documented response schemas."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import fastjsonschema
import pytest

from dr_common.payloads import EVENT_FIELDS, VEN_FIELDS, Ack
from tests.unit.test_web_harness import WebHarness


@pytest.fixture
def web(tmp_path):
    harness = WebHarness(tmp_path)
    yield harness
    harness.close()


def _doc(web):
    r = web.get("/api/openapi.json")
    assert r.status_code == 200
    return r.json


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_api_route_and_method_is_documented(web):
    doc = _doc(web)
    assert doc["openapi"].startswith("3.1")
    served = set()
    for rule in web.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"] and op["operationId"] and op["summary"], (path, method)
            for name in re.findall(r"{([a-z_]+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op.get("parameters", [])), path
            if method == "post":
                assert op["security"] == [{"bearer": []}] and "401" in op["responses"], path


def test_every_reference_resolves(web):
    doc = _doc(web)
    schemas = doc["components"]["schemas"]
    refs = set(_refs(doc))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


@pytest.mark.parametrize("name,fields", [("VenRegistration", VEN_FIELDS), ("EventRequest", EVENT_FIELDS)])
def test_request_schemas_are_the_shared_librarys(web, name, fields):
    schema = _doc(web)["components"]["schemas"][name]
    assert list(schema["properties"]) == [f.name for f in fields]
    assert schema["required"] == [f.name for f in fields if f.required]
    for f in fields:
        prop = schema["properties"][f.name]
        if f.choices:
            assert prop["enum"] == list(f.choices)
        if f.aliases:
            assert all(alias in prop["description"] for alias in f.aliases)


class Validator:
    def __init__(self, doc):
        self.doc = doc
        self.checked: set[tuple[str, str, str]] = set()

    def check(self, method: str, path: str, template: str, response) -> None:
        op = self.doc["paths"][template][method]
        status = str(response.status_code)
        assert status in op["responses"], (method, path, status, "undocumented status")
        content = op["responses"][status].get("content")
        assert content, (method, path, status)
        schema = {**content["application/json"]["schema"], "components": self.doc["components"]}
        fastjsonschema.compile(schema)(response.json)
        self.checked.add((template, method, status))


def test_responses_validate_against_the_document(web):
    v = Validator(_doc(web))
    now = datetime.now(timezone.utc)
    v.check("post", "/api/vens/", "/api/vens/",
            web.post("/api/vens/", {"venId": "ven-1", "transport": "bus", "status": "online", "maxShedKw": 3}))
    v.check("post", "/api/vens/", "/api/vens/", web.post("/api/vens/", {"venId": "ven-1", "transport": "bus"}))
    v.check("post", "/api/vens/", "/api/vens/", web.post("/api/vens/", {"venId": "bad id"}))
    v.check("post", "/api/vens/", "/api/vens/", web.post("/api/vens/", {"venId": "x"}, token="wrong-token"))
    v.check("get", "/api/vens/", "/api/vens/", web.get("/api/vens/"))
    v.check("get", "/api/vens/ven-1", "/api/vens/{ven_id}", web.get("/api/vens/ven-1"))
    v.check("get", "/api/vens/nope", "/api/vens/{ven_id}", web.get("/api/vens/nope"))
    created = web.post("/api/events/", {"startTime": (now - timedelta(seconds=1)).isoformat(), "durationS": 900,
                                        "requestedReductionKw": 2, "name": "peak", "allVens": True})
    v.check("post", "/api/events/", "/api/events/", created)
    event_id = created.json["eventId"]
    v.check("post", "/api/events/", "/api/events/", web.post("/api/events/", {"eventId": event_id,
                                                                              "startTime": now.isoformat(),
                                                                              "durationS": 60, "kw": 1,
                                                                              "allVens": True}))
    (command,) = [p for _, ven, p in web.sender.local if ven == "ven-1"]
    web.vtn.on_acks([Ack.from_payload({"correlationId": command["correlationId"], "ok": True, "venId": "ven-1",
                                       "data": {"targetKw": 2, "acceptedReduceKw": 2}})])
    web.live.on_message("dr/telemetry/ven-1", {"usedPowerKw": 3.0, "baselinePowerKw": 5.0, "shedPowerKw": 2.0,
                                               "eventId": event_id, "ts": now.isoformat()})
    v.check("get", "/api/events/", "/api/events/", web.get("/api/events/"))
    v.check("get", "/api/events/", "/api/events/", web.get("/api/events/?limit=x"))
    v.check("get", "/x", "/api/events/{event_id}", web.get(f"/api/events/{event_id}"))
    v.check("get", "/x", "/api/events/{event_id}/metrics", web.get(f"/api/events/{event_id}/metrics"))
    web.historian.reports[event_id] = {"eventId": event_id, "baselineKw": 5.0, "reductionKw": 2.0}
    v.check("get", "/x", "/api/events/{event_id}/performance", web.get(f"/api/events/{event_id}/performance"))
    v.check("get", "/x", "/api/events/{event_id}/performance", web.get("/api/events/none/performance"))
    v.check("get", "/api/telemetry/latest", "/api/telemetry/latest", web.get("/api/telemetry/latest"))
    v.check("get", "/api/telemetry/site", "/api/telemetry/site", web.get("/api/telemetry/site"))
    v.check("get", "/x", "/api/telemetry/vens/{ven_id}", web.get("/api/telemetry/vens/ven-1"))
    v.check("get", "/x", "/api/telemetry/vens/{ven_id}", web.get("/api/telemetry/vens/ven-9"))
    web.live.on_message("dr/telemetry/ven-1", {"usedPowerKw": 3.0, "ts": now.isoformat(), "loads": {
        "ev": {"kind": "ev_charger", "priority": 10, "powerKw": 3.0, "shedKw": 2.0, "capacityKw": 2.0,
               "setPoints": {"PowerLimitKw": 3.0}}}})
    v.check("get", "/x", "/api/telemetry/vens/{ven_id}/loads", web.get("/api/telemetry/vens/ven-1/loads"))
    v.check("get", "/x", "/api/telemetry/vens/{ven_id}/loads", web.get("/api/telemetry/vens/ven-9/loads"))
    v.check("get", "/x", "/api/telemetry/vens/{ven_id}/loads", web.get("/api/telemetry/vens/a%20b/loads"))
    v.check("get", "/api/dashboard", "/api/dashboard", web.get("/api/dashboard"))
    v.check("get", "/api/health", "/api/health", web.get("/api/health"))
    v.check("post", "/x", "/api/events/{event_id}/stop", web.post(f"/api/events/{event_id}/stop"))
    v.check("post", "/x", "/api/events/{event_id}/stop", web.post(f"/api/events/{event_id}/stop"))
    v.check("post", "/x", "/api/events/{event_id}/stop", web.post("/api/events/none/stop"))
    web.gateway.down.add("dr.vtn")
    v.check("get", "/api/vens/", "/api/vens/", web.get("/api/vens/"))
    v.check("get", "/api/dashboard", "/api/dashboard", web.get("/api/dashboard"))
    statuses = {status for _, _, status in v.checked}
    assert {"200", "201", "400", "401", "404", "409", "503"} <= statuses
