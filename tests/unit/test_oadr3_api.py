"""The OpenADR 3.1 API driven by the independent client library `openadr3` (PyPI, grid-coordination's python-oa3)
over real HTTP against dr.web's blueprint in-process (werkzeug server on a free loopback port) and the real
dr.vtn service (SQLite, manual clock). Every response is validated against the spec's `openadr3.yaml` with
openapi-core, so a drift from the spec fails the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import yaml
from werkzeug.datastructures import Headers, ImmutableMultiDict

openadr3 = pytest.importorskip("openadr3")
from openadr3.api import OpenADRClient  # noqa: E402
from openadr3.auth import fetch_token  # noqa: E402
from openapi_core import Config, OpenAPI  # noqa: E402
from openapi_core.datatypes import RequestParameters  # noqa: E402


SPEC = Path(__file__).resolve().parents[2] / "web" / "dr_web" / "oadr3" / "openadr3.yaml"
REFERENCE = Path("/work/shared/reference/openadr3-3.1.0/openadr3.yaml")
from dr_tools.oadr3_server import BL, VEN1, VEN2, Oadr3Server  # noqa: E402  (re-exported to the other tests)


class _Req:
    """An httpx request as openapi-core's Request protocol sees it."""

    def __init__(self, request: httpx.Request) -> None:
        url = urlparse(str(request.url))
        self.host_url = f"{url.scheme}://{url.netloc}"
        self.path = url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(query=ImmutableMultiDict(parse_qs(url.query)),
                                            header=Headers(dict(request.headers)), cookie=ImmutableMultiDict())


class _Resp:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "").split(";")[0]
        self.headers = Headers(dict(response.headers))
        self.data = response.content


