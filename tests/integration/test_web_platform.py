"""dr.web on a real VOLTTRON 11 platform with the real dr.vtn: the seed's REST flow over real HTTP (register a
VEN, create an event, the command reaches the VEN on the bus, its ack and telemetry show in the metrics and
the dashboard, stop restores), errors naming the field, 401 without the token, 404 for unknown ids, a peer
that is not there is a 503 naming it, and a fuzz sample of bad bodies through the whole chain.

The test process plays the VEN on the bus (dr/cmd, dr/ack, dr/telemetry); the VEN agent itself is
exercised by the end-to-end test.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any

import gevent
import pytest
from hypothesis import HealthCheck, given, settings

from dr_common import topics
from dr_web.config import WebConfig
from tests.unit.test_web_fuzz import EVENT_BODIES, VEN_BODIES

pytestmark = pytest.mark.integration

TOKEN = "pytest-token-0001"
# the test's bus client plays the VENs' side (acks, telemetry, bridge batches): dr.vtn and dr.web trust it as they
# trust dr.mqtt
WEB_CONFIG = {"host": "127.0.0.1", "port": 0, "api_token": TOKEN, "trustedBridges": ["dr.mqtt", "pytest.client"]}
VTN_CONFIG = {"allocation": "equal", "retryInitialS": 1.0, "retryMaxS": 4.0, "flushIntervalS": 0.5,
              "offlineTimeoutS": 30, "trustedBridges": ["dr.mqtt", "pytest.client"]}


class Http:
    """A small JSON client for dr.web (stdlib only)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def __call__(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                 raw: bytes | None = None, timeout: float = 15.0) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, data = self("GET", path)
        assert status == 200, (path, status, data)
        return data


@contextlib.contextmanager
def as_ven(plat, ven_id: str):
    """A bus client with the VEN's own identity (dr.ven.<venId>): dr.vtn takes a VEN's acks only from it."""
    from dr_ops.busclient import BusClient

    client = BusClient(plat.plat, topics.ven_identity(ven_id)).connect()
    try:
        yield client
    finally:
        client.close()


def _health(plat, identity: str = topics.WEB_IDENTITY) -> dict | None:
    """An agent's health, or None while it does not answer (restarting)."""
    try:
        return plat.rpc(identity, "health", timeout=3)
    except gevent.Timeout:  # not an Exception
        return None


def _healthy(plat, identity: str) -> bool:
    try:
        health = plat.rpc(identity, "health", timeout=3)
    except gevent.Timeout:  # not an Exception: the agent is still (re)starting
        return False
    return bool(health.get("ok"))


def web_url(plat) -> str:
    return plat.wait_for(lambda: _healthy(plat, topics.WEB_IDENTITY)
                         and plat.rpc(topics.WEB_IDENTITY, "health")["url"], timeout=30, what="dr.web serving")


def start_stack(vplatform) -> tuple[Any, Http]:
    """dr.vtn and dr.web installed (an unchanged install is a no-op) and answering."""
    t0 = time.monotonic()
    vtn_action = vplatform.install_agent("vtn_dispatcher", topics.VTN_IDENTITY, config=VTN_CONFIG, tag="dr-vtn")
    web_action = vplatform.install_agent("web", topics.WEB_IDENTITY, config=WEB_CONFIG, tag="dr-web")
    vplatform.wait_for(lambda: _healthy(vplatform, topics.VTN_IDENTITY), timeout=30, what="dr.vtn healthy")
    url = web_url(vplatform)
    print(f"\ndr.vtn {vtn_action}, dr.web {web_action} in {time.monotonic() - t0:.1f} s; {url}")
    return vplatform, Http(url)


@pytest.fixture(scope="module")
def stack(vplatform):
    return start_stack(vplatform)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def stable_state(http: Http) -> tuple[list, list]:
    """What a write would change: VEN registrations and events (not last-seen times or live status)."""
    vens = http.get("/api/vens/")
    events = http.get("/api/events/?limit=10000")
    return (sorted((v["venId"], v["updatedAt"], v["name"], v["maxShedKw"], v["transport"]) for v in vens),
            sorted((e["eventId"], e["modificationNumber"], e["createdAt"]) for e in events))


