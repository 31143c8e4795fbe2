"""The OpenADR 3.1 API on a real VOLTTRON 11 platform: dr.web (port 0, never 8080) serving /openadr3/3.1.0 with
clients from its config, dr.vtn behind it over RPC. Driven by the `openadr3` client library over real HTTP,
every response validated against openadr3.yaml: a business-logic client creates a program and an event that
targets a registered bus VEN; the command reaches that VEN on the bus (an OpenADR event IS a dr.vtn event);
a VEN client sees it, a second VEN client sees nothing of it; after a restart of dr.vtn the program is still
there. Run with its own site: VDR_TEST_SITE=pytest-oadr."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from dr_common import topics
from tests.integration.test_web_platform import Http, _healthy, web_url

openadr3 = pytest.importorskip("openadr3")
from openadr3.api import OpenADRClient  # noqa: E402
from openadr3.auth import fetch_token  # noqa: E402

from tests.unit.test_oadr3_api import SPEC, _Req, _Resp  # noqa: E402

pytestmark = pytest.mark.integration

TOKEN = "pytest-token-0001"
BL = ("it-bl", "it-bl-secret-0001")
VEN_A = ("it-ven-a", "it-ven-a-secret-01")
VEN_B = ("it-ven-b", "it-ven-b-secret-01")
WEB_CONFIG = {"host": "127.0.0.1", "port": 0, "api_token": TOKEN, "openadr3": {"clients": [
    {"clientId": BL[0], "clientSecret": BL[1], "role": "bl"},
    {"clientId": VEN_A[0], "clientSecret": VEN_A[1], "role": "ven", "venName": "it-ven-a"},
    {"clientId": VEN_B[0], "clientSecret": VEN_B[1], "role": "ven", "venName": "it-ven-b"}]}}
VTN_CONFIG = {"flushIntervalS": 0.5, "trustedBridges": ["dr.mqtt", "pytest.client"]}


def _openapi(base: str):
    import yaml
    from openapi_core import Config, OpenAPI

    spec = yaml.safe_load(SPEC.read_text())
    spec["servers"] = [{"url": base}]
    schemas = spec["components"]["schemas"]
    schemas["BlVenRequest"]["properties"]["objectType"]["enum"].append("VEN")
    schemas["BlResourceRequest"]["properties"]["objectType"]["enum"].append("RESOURCE")
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


def test_openadr_event_is_dispatched_and_private(vplatform):
    vplatform.install_agent("vtn_dispatcher", topics.VTN_IDENTITY, config=VTN_CONFIG, tag="dr-vtn")
    vplatform.install_agent("web", topics.WEB_IDENTITY, config=WEB_CONFIG, tag="dr-web")
    vplatform.wait_for(lambda: _healthy(vplatform, topics.VTN_IDENTITY), timeout=30, what="dr.vtn healthy")
    url = web_url(vplatform)
    assert not url.endswith(":8080") and not url.endswith(":8080/")
    base = url.rstrip("/") + "/openadr3/3.1.0"
    openapi = _openapi(base)

    def check(response: httpx.Response) -> httpx.Response:
        openapi.validate_response(_Req(response.request), _Resp(response))
        return response

    seed = Http(url)
    ven_id = "it-ven-a"
    status, _ = seed("POST", "/api/vens/", {"venId": ven_id, "transport": "bus", "status": "online", "maxShedKw": 5})
    assert status in (200, 201)
    arrivals: list[dict] = []
    vplatform.bus.subscribe(topics.bus_cmd(ven_id), lambda *a: arrivals.append(a[5]))

    bl = OpenADRClient(base, token=fetch_token(base, *BL))
    ven_a = OpenADRClient(base, token=fetch_token(base, *VEN_A))
    ven_b = OpenADRClient(base, token=fetch_token(base, *VEN_B))
    program = check(bl.create_program({"programName": f"it-{uuid.uuid4().hex[:6]}"})).json()
    made = check(bl.create_event({"programID": program["id"], "targets": [ven_id],
                                  "intervalPeriod": {"start": "0001-01-01", "duration": "PT2M"},
                                  "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE",
                                                                        "values": [-1.5]}]}]}))
    assert made.status_code == 201, made.json()
    event = made.json()
    vplatform.wait_for(lambda: arrivals, timeout=10, step=0.02, what="the command on dr/cmd/<venId>")
    assert arrivals[0]["eventId"] == event["id"] and arrivals[0]["requestedReductionKw"] == 1.5

    # (the platform may hold other modules' events: this test's program holds only its own)
    assert [e["id"] for e in check(ven_a.get_events(programID=program["id"])).json()] == [event["id"]]
    assert check(ven_b.get_events(programID=program["id"])).json() == []
    assert event["id"] not in [e["id"] for e in check(ven_b.get_events()).json()]
    assert check(ven_b.get_event_by_id(event["id"])).status_code == 404
    assert check(ven_a.create_event({"programID": program["id"], "intervals": []})).status_code == 403

    deleted = check(bl.delete_event(event["id"]))
    assert deleted.status_code == 200
    assert seed.get(f"/api/events/{event['id']}")["status"] in ("cancelled", "completed")

    vplatform.restart_agent(topics.VTN_IDENTITY)     # the program lives in dr.vtn's store
    vplatform.wait_for(lambda: _healthy(vplatform, topics.VTN_IDENTITY), timeout=60, what="dr.vtn back")
    deadline = time.monotonic() + 30
    answer = bl.get_program_by_id(program["id"])
    while answer.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = bl.get_program_by_id(program["id"])
    assert check(answer).json()["id"] == program["id"]


def _iso(ts: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def test_a_report_from_an_openadr_ven_shows_in_dr_webs_live_state(vplatform):
    """An OpenADR VEN (its VEN object registers it with dr.vtn, transport oadr) reports over HTTP; dr.vtn publishes
    the report as that VEN's telemetry on the bus and dr.web's live state (the dashboard) shows it."""
    vplatform.install_agent("vtn_dispatcher", topics.VTN_IDENTITY, config=VTN_CONFIG, tag="dr-vtn")
    vplatform.install_agent("web", topics.WEB_IDENTITY, config=WEB_CONFIG, tag="dr-web")
    vplatform.wait_for(lambda: _healthy(vplatform, topics.VTN_IDENTITY), timeout=30, what="dr.vtn healthy")
    url = web_url(vplatform)
    base = url.rstrip("/") + "/openadr3/3.1.0"
    openapi = _openapi(base)

    def check(response: httpx.Response) -> httpx.Response:
        openapi.validate_response(_Req(response.request), _Resp(response))
        return response

    seed = Http(url)
    ven_name = "it-ven-b"
    bl = OpenADRClient(base, token=fetch_token(base, *BL))
    ven = OpenADRClient(base, token=fetch_token(base, *VEN_B))
    made = check(ven.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": ven_name}))
    assert made.status_code in (201, 409), made.json()
    registered = seed.get(f"/api/vens/{ven_name}")
    assert registered["transport"] == "oadr"
    event = check(bl.create_event({"programID": "default", "targets": [ven_name],
                                   "intervalPeriod": {"start": "0001-01-01", "duration": "PT5M"},
                                   "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE",
                                                                         "values": [-2]}]}]})).json()
    # (the default program may hold other modules' events, untargeted ones visible to every VEN)
    assert [e["id"] for e in check(ven.get_events(programID="default")).json() if e.get("targets")] == [event["id"]]
    arrivals: list[tuple] = []
    vplatform.bus.subscribe(topics.bus_telemetry(ven_name), lambda *a: arrivals.append((a[1], a[5])))
    report = {"eventID": event["id"], "clientName": "it-oadr-ven", "resources": [
        {"resourceName": "AGGREGATED_REPORT", "intervalPeriod": {"start": _iso(time.time() - 60), "duration": "PT1M"},
         "intervals": [{"id": 0, "payloads": [{"type": "DEMAND", "values": [4.5]},
                                              {"type": "BASELINE", "values": [6.5]}]}]}]}

    def shown() -> dict | None:        # dr.web learns the VEN's transport at its next registry read: report again
        assert check(ven.create_report(report)).status_code == 201
        rows = [v for v in seed.get("/api/dashboard")["vens"] if v["venId"] == ven_name]
        return rows[0]["telemetry"] if rows and rows[0]["telemetry"] else None

    telemetry = vplatform.wait_for(shown, timeout=40, step=1.0, what="the report in dr.web's live state")
    assert telemetry["usedPowerKw"] == 4.5 and telemetry["shedPowerKw"] == 2.0
    assert telemetry["eventId"] == event["id"]
    assert arrivals and arrivals[0][0] == topics.VTN_IDENTITY and arrivals[0][1]["venId"] == ven_name
    metrics = seed.get(f"/api/events/{event['id']}/metrics")
    assert metrics["currentReductionKw"] == 2.0 and metrics["vens"][0]["venId"] == ven_name
    assert seed.get(f"/api/vens/{ven_name}")["status"] == "online"
    check(bl.delete_event(event["id"]))