class Server(Oadr3Server):
    """The in-process OpenADR VTN (dr_tools.oadr3_server) with every response checked against the spec."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        spec = yaml.safe_load(SPEC.read_text())
        spec["servers"] = [{"url": self.base}]
        # the spec's `ven` and `resource` are allOf(objectMetadata, Bl...Request), whose objectType enums exclude
        # each other (VEN vs BL_VEN_REQUEST): no object can satisfy both. The VTN sends the metadata's VEN /
        # RESOURCE; the check accepts that value there and nothing else
        schemas = spec["components"]["schemas"]
        schemas["BlVenRequest"]["properties"]["objectType"]["enum"].append("VEN")
        schemas["BlResourceRequest"]["properties"]["objectType"]["enum"].append("RESOURCE")
        # the 3.1.0 document has a typo (`default: null          -` on BlVenRequest.targets) that the spec
        # checker refuses; responses are still validated against every schema
        self.openapi = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))
        self.validated = 0

    def check(self, response: httpx.Response) -> httpx.Response:
        """Validate a response (and its request) against the spec; returns it."""
        self.openapi.validate_response(_Req(response.request), _Resp(response))
        self.validated += 1
        return response

    def client(self, creds: tuple[str, str]) -> OpenADRClient:
        token = fetch_token(self.base, creds[0], creds[1])
        return OpenADRClient(self.base, token=token)

@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    yield srv
    srv.close()


def event_body(program_id: str, kw: float = 2.0, targets: list[str] | None = None, **extra: Any) -> dict:
    body = {"programID": program_id, "eventName": "shed", "intervalPeriod": {"start": "0001-01-01T00:00:00Z",
                                                                             "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-kw]}]}]}
    if targets is not None:
        body["targets"] = targets
    body.update(extra)
    return body


def test_spec_copy_in_repo_is_the_reference():
    if not REFERENCE.exists():
        pytest.skip("the reference spec is not on this machine")
    assert SPEC.read_bytes() == REFERENCE.read_bytes()


def test_token_then_program_event_roundtrip_all_validated(server):
    info = server.check(httpx.get(server.base + "/auth/server"))
    assert info.json()["tokenURL"] == server.base + "/auth/token"
    token = server.check(httpx.post(info.json()["tokenURL"], data={
        "grant_type": "client_credentials", "client_id": BL[0], "client_secret": BL[1]}))
    assert token.json()["token_type"] == "Bearer" and token.json()["expires_in"] == 3600
    bl = OpenADRClient(server.base, token=token.json()["access_token"])

    created = server.check(bl.create_program({"programName": "summer-peak", "targets": ["group-a"]}))
    assert created.status_code == 201
    program = created.json()
    assert program["objectType"] == "PROGRAM" and program["id"] and program["createdDateTime"].endswith("Z")
    assert server.check(bl.create_program({"programName": "summer-peak"})).status_code == 409

    made = server.check(bl.create_event(event_body(program["id"], kw=3.5, priority=2)))
    assert made.status_code == 201, made.json()
    event = made.json()
    assert event["programID"] == program["id"] and event["priority"] == 2
    assert event["intervals"][0]["payloads"][0] == {"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-3.5]}
    # the OpenADR event IS a dr.vtn event: the seed API shows it with the kW asked for
    seed = server.web.get(f"/api/events/{event['id']}").json
    assert seed["requestedReductionKw"] == 3.5 and seed["allVens"] is True and seed["status"] == "active"
    assert seed["priority"] == 998 and seed["durationS"] == 3600

    updated = server.check(bl.update_event(event["id"], event_body(program["id"], kw=5)))
    assert updated.status_code == 200, updated.json()
    assert server.web.get(f"/api/events/{event['id']}").json["modificationNumber"] == 1
    assert updated.json()["modificationDateTime"] >= event["modificationDateTime"]

    listed = server.check(bl.get_events(programID=program["id"]))
    assert [e["id"] for e in listed.json()] == [event["id"]]
    assert server.check(bl.get_events(programID="other")).json() == []

    deleted = server.check(bl.delete_event(event["id"]))
    assert deleted.status_code == 200 and deleted.json()["id"] == event["id"]
    assert server.web.get(f"/api/events/{event['id']}").json["status"] == "cancelled"
    assert server.check(bl.get_event_by_id(event["id"])).status_code == 404
    assert server.validated == 10


def test_seed_event_appears_in_the_default_program(server):
    seed = server.web.post("/api/events/", {"startTime": "2099-01-01T00:00:00Z", "durationS": 600,
                                            "requestedReductionKw": 1.5, "allVens": True})
    if seed.status_code == 400:  # beyond maxStartAheadS: use a near start instead
        from datetime import datetime, timedelta, timezone
        start = (datetime.now(timezone.utc) + timedelta(minutes=10)).isoformat()
        seed = server.web.post("/api/events/", {"startTime": start, "durationS": 600, "requestedReductionKw": 1.5,
                                                "allVens": True})
    assert seed.status_code == 201, seed.json
    bl = server.client(BL)
    got = server.check(bl.get_event_by_id(seed.json["eventId"])).json()
    assert got["programID"] == "default"
    assert got["intervals"][0]["payloads"][0]["values"] == [-1.5]
    assert got["intervalPeriod"]["duration"] == "PT600S"


def test_simple_level_and_bad_payloads(server):
    bl = server.client(BL)
    simple = event_body("default")
    simple["intervals"] = [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}]
    made = server.check(bl.create_event(simple))
    assert made.status_code == 201, made.json()
    assert server.web.get(f"/api/events/{made.json()['id']}").json["level"] == 2
    assert made.json()["intervals"][0]["payloads"][0] == {"type": "SIMPLE", "values": [2]}
    for bad, word in ((event_body("default", kw=-1), "negative"),            # a rise, not a shed
                      (event_body("nope"), "program"),
                      ({**event_body("default"), "intervals": []}, "interval"),
                      ({**event_body("default"), "intervalPeriod": {"start": "yesterday", "duration": "PT1H"}},
                       "intervalPeriod.start"),
                      ({**event_body("default"), "intervalPeriod": {"start": "0001-01-01", "duration": "P1M"}},
                       "intervalPeriod.duration"),
                      ({"programID": 7}, "programID")):
        answer = server.check(bl.create_event(bad))
        assert answer.status_code == 400, (bad, answer.json())
        assert word in answer.json()["detail"]
    assert server.web.get("/api/events/").json and len(server.web.get("/api/events/").json) == 1


def test_auth_errors(server):
    token_url = server.base + "/auth/token"
    wrong = server.check(httpx.post(token_url, data={"grant_type": "client_credentials", "client_id": BL[0],
                                                     "client_secret": "not-the-secret"}))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert BL[1] not in wrong.text
    missing = server.check(httpx.post(token_url, data={"grant_type": "client_credentials", "client_id": BL[0]}))
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    grant = server.check(httpx.post(token_url, data={"grant_type": "password", "client_id": BL[0],
                                                     "client_secret": BL[1]}))
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    as_json = httpx.post(token_url, json={"grant_type": "client_credentials", "client_id": BL[0],
                                          "client_secret": BL[1]})
    assert as_json.status_code == 400
    anonymous = OpenADRClient(server.base)
    assert server.check(anonymous.get_programs()).status_code == 401
    forged = OpenADRClient(server.base, token="forged-token")
    answer = server.check(forged.create_program({"programName": "x"}))
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_expires(server):
    now = [1000.0]
    server.issuer.clock = lambda: now[0]
    bl = server.client(BL)
    assert server.check(bl.get_programs()).status_code == 200
    now[0] += 3600
    assert server.check(bl.get_programs()).status_code == 401


def test_ven_role_privacy(server):
    bl, ven1, ven2 = server.client(BL), server.client(VEN1), server.client(VEN2)
    # a VEN cannot create programs or events
    assert server.check(ven1.create_program({"programName": "mine"})).status_code == 403
    assert server.check(ven1.create_event(event_body("default"))).status_code == 403
    # each VEN registers itself (and only itself), with a resource
    mine = server.check(ven1.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": "ven-1"}))
    assert mine.status_code == 201, mine.json()
    assert mine.json()["clientID"] == VEN1[0]
    assert server.check(ven1.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": "ven-2"})).status_code == 403
    theirs = server.check(ven2.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": "ven-2"})).json()
    resource = server.check(ven1.create_resource({"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "ev",
                                                  "venID": mine.json()["id"]}))
    assert resource.status_code == 201, resource.json()
    assert server.check(ven2.create_resource({"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "ev",
                                              "venID": mine.json()["id"]})).status_code == 403
    # the business logic puts ven-1 in group-a
    put = server.check(bl.update_ven(mine.json()["id"], {"objectType": "BL_VEN_REQUEST", "clientID": VEN1[0],
                                                         "venName": "ven-1", "targets": ["group-a"]}))
    assert put.status_code == 200, put.json()
    program = server.check(bl.create_program({"programName": "group-a-only", "targets": ["group-a"]})).json()
    to_group = server.check(bl.create_event(event_body("default", targets=["group-a"]))).json()
    to_ven2 = server.check(bl.create_event(event_body("default", targets=["ven-2"]))).json()
    to_all = server.check(bl.create_event(event_body("default"))).json()

    seen1 = {e["id"] for e in server.check(ven1.get_events()).json()}
    seen2 = {e["id"] for e in server.check(ven2.get_events()).json()}
    assert seen1 == {to_group["id"], to_all["id"]}
    assert seen2 == {to_ven2["id"], to_all["id"]}
    assert server.check(ven2.get_event_by_id(to_group["id"])).status_code == 404
    assert program["id"] in {p["id"] for p in server.check(ven1.get_programs()).json()}
    assert program["id"] not in {p["id"] for p in server.check(ven2.get_programs()).json()}
    # a second VEN sees nothing of the first's VEN and resource objects
    assert [v["id"] for v in server.check(ven2.get_vens()).json()] == [theirs["id"]]
    assert server.check(ven2.get_ven_by_id(mine.json()["id"])).status_code == 404
    assert server.check(ven2.get_resources()).json() == []
    assert server.check(ven2.get_resource_by_id(resource.json()["id"])).status_code == 404
    assert server.check(ven2.delete_ven(mine.json()["id"])).status_code == 404
    # the business logic sees everything
    assert len(server.check(bl.get_vens()).json()) == 2
    assert len(server.check(bl.get_events()).json()) == 3


def test_search_paging_and_unknown_parameters(server):
    bl = server.client(BL)
    ids = [server.check(bl.create_program({"programName": f"p{i}"})).json()["id"] for i in range(5)]
    everything = [p["id"] for p in server.check(bl.get_programs(unknownParam="x")).json()]
    assert everything == ["default", *ids]
    assert [p["id"] for p in server.check(bl.get_programs(skip=2, limit=2)).json()] == ids[1:3]
    assert server.check(bl.get_programs(limit=51)).status_code == 400
    assert server.check(bl.get_programs(limit="x")).status_code == 400
    assert server.check(bl.get_program_by_id("no-such")).status_code == 404
    assert server.check(bl.delete_program("default")).status_code == 400  # the spec lists no 409 for DELETE
    bad_id = server.check(bl.get_program_by_id("bad.id"))
    assert bad_id.status_code == 400


def test_vtn_down_is_a_503_problem(server):
    bl = server.client(BL)
    server.web.gateway.down.add("dr.vtn")
    answer = bl.get_programs()  # the spec lists no 503; the body is still a problem object
    assert answer.status_code == 503
    assert answer.json() == {"type": "about:blank", "title": "Service Unavailable", "status": 503,
                             "detail": "dr.vtn is not reachable"}


def test_the_validator_catches_a_drift(server):
    """The spec check is not a no-op: a program without its metadata, or with a wrong objectType, fails it."""
    from openapi_core.validation.response.exceptions import InvalidData
    bl = server.client(BL)
    good = server.check(bl.create_program({"programName": "drift"}))
    for broken in ({k: v for k, v in good.json().items() if k != "createdDateTime"},
                   {**good.json(), "objectType": "BOGUS"}):
        fake = httpx.Response(201, json=broken, request=good.request)
        with pytest.raises(InvalidData):
            server.check(fake)


def test_subscriptions_crud_and_privacy(server):
    bl, ven1, ven2 = server.client(BL), server.client(VEN1), server.client(VEN2)
    body = {"clientName": "ven-1", "programID": "default", "targets": ["ven-1"],
            "objectOperations": [{"objects": ["EVENT", "PROGRAM"], "operations": ["CREATE", "UPDATE"],
                                  "callbackUrl": "https://ven-1.example/callback", "bearerToken": "ven1-callback"}]}
    made = server.check(ven1.create_subscription(body))
    assert made.status_code == 201, made.json()
    sub = made.json()
    assert sub["objectType"] == "SUBSCRIPTION" and sub["clientID"] == VEN1[0]
    assert sub["objectOperations"][0]["bearerToken"] == "ven1-callback"
    # the business logic sees it without the callback's token; another VEN does not see it at all
    (seen,) = server.check(bl.get_subscriptions(objects="EVENT")).json()
    assert seen["id"] == sub["id"] and seen["objectOperations"][0]["bearerToken"] is None
    assert server.check(bl.get_subscriptions(objects="VEN")).json() == []
    assert server.check(ven2.get_subscriptions()).json() == []
    assert server.check(ven2.get_subscription_by_id(sub["id"])).status_code == 404
    assert server.check(ven2.update_subscription(sub["id"], body)).status_code == 404
    changed = server.check(ven1.update_subscription(sub["id"], {**body, "clientName": "renamed"}))
    assert changed.status_code == 200 and changed.json()["clientName"] == "renamed"
    for bad in ({**body, "objectOperations": [{**body["objectOperations"][0], "callbackUrl": "file:///etc/x"}]},
                {**body, "objectOperations": [{**body["objectOperations"][0], "objects": ["NOPE"]}]},
                {**body, "programID": "no-such-program"}, {"clientName": "x"}):
        assert server.check(ven1.create_subscription(bad)).status_code == 400, bad
    assert server.check(ven1.get_notifiers()).json() == {"WEBHOOK": True}
    assert server.check(ven1.delete_subscription(sub["id"])).status_code == 200
    assert server.check(ven1.get_subscriptions()).json() == []


def test_reports_from_vens_private_to_their_client(server):
    bl, ven1, ven2 = server.client(BL), server.client(VEN1), server.client(VEN2)
    program = server.check(bl.create_program({"programName": "reports"})).json()
    to_ven1 = server.check(bl.create_event(event_body(program["id"], targets=["ven-1"]))).json()
    report = {"eventID": to_ven1["id"], "clientName": "ven-1", "reportName": "usage",
              "payloadDescriptors": [{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "USAGE",
                                      "units": "KW"}],
              "resources": [{"resourceName": "AGGREGATED_REPORT",
                             "intervalPeriod": {"start": "2026-01-01T00:00:00Z", "duration": "PT5M"},
                             "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [3.2]}]}]}]}
    made = server.check(ven1.create_report(report))
    assert made.status_code == 201, made.json()
    assert made.json()["objectType"] == "REPORT" and made.json()["clientID"] == VEN1[0]
    assert "_programID" not in made.json()
    assert server.check(bl.create_report(report)).status_code == 403          # only VENs write reports
    assert server.check(ven2.create_report({**report, "clientName": "ven-2"})).status_code == 400  # not its event
    assert server.check(ven2.get_reports()).json() == []
    assert server.check(ven2.get_report_by_id(made.json()["id"])).status_code == 404
    assert [r["id"] for r in server.check(bl.get_reports(programID=program["id"])).json()] == [made.json()["id"]]
    assert server.check(bl.get_reports(programID="default")).json() == []
    assert [r["id"] for r in server.check(ven1.get_reports(eventID=to_ven1["id"])).json()] == [made.json()["id"]]
    assert server.check(ven1.update_report(made.json()["id"], {**report, "reportName": "v2"})).json()[
        "reportName"] == "v2"
    assert server.check(ven1.delete_report(made.json()["id"])).status_code == 200
