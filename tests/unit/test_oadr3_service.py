"""dr.vtn's OpenADR 3 rooms without HTTP (oadr_models, oadr_events, oadr_objects, oadr_api through VtnService)
and dr.web's OpenADR client config and tokens (dr_web.oadr3.auth)."""

from __future__ import annotations

import random
import time

import pytest

from dr_common.config import ConfigError, load_model
from dr_vtn_dispatcher.config import parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.errors import ApiError, api_call
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.oadr_models import duration_seconds, seconds_duration
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url
from dr_web.oadr3.auth import AuthFailure, Oadr3Config, TokenIssuer

BL = {"clientId": "bl-1", "role": "bl", "venName": None}
VEN_A = {"clientId": "ven-a-client", "role": "ven", "venName": "ven-a"}


class Vtn:
    def __init__(self, folder, config: dict | None = None) -> None:
        self.folder = folder
        self.config = config or {}
        self.clock = ManualScheduler(time.time())
        self._open()

    def _open(self) -> None:
        self.store = Store(sqlite_url(str(self.folder / "vtn.sqlite")))
        self.service = VtnService(self.store, self.clock, MemorySender(self.clock.now), parse_config(self.config),
                                  rng=random.Random(3))
        self.service.start()

    def restart(self) -> None:
        self.service.stop()
        self.store.close()
        self._open()

    def close(self) -> None:
        self.service.stop()
        self.store.close()


@pytest.fixture
def vtn(tmp_path):
    v = Vtn(tmp_path)
    yield v
    v.close()


def oadr_event(program: str = "default", **extra) -> dict:
    body = {"programID": program, "intervalPeriod": {"start": "0001-01-01", "duration": "PT30M"},
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-2]}]}]}
    body.update(extra)
    return body


# --- durations ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [("PT1H", 3600), ("PT90S", 90), ("P1DT1M", 86460), ("P2W", 14 * 86400),
                                           ("PT0.5S", 0.5), ("P9999Y", None)])
def test_durations(text, seconds):
    assert duration_seconds(text, "d") == seconds


@pytest.mark.parametrize("text", ["1H", "P", "PT", "-PT1H", "P1M", "P2Y", "PT1H30", "PT1e9S", "P99999999999D"])
def test_bad_durations_name_the_field(text):
    with pytest.raises(ApiError) as info:
        duration_seconds(text, "intervalPeriod.duration")
    assert info.value.field == "intervalPeriod.duration" and info.value.code == "invalid"


def test_seconds_duration_roundtrip():
    for seconds in (1, 90, 3600.5, 0.25):
        assert duration_seconds(seconds_duration(seconds), "d") == seconds


# --- events: the mapping ----------------------------------------------------------------------------
def test_open_ended_event_lasts_the_longest_the_vtn_accepts(tmp_path):
    vtn = Vtn(tmp_path, {"maxEventDurationS": 7200})
    try:
        made = vtn.service.oadr_create("events", oadr_event(intervalPeriod={"start": "0001-01-01",
                                                                              "duration": "P9999Y"}), BL)
        assert vtn.service.get_event(made["id"])["durationS"] == 7200
    finally:
        vtn.close()


def test_start_now_randomize_targets_and_priority(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "group": "north"})
    made = vtn.service.oadr_create("events", oadr_event(
        intervalPeriod={"start": "0001-01-01T00:00:00Z", "duration": "PT1H", "randomizeStart": "PT5M"},
        targets=["ven-a", "north"], priority=0), BL)
    seed = vtn.service.get_event(made["id"])
    assert seed["status"] == "active"          # 0001-01-01 is now
    assert seed["randomizeStartS"] == 300 and seed["priority"] == 1000
    assert seed["venIds"] == ["ven-a"] and seed["groups"] == ["north"] and seed["allVens"] is False
    assert made["priority"] == 0 and made["targets"] == ["ven-a", "north"]
    assert made["intervalPeriod"]["randomizeStart"] == "PT300S"