def test_register_create_dispatch_ack_metrics_stop_over_http(stack, figure):
    plat, http = stack
    ven = f"ven-web-{uuid.uuid4().hex[:6]}"
    arrivals: list[tuple[float, dict]] = []
    plat.bus.subscribe(topics.bus_cmd(ven), lambda *a: arrivals.append((time.time(), a[5])))

    status, created = http("POST", "/api/vens/",
                           {"venId": ven, "name": "web itest", "transport": "bus", "status": "online", "maxShedKw": 4})
    assert status == 201 and created["venId"] == ven and created["created"] is True, created
    assert ven in [v["venId"] for v in http.get("/api/vens/")]
    assert http.get(f"/api/vens/{ven}")["name"] == "web itest"

    start = time.time() + 2.0
    status, event = http("POST", "/api/events/", {"status": "scheduled", "startTime": iso(start), "durationS": 120,
                                                  "requestedReductionKw": 1.5, "venIds": [ven], "name": "web itest"})
    assert status == 201 and event["status"] == "far", event
    event_id = event["eventId"]
    assert http.get(f"/api/events/{event_id}")["eventId"] == event_id
    assert event_id in [e["eventId"] for e in http.get("/api/events/?status=far")]

    with as_ven(plat, ven) as the_ven:
        plat.wait_for(lambda: arrivals, timeout=10, step=0.02, what="the command on dr/cmd/<venId>")
        received_at, command = arrivals[0]
        assert command["op"] == "event" and command["eventId"] == event_id
        assert command["requestedReductionKw"] == 1.5
        latency_ms = (received_at - start) * 1000

        acked_at = time.time()
        the_ven.publish(topics.bus_ack(ven), {"correlationId": command["correlationId"], "op": "event", "ok": True,
                                              "venId": ven, "data": {"targetKw": 1.5, "acceptedReduceKw": 1.5}})
        the_ven.publish(topics.bus_telemetry(ven), {"venId": ven, "ts": iso(time.time()), "usedPowerKw": 2.5,
                                                    "baselinePowerKw": 4.0, "shedPowerKw": 1.5, "eventId": event_id,
                                                    "requestedReductionKw": 1.5})
    metrics = plat.wait_for(lambda: (m := http.get(f"/api/events/{event_id}/metrics"))["vensResponding"] == 1
                            and m["currentReductionKw"] == 1.5 and m, timeout=10, step=0.02,
                            what="metrics show the ack")
    shown_ms = (time.time() - acked_at) * 1000
    assert metrics["status"] == "active" and 0 < metrics["avgResponseMs"] < (time.time() - start) * 1000
    (row,) = metrics["vens"]
    assert row["venId"] == ven and row["state"] == "acked" and row["ok"] is True

    dash = http.get("/api/dashboard")
    (mine,) = [v for v in dash["vens"] if v["venId"] == ven]
    assert mine["registered"] and mine["online"] and mine["telemetry"]["eventId"] == event_id
    assert mine["telemetry"]["shedPowerKw"] == 1.5
    assert event_id in [e["eventId"] for e in dash["events"] if e["status"] == "active"]
    assert dash["site"]["latest"]["vens"] >= 1 and not dash["notes"]

    arrivals.clear()
    status, stopped = http("POST", f"/api/events/{event_id}/stop")
    assert status == 200 and stopped["status"] == "completed", stopped
    plat.wait_for(lambda: any(c["op"] == "restore" for _, c in arrivals), timeout=10, step=0.05,
                  what="the restore command")
    assert http.get(f"/api/events/{event_id}")["status"] == "completed"
    status, again = http("POST", f"/api/events/{event_id}/stop")
    assert status == 409 and again["field"] == "eventId"
    figure("dr.web -> dr.vtn over HTTP: event start -> command on the VEN's bus topic", f"{latency_ms:.0f} ms")
    figure("dr.web: ack and telemetry published -> metrics over HTTP show both", f"{shown_ms:.0f} ms")


def test_errors_over_http_name_the_field(stack):
    plat, http = stack
    before = stable_state(http)
    status, error = http("POST", "/api/events/", {"startTime": iso(time.time() + 60), "durationS": 60,
                                                  "requestedReductionKw": "lots"})
    assert status == 400 and error["field"] == "requestedReductionKw" and "number" in error["error"]
    status, error = http("POST", "/api/events/", {"startTime": iso(time.time() + 60), "durationS": 60,
                                                  "requestedReductionKw": 1, "venIds": ["ven-nobody-xyz"]})
    assert status == 400 and error["field"] == "venIds" and "unknown VEN" in error["error"]  # dr.vtn's answer
    status, error = http("POST", "/api/vens/", raw=b"{not json")
    assert status == 400 and error["field"] == "<payload>"
    status, error = http("POST", "/api/vens/", {"venId": "ven-web-unauth"}, token=None)
    assert status == 401 and error["field"] == "Authorization"
    status, error = http("POST", "/api/events/", {"startTime": iso(time.time() + 60), "durationS": 60, "kw": 1},
                         token="not-the-token")
    assert status == 401
    for method, path in (("GET", "/api/events/evt-none-here"), ("GET", "/api/events/evt-none-here/metrics"),
                         ("POST", "/api/events/evt-none-here/stop"), ("GET", "/api/vens/ven-none-here")):
        status, error = http(method, path)
        assert status == 404 and error["code"] == "not_found", (path, error)
    assert stable_state(http) == before