def test_refused_event_writes_nothing(vtn):
    before = vtn.service.list_events()
    several = oadr_event(intervals=[{"id": i, "payloads": [{"type": "SIMPLE", "values": [1]}]} for i in range(97)])
    for bad in (several, oadr_event(intervals=[{"id": 0, "payloads": [{"type": "PRICE", "values": [0.2]}]}]),
                oadr_event(intervals=[{"id": 0, "payloads": [{"type": "SIMPLE", "values": [7]}]}]),
                oadr_event(intervals=[{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [-5]}]}]),
                oadr_event(intervals=[{"id": 0, "payloads": [{"type": "SIMPLE", "values": [float("nan")]}]}]),
                oadr_event(targets=["bad target!"]), oadr_event(priority=-1), "not an object"):
        answer = api_call(vtn.service.oadr_create, "events", bad, BL)
        assert answer["code"] == "invalid", (bad, answer)
    assert vtn.service.list_events() == before
    assert list(vtn.service.oadr_book.objects["EVENT"]) == []


def test_bad_principal_and_kind_are_refused(vtn):
    for principal in ({}, {"clientId": "x", "role": "admin"}, {"clientId": 3, "role": "bl"}, None):
        assert api_call(vtn.service.oadr_search, "programs", principal)["field"] == "<principal>"
    assert api_call(vtn.service.oadr_search, "notifiers", BL)["field"] == "<path>"