def test_openapi_and_pages_are_served(stack):
    _, http = stack
    doc = http.get("/api/openapi.json")
    assert doc["openapi"] == "3.1.0" and "/api/events/{event_id}/metrics" in doc["paths"]
    assert doc["servers"][0]["url"] == http.base
    with urllib.request.urlopen(http.base + "/", timeout=5) as response:
        assert b'id="site-chart"' in response.read()
    health = http.get("/api/health")
    assert health["peers"][topics.VTN_IDENTITY]["reachable"] is True
    assert health["peers"][topics.VTN_IDENTITY]["health"]["ok"] is True


def test_a_peer_that_is_not_there_is_a_503_naming_it(stack, figure):
    plat, _ = stack
    absent = {"vtn_identity": "dr.vtn.absent", "historian_identity": "platform.historian.absent"}
    plat.store_config(topics.WEB_IDENTITY, "config", {**WEB_CONFIG, **absent})
    try:
        http = Http(plat.wait_for(lambda: "absent" in json.dumps(_peers(plat)) and web_url(plat), timeout=30,
                                  what="dr.web reconfigured"))
        t0 = time.monotonic()
        status, error = http("GET", "/api/vens/")
        elapsed = time.monotonic() - t0
        assert status == 503 and error["field"] == "<dr.vtn.absent>" and error["code"] == "unavailable", error
        status, error = http("POST", "/api/events/", {"startTime": iso(time.time() + 60), "durationS": 60, "kw": 1,
                                                      "allVens": True})
        assert status == 503 and "dr.vtn.absent" in error["error"]
        status, error = http("GET", "/api/events/evt-1/performance")
        assert status == 503 and "platform.historian.absent" in error["error"]
        dash = http.get("/api/dashboard")
        assert dash["notes"] and "dr.vtn.absent" in dash["notes"][0]
        figure("dr.web: answer when dr.vtn is not connected (503)", f"{elapsed * 1000:.0f} ms")
        rpc_timeout_s = WebConfig.model_fields["rpc_timeout_s"].default  # WEB_CONFIG leaves it at its default
        assert elapsed < rpc_timeout_s, "a peer that is not connected is answered at once, not after the RPC timeout"
    finally:
        plat.store_config(topics.WEB_IDENTITY, "config", WEB_CONFIG)
        plat.wait_for(lambda: "absent" not in json.dumps(_peers(plat)) and web_url(plat), timeout=30,
                      what="dr.web configured back")


def _peers(plat) -> dict:
    url = plat.rpc(topics.WEB_IDENTITY, "health")["url"]
    if not url:
        return {}
    return Http(url).get("/api/health")["peers"]


def test_a_placeholder_token_beyond_loopback_is_refused_and_said_at_start(stack):
    """The shipped token on 0.0.0.0: a reconfiguration is refused (the previous one stays); at start dr.web keeps
    running without serving HTTP and says why in health. A real configuration brings it back."""
    plat, _ = stack
    exposed = {**WEB_CONFIG, "host": "0.0.0.0", "api_token": "demo-token-change-me"}
    plat.store_config(topics.WEB_IDENTITY, "config", exposed)
    try:
        health = plat.wait_for(lambda: (h := plat.rpc(topics.WEB_IDENTITY, "health"))["configError"] and h,
                               timeout=15, what="the placeholder token refused")
        assert "apiToken" in health["configError"] and "placeholder" in health["configError"]
        assert "demo-token-change-me" not in json.dumps(health)
        assert health["url"].startswith("http://127.0.0.1:") and not health["ok"]  # the previous one serves
        plat.restart_agent(topics.WEB_IDENTITY)
        health = plat.wait_for(lambda: (h := _health(plat)) and h["configError"] and h, timeout=60,
                               what="dr.web restarted with the placeholder token")
        assert health["url"] is None and not health["ok"] and "apiToken" in health["configError"]
    finally:
        plat.store_config(topics.WEB_IDENTITY, "config", WEB_CONFIG)
    assert web_url(plat).startswith("http://127.0.0.1:")