# --- persistence ----------------------------------------------------------------------------------
def test_objects_survive_a_restart(vtn):
    program = vtn.service.oadr_create("programs", {"programName": "p", "targets": ["north"]}, BL)
    ven = vtn.service.oadr_create("vens", {"objectType": "VEN_VEN_REQUEST", "venName": "ven-a"}, VEN_A)
    resource = vtn.service.oadr_create("resources", {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "ev",
                                                     "venID": ven["id"]}, VEN_A)
    event = vtn.service.oadr_create("events", oadr_event(program["id"], eventName="kept",
                                                         reportDescriptors=[{"payloadType": "USAGE"}]), BL)
    sub = vtn.service.oadr_create("subscriptions", {"clientName": "a", "objectOperations": [
        {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": "https://a.example/cb"}]}, VEN_A)
    vtn.restart()
    assert vtn.service.oadr_get("subscriptions", sub["id"], VEN_A) == sub
    assert vtn.service.oadr_get("programs", program["id"], BL) == program
    assert vtn.service.oadr_get("vens", ven["id"], VEN_A) == ven
    assert vtn.service.oadr_get("resources", resource["id"], VEN_A) == resource
    again = vtn.service.oadr_get("events", event["id"], BL)
    assert again["eventName"] == "kept" and again["reportDescriptors"] == [{"payloadType": "USAGE"}]
    assert [p["id"] for p in vtn.service.oadr_search("programs", BL, {})] == ["default", program["id"]]


# --- VEN role -------------------------------------------------------------------------------------
def test_a_ven_cannot_give_itself_targets_or_another_client(vtn):
    ven = vtn.service.oadr_create("vens", {"objectType": "BL_VEN_REQUEST", "venName": "ven-a",
                                           "clientID": "someone-else", "targets": ["everything"]}, VEN_A)
    assert ven["clientID"] == VEN_A["clientId"] and "targets" not in ven
    group_event = vtn.service.oadr_create("events", oadr_event(targets=["everything"]), BL)
    assert api_call(vtn.service.oadr_get, "events", group_event["id"], VEN_A)["code"] == "not_found"
    again = vtn.service.oadr_update("vens", ven["id"], {"objectType": "VEN_VEN_REQUEST", "venName": "ven-a",
                                                        "targets": ["everything"]}, VEN_A)
    assert "targets" not in again
    assert api_call(vtn.service.oadr_create, "vens", {"objectType": "VEN_VEN_REQUEST", "venName": "ven-b"},
                    VEN_A)["code"] == "forbidden"


def test_search_limit_bounds(vtn):
    for query, field in (({"limit": 51}, "limit"), ({"skip": -1}, "skip"), ({"limit": True}, "limit"),
                         ({"targets": "x"}, "targets")):
        assert api_call(vtn.service.oadr_search, "programs", BL, query)["field"] == field
    assert vtn.service.oadr_search("programs", BL, {"limit": 0}) == []


# --- clients and tokens (dr.web) ------------------------------------------------------------------
def _config(**extra) -> Oadr3Config:
    raw = {"clients": [{"clientId": "demo-bl", "clientSecret": "demo-bl-secret-change-me", "role": "bl"},
                       {"clientId": "demo-ven", "clientSecret": "demo-ven-secret-change-me", "role": "ven",
                        "venName": "ven-demo"}]}
    raw.update(extra)
    return load_model(Oadr3Config, raw)


def test_placeholder_secrets_only_on_loopback():
    config = _config()
    config.check_binding("127.0.0.1")
    with pytest.raises(ConfigError) as info:
        config.check_binding("0.0.0.0")
    assert info.value.key == "openadr3.clients.0.clientSecret"
    assert "change-me" not in str(info.value)


@pytest.mark.parametrize("raw, key", [
    ({"clients": [{"clientId": "v", "clientSecret": "long-enough-secret", "role": "ven"}]}, "clients.0"),
    ({"clients": [{"clientId": "b", "clientSecret": "short", "role": "bl"}]}, "clients.0.clientSecret"),
    ({"clients": [{"clientId": "b", "clientSecret": "long-enough-secret", "role": "root"}]}, "clients.0.role"),
    ({"clients": [{"clientId": "b", "clientSecret": "long-enough-secret", "role": "bl",
                   "scopes": ["write_reports"]}]}, "clients.0"),
    ({"tokenTtlS": 5}, "tokenTtlS"), ({"surprise": 1}, "surprise")])
def test_bad_client_config_names_the_key_never_the_secret(raw, key):
    with pytest.raises(ConfigError) as info:
        load_model(Oadr3Config, raw)
    assert info.value.key == key
    assert "long-enough-secret" not in str(info.value)


def test_tokens_scopes_expiry_and_bound():
    now = [100.0]
    issuer = TokenIssuer(_config(maxTokens=2, tokenTtlS=60), clock=lambda: now[0])
    form = {"grant_type": "client_credentials", "client_id": "demo-ven", "client_secret": "demo-ven-secret-change-me"}
    answer = issuer.issue(form)
    who = issuer.verify(f"Bearer {answer['access_token']}")
    assert who is not None and who.role == "ven" and who.ven_name == "ven-demo" and "write_events" not in who.scopes
    narrow = issuer.issue({**form, "scope": "read_targets"})
    assert issuer.verify(f"Bearer {narrow['access_token']}").scopes == {"read_targets"}
    with pytest.raises(AuthFailure) as info:
        issuer.issue({**form, "scope": "write_events"})
    assert info.value.error == "invalid_scope"
    issuer.issue(form)                       # a third token: the oldest is forgotten
    assert issuer.verify(f"Bearer {answer['access_token']}") is None
    assert issuer.counters()["tokensHeld"] == 2
    now[0] += 60
    assert issuer.verify(f"Bearer {narrow['access_token']}") is None
    for bad in ({**form, "client_secret": "wrong"}, {**form, "client_id": "nobody"}):
        with pytest.raises(AuthFailure) as info:
            issuer.issue(bad)
        assert info.value.status == 401 and "change-me" not in info.value.description
    assert "change-me" not in repr(issuer.clients)


@pytest.mark.parametrize("period, field", [({"start": "soon"}, "intervalPeriod.start"),
                                           ({"start": "1969-12-31T00:00:00Z"}, "intervalPeriod.start"),
                                           ({"duration": "1 hour"}, "intervalPeriod.duration"),
                                           ({"randomizeStart": "PT"}, "intervalPeriod.randomizeStart")])
def test_program_interval_period_is_checked(vtn, period, field):
    answer = api_call(vtn.service.oadr_create, "programs", {"programName": "p", "intervalPeriod": period}, BL)
    assert answer["code"] == "invalid" and answer["field"] == field
    assert [p["id"] for p in vtn.service.oadr_search("programs", BL, {})] == ["default"]


# --- reports as telemetry -------------------------------------------------------------------------
def _report(event_id: str, *resources: dict) -> dict:
    return {"eventID": event_id, "clientName": "c", "resources": list(resources)}


def _resource(name: str, *payloads: tuple[str, float], duration: str = "PT15M") -> dict:
    return {"resourceName": name, "intervalPeriod": {"start": "2026-01-01T00:00:00Z", "duration": duration},
            "intervals": [{"id": 0, "payloads": [{"type": t, "values": [v]} for t, v in payloads]}]}


def test_report_figures_map_to_telemetry():
    from datetime import datetime, timezone
    from dr_vtn_dispatcher.oadr_reports import report_telemetry
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    usage = report_telemetry("v", _report("e", _resource("r1", ("USAGE", 1.0)), _resource("r2", ("USAGE", 0.5))), now)
    assert usage.used_power_kw == 6.0 and usage.event_id == "e"          # 1.5 kWh in 15 min = 6 kW
    assert usage.ts == datetime(2026, 1, 1, 0, 15, tzinfo=timezone.utc)
    both = report_telemetry("v", _report("e", _resource("r1", ("DEMAND", 9)),
                                         _resource("AGGREGATED_REPORT", ("DEMAND", 3), ("BASELINE", 5))), now)
    assert (both.used_power_kw, both.baseline_power_kw, both.shed_power_kw) == (3.0, 5.0, 2.0)
    delta = report_telemetry("v", _report("e", _resource("r", ("DEMAND", 3), ("DELTA_USAGE", 0.25))), now)
    assert delta.shed_power_kw == 1.0
    assert report_telemetry("v", _report("e", _resource("r", ("OPERATING_STATE", 1))), now) is None
    assert report_telemetry("v", _report("e", _resource("r", ("USAGE", 1), duration="P1M")), now) is None


def test_a_vens_report_is_its_telemetry(vtn):
    vtn.service.register_ven({"venId": "ven-a", "transport": "bus", "maxShedKw": 5})
    made = vtn.service.oadr_create("events", oadr_event(targets=["ven-a"]), BL)
    report = _report(made["id"], _resource("AGGREGATED_REPORT", ("DEMAND", 3), ("BASELINE", 5)))
    vtn.service.oadr_create("reports", report, VEN_A)
    ven = vtn.service.get_ven("ven-a")
    assert ven["usedPowerKw"] == 3 and ven["shedPowerKw"] == 2 and ven["status"] == "online"
    assert vtn.service.event_metrics(made["id"])["currentReductionKw"] == 2
    # a VEN client speaks for its own venName only: ven-b's report (on an event it sees) feeds nothing
    everyone = vtn.service.oadr_create("events", oadr_event(), BL)
    vtn.service.oadr_create("reports", _report(everyone["id"], _resource("AGGREGATED_REPORT", ("DEMAND", 9))),
                            {"clientId": "b", "role": "ven", "venName": "ven-b"})
    assert vtn.service.get_ven("ven-a")["usedPowerKw"] == 3


def test_dr_webs_clients_are_kept_in_the_store_without_secrets_and_survive_a_restart(vtn):
    from dr_vtn_dispatcher.oadr_objects import CLIENT

    config = Oadr3Config.model_validate({"clients": [
        {"clientId": "bl-1", "clientSecret": "bl-secret-0001", "role": "bl"},
        {"clientId": "ven-1", "clientSecret": "ven-secret-0001", "role": "ven", "venName": "ven-a"}]})
    clients = config.public_clients()                           # what dr.web hands over
    assert "secret" not in str(clients).lower()
    assert vtn.service.oadr_clients(clients) == {"clients": 2, "written": 2, "deleted": 0}
    assert vtn.service.oadr_clients(clients) == {"clients": 2, "written": 0, "deleted": 0}   # unchanged: no write
    bad = api_call(vtn.service.oadr_clients, [{**clients[0], "clientSecret": "s3cret-value"}])
    assert bad["field"] == "clients[0].clientSecret" and "s3cret-value" not in str(bad)
    assert api_call(vtn.service.oadr_clients, [{**clients[0], "role": "admin"}])["field"] == "clients[0].role"
    vtn.restart()
    kept = {c.object_id: c.body for c in vtn.service.oadr_book.all(CLIENT)}
    assert kept == {c["clientId"]: c for c in clients}
    assert vtn.service.oadr_clients(clients[1:]) == {"clients": 1, "written": 0, "deleted": 1}
    vtn.restart()
    assert [c.object_id for c in vtn.service.oadr_book.all(CLIENT)] == ["ven-1"]
    assert [p["id"] for p in vtn.service.oadr_search("programs", BL, {})] == ["default"]   # not served as objects