def test_telemetry_of_an_unregistered_ven_is_refused_and_not_shown(stack):
    plat, http = stack
    http = Http(web_url(plat))
    known, stray = f"ven-web-{uuid.uuid4().hex[:6]}", f"ven-stray-{uuid.uuid4().hex[:6]}"
    assert http("POST", "/api/vens/", {"venId": known, "transport": "bus"})[0] == 201
    plat.wait_for(lambda: plat.rpc(topics.WEB_IDENTITY, "health")["registryKnown"], timeout=30,
                  what="dr.web read dr.vtn's registry")
    before = plat.rpc(topics.WEB_IDENTITY, "health")["telemetryRejectedByReason"].get("unregistered", 0)
    plat.publish(topics.bus_telemetry(stray), {"venId": stray, "usedPowerKw": 100_000.0})
    plat.publish(topics.bus_telemetry(known), {"venId": known, "usedPowerKw": 1.25})
    plat.wait_for(lambda: known in plat.rpc(topics.WEB_IDENTITY, "latest_telemetry"), timeout=10,
                  what="the registered VEN's telemetry")
    health = plat.wait_for(lambda: (h := plat.rpc(topics.WEB_IDENTITY, "health"))["telemetryRejectedByReason"]
                           .get("unregistered", 0) > before and h, timeout=10, what="the stray VEN refused")
    assert stray not in plat.rpc(topics.WEB_IDENTITY, "latest_telemetry")
    dash = http.get("/api/dashboard")
    assert stray not in [v["venId"] for v in dash["vens"]] and dash["site"]["latest"]["usedPowerKw"] < 100_000
    status, error = http("GET", f"/api/telemetry/vens/{stray}/loads")
    assert status == 404 and error["field"] == "venId"
    assert health["vensSeen"] >= 1


def test_ids_and_numbers_over_http(stack):
    plat, _ = stack
    http = Http(web_url(plat))
    for path, field in (("/api/events/a%00b", "eventId"), ("/api/vens/ven%E2%80%AE", "venId"),
                        ("/api/events/" + "e" * 65 + "/metrics", "eventId")):
        status, error = http("GET", path)
        assert status == 400 and error["field"] == field, (path, error)
    for raw in (b'{"venId": "ven-n", "maxShedKw": NaN}', b'{"venId": "ven-n", "x": 1' + b"0" * 4400 + b"}"):
        status, error = http("POST", "/api/vens/", raw=raw)
        assert status == 400 and error["field"] == "<payload>", error
    with urllib.request.urlopen(http.base + "/api/vens/", timeout=10) as response:
        json.loads(response.read(), parse_constant=lambda c: pytest.fail(f"{c} in a response"))


FUZZ_COUNTS: dict[int, int] = {}


def _fuzz_one(http: Http, path: str, raw: bytes) -> None:
    status, error = http("POST", path, raw=raw)
    assert 400 <= status < 500, (status, raw[:300], error)
    assert isinstance(error, dict) and error["field"] and error["code"], error
    FUZZ_COUNTS[status] = FUZZ_COUNTS.get(status, 0) + 1


def test_fuzz_sample_through_the_real_chain(stack, figure):
    """Bad bodies over real HTTP through dr.web to the real dr.vtn: no 5xx, nothing written."""
    plat, _ = stack
    http = Http(web_url(plat))
    ven = "ven-web-fuzz"
    http("POST", "/api/vens/", {"venId": ven, "transport": "bus"})
    # the unit tier's strategies name ven-1 as the registered VEN and evt-existing as the existing event
    http("POST", "/api/vens/", {"venId": "ven-1", "transport": "bus"})
    status, _ = http("POST", "/api/events/", {"eventId": "evt-existing", "startTime": iso(time.time() + 7200),
                                              "durationS": 60, "kw": 1, "venIds": ["ven-1"]})
    assert status in (201, 409)
    before = stable_state(http)
    t0 = time.monotonic()
    run = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    run(given(raw=EVENT_BODIES)(lambda raw: _fuzz_one(http, "/api/events/", raw)))()
    run = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    run(given(raw=VEN_BODIES)(lambda raw: _fuzz_one(http, "/api/vens/", raw)))()
    elapsed = time.monotonic() - t0
    assert stable_state(http) == before
    total = sum(FUZZ_COUNTS.values())
    figure("REST fuzz through the real dr.web + dr.vtn", f"{total} bad bodies in {elapsed:.1f} s, "
           f"statuses {dict(sorted(FUZZ_COUNTS.items()))}")
    assert total >= 3000 and 400 in FUZZ_COUNTS
    assert _healthy(plat, topics.WEB_IDENTITY) and _healthy(plat, topics.VTN_IDENTITY)
