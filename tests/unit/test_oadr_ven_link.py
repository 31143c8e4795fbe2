"""dr.oadr's OpenADR 3.1 link and core against our VTN in-process over real HTTP (dr.web's blueprint and the
real dr.vtn service, as tests/unit/test_oadr3_api.py runs them): enrolment, an event -> a dr.ven command,
telemetry -> a report the VTN stores, a restart that neither repeats a command nor duplicates the VEN or the
report, a deletion -> a restore, the webhook receiver, and a VTN that is unreachable for a while."""

from __future__ import annotations

import json
import queue
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from dr_common.config import ConfigError
from dr_common.timeutil import utcnow
from dr_tools import webharness
from dr_oadr_ven.config import parse_config
from dr_oadr_ven.core import VenCore
from dr_oadr_ven.oadr31 import Oadr31Link
from dr_oadr_ven.state import StateFile
from tests.unit.test_oadr3_api import BL, VEN1, Server

pytest.importorskip("openadr3")


class Inbox:
    """The hand-off as the link sees it (`put` from its threads), drained by the test's thread."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, item: Any) -> None:
        self.items.put(item)


class Ven:
    """One dr.oadr (link + core) on a state file, its published commands in `published`."""

    def __init__(self, config: dict, state_path, enrolment_hint: bool = True) -> None:
        self.config = parse_config(config)
        self.state = StateFile(state_path).load()
        self.published: list[dict] = []
        self.inbox = Inbox()
        self.link = Oadr31Link(self.config, dict(self.state.section("enrolment")))
        self.core = VenCore(self.config, self.state, self.published.append, self.link)
        self.link.start(self.inbox)

    def run(self, seconds: float, until=lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.core.on_item(self.inbox.items.get(timeout=0.05))
            except queue.Empty:
                pass
            self.core.tick()
            if until():
                return

    def telemetry(self, used: float, baseline: float, **extra: Any) -> None:
        self.core.on_telemetry({"venId": "ven-1", "ts": utcnow().isoformat(), "usedPowerKw": used,
                                "baselinePowerKw": baseline, "shedPowerKw": baseline - used,
                                "requestedReductionKw": 2.0, **extra})

    def stop(self) -> None:
        self.link.stop()


@pytest.fixture
def server(tmp_path, monkeypatch):
    real = webharness.parse_config
    policy = {"openadr3": {"callbackPolicy": {"allowedHosts": ["127.0.0.1"]}}}
    try:  # a VTN with a callback policy allows this test's loopback webhook
        real(policy)
        monkeypatch.setattr(webharness, "parse_config", lambda raw: real({**raw, **policy}))
    except ConfigError:
        pass
    srv = Server(tmp_path)
    yield srv
    srv.close()


def bl_headers(server: Server) -> dict[str, str]:
    token = httpx.post(server.base + "/auth/token", data={"grant_type": "client_credentials", "client_id": BL[0],
                                                          "client_secret": BL[1]}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def config(server: Server, tmp_path, **extra: Any) -> dict:
    return {"venId": "ven-1", "vtn": {"baseUrl": server.base, "clientId": VEN1[0], "clientSecret": VEN1[1],
                                      "pollS": 0.3, **extra.pop("vtn", {})},
            "reports": {"intervalS": 1, "minIntervalS": 1}, "statePath": str(tmp_path / "state.json"), **extra}


def create_event(server: Server, headers: dict, kw: float = 2.0, program: str = "summer") -> tuple[str, str]:
    programs = httpx.get(server.base + "/programs", headers=headers).json()
    found = [p["id"] for p in programs if p["programName"] == program]
    program_id = found[0] if found else httpx.post(server.base + "/programs", headers=headers,
                                                   json={"programName": program}).json()["id"]
    body = {"programID": program_id, "eventName": "shed", "targets": ["ven-1"],
            "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-kw]}]}]}
    answer = httpx.post(server.base + "/events", headers=headers, json=body)
    assert answer.status_code == 201, answer.text
    return program_id, answer.json()["id"]


def test_event_to_command_report_back_restart_and_delete(server, tmp_path):
    headers = bl_headers(server)
    _, event_id = create_event(server, headers)
    ven = Ven(config(server, tmp_path), tmp_path / "state.json")
    try:
        ven.run(10, until=lambda: ven.published)
        assert len(ven.published) == 1
        command = ven.published[0]
        assert command["op"] == "event" and command["eventId"] == event_id
        assert command["requestedReductionKw"] == 2.0 and command["venId"] == "ven-1"
        assert ven.core.enrolment["venID"] and ven.core.link_up
        vens = httpx.get(server.base + "/vens", headers=headers, params={"venName": "ven-1"}).json()
        assert [v["venName"] for v in vens] == ["ven-1"]
        resources = httpx.get(server.base + "/resources", headers=headers).json()
        assert [(r["resourceName"], r["venID"]) for r in resources] == [("site", vens[0]["id"])]

        for _ in range(3):  # three 1 s report intervals of telemetry: 5 kW used against a 7 kW baseline
            ven.telemetry(5.0, 7.0)
            ven.run(1.0)
        ven.run(8, until=lambda: ven.core.counts["reportsSent"] >= 1 and not ven.core.pending)
        reports = httpx.get(server.base + "/reports", headers=headers, params={"eventID": event_id}).json()
        assert len(reports) == 1 and reports[0]["clientName"] == "ven-1"
        intervals = reports[0]["resources"][0]["intervals"]
        assert reports[0]["resources"][0]["resourceName"] == "AGGREGATED_REPORT" and intervals
        payloads = {p["type"]: p["values"] for p in intervals[-1]["payloads"]}
        assert set(payloads) == {"USAGE", "BASELINE", "DELTA_USAGE", "OPERATING_STATE"}
        assert payloads["BASELINE"] == [7.0] and payloads["OPERATING_STATE"] == ["RUNNING_CURTAILED"]
        seconds = float(intervals[-1]["intervalPeriod"]["duration"][2:-1])
        assert payloads["USAGE"][0] == pytest.approx(5.0 * seconds / 3600, rel=1e-3)
        assert payloads["DELTA_USAGE"][0] == pytest.approx(2.0 * seconds / 3600, rel=1e-3)
    finally:
        ven.stop()

    again = Ven(config(server, tmp_path), tmp_path / "state.json")
    try:
        again.run(3, until=lambda: again.link.stats["polls"] >= 2)
        assert again.link.stats["polls"] >= 2 and again.published == []  # nothing repeated
        again.telemetry(4.0, 7.0, optOut=True)

        def opted_out_sent() -> bool:
            built = again.core.builder.reports[event_id]["intervals"]
            return bool(built) and built[-1]["payloads"][-1]["values"] == ["RUNNING_OPTED_OUT"] and \
                not again.core.pending
        again.run(10, until=opted_out_sent)
        reports = httpx.get(server.base + "/reports", headers=headers, params={"eventID": event_id}).json()
        assert len(reports) == 1  # the same report object, updated
        last = {p["type"]: p["values"] for p in reports[0]["resources"][0]["intervals"][-1]["payloads"]}
        assert last["OPERATING_STATE"] == ["RUNNING_OPTED_OUT"]
        vens = httpx.get(server.base + "/vens", headers=headers, params={"venName": "ven-1"}).json()
        assert len(vens) == 1  # re-enrolment found its VEN

        assert httpx.delete(server.base + f"/events/{event_id}", headers=headers).status_code == 200
        again.run(5, until=lambda: again.published)
        assert [(c["op"], c["eventId"]) for c in again.published] == [("restore", event_id)]
    finally:
        again.stop()


def test_events_of_programs_not_enrolled_are_ignored(server, tmp_path):
    headers = bl_headers(server)
    create_event(server, headers, program="winter")
    ven = Ven(config(server, tmp_path, programs=["summer"]), tmp_path / "state.json")
    try:
        ven.run(3, until=lambda: ven.core.counts["ignoredPrograms"] > 0)
        assert ven.core.counts["ignoredPrograms"] > 0 and ven.published == []
        _, event_id = create_event(server, headers, kw=1.5, program="summer")
        ven.run(5, until=lambda: ven.published)
        assert [(c["eventId"], c["requestedReductionKw"]) for c in ven.published] == [(event_id, 1.5)]
    finally:
        ven.stop()


def test_webhook_subscription_and_notification(server, tmp_path):
    headers = bl_headers(server)
    ven = Ven(config(server, tmp_path, vtn={"notify": "webhook", "pollS": 3600}), tmp_path / "state.json")
    try:
        ven.run(5, until=lambda: ven.core.enrolment.get("subscriptionID"))
        subs = httpx.get(server.base + "/subscriptions", headers=headers).json()
        url = ven.link.callback_url
        assert [s["objectOperations"][0]["callbackUrl"] for s in subs] == [url]
        obj = {"id": "hook-ev", "programID": "p", "objectType": "EVENT",
               "modificationDateTime": utcnow().isoformat(),
               "intervalPeriod": {"start": (utcnow() + timedelta(minutes=1)).isoformat(), "duration": "PT5M"},
               "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-1.0]}]}]}
        note = json.dumps({"objectType": "EVENT", "operation": "CREATE", "object": obj})
        assert httpx.post(url, content=note, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert ven.link.status()["webhook"]["rejects"]["byReason"] == {"token": 1}
        token = ven.state.section("enrolment")["callbackToken"]
        answer = httpx.post(url, content=note, headers={"Authorization": f"Bearer {token}",
                                                        "Content-Type": "application/json"})
        assert answer.status_code == 200
        ven.run(3, until=lambda: ven.published)
        assert [(c["eventId"], c["requestedReductionKw"]) for c in ven.published] == [("hook-ev", 1.0)]
    finally:
        ven.stop()
    again = Ven(config(server, tmp_path, vtn={"notify": "webhook", "pollS": 3600}), tmp_path / "state.json")
    try:  # a restart keeps its subscription (updated, not a second one)
        again.run(5, until=lambda: again.core.enrolment.get("subscriptionID"))
        assert len(httpx.get(server.base + "/subscriptions", headers=headers).json()) == 1
    finally:
        again.stop()


def test_unreachable_vtn_backs_off_then_enrols(tmp_path):
    cfg = {"venId": "ven-1", "vtn": {"baseUrl": "http://127.0.0.1:9/openadr3/3.1.0", "clientId": "c",
                                     "clientSecret": "secret-change-me", "timeoutS": 0.5, "backoffMaxS": 2},
           "statePath": str(tmp_path / "s.json")}
    ven = Ven(cfg, tmp_path / "s.json")
    try:
        ven.run(4, until=lambda: ven.link.stats["pollErrors"] >= 3)
        assert ven.link.stats["pollErrors"] >= 2 and not ven.core.link_up
        assert "unreachable" in (ven.core.link_error or "")
        assert ven.link.stats["backoffS"] >= 2
    finally:
        ven.stop()


def test_mqtt_notifier_delivers_the_event_without_polling(tmp_path, monkeypatch):
    from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier
    from tests.support.services import require_mosquitto

    require_mosquitto()
    prefix = f"pytest-oadr-ven-{uuid.uuid4().hex[:8]}/OpenADR/3.1.0"
    real_parse, real_service = webharness.parse_config, webharness.VtnService
    extra = {"openadr3": {"mqtt": {"host": "127.0.0.1", "port": 1883, "topicPrefix": prefix,
                                   "clientId": f"pytest-vtn-{uuid.uuid4().hex[:8]}"}}}
    monkeypatch.setattr(webharness, "parse_config", lambda raw: real_parse({**raw, **extra}))
    monkeypatch.setattr(webharness, "VtnService", lambda store, clock, sender, config, rng=None: real_service(
        store, clock, sender, config, rng=rng, mqtt=MqttNotifier(config.openadr3.mqtt)))
    srv = Server(tmp_path)
    ven = Ven(config(srv, tmp_path, vtn={"notify": "mqtt", "pollS": 3600}), tmp_path / "state.json")
    try:
        ven.run(10, until=lambda: (ven.link.status().get("mqtt") or {}).get("connected"))
        status = ven.link.status()
        assert status["notify"] == "mqtt" and status["mqtt"]["topic"].startswith(prefix + "/vens/")
        polls = status["polls"]
        _, event_id = create_event(srv, bl_headers(srv), kw=1.25)
        t0 = time.monotonic()
        ven.run(10, until=lambda: ven.published)
        assert [(c["eventId"], c["requestedReductionKw"]) for c in ven.published] == [(event_id, 1.25)]
        assert ven.link.status()["mqtt"]["received"] >= 1 and time.monotonic() - t0 < 5
        assert ven.link.stats["notifications"] >= 1
        assert ven.link.stats["polls"] >= polls  # the notification asks for a poll too (reconciliation)
    finally:
        ven.stop()
        srv.close()


def test_client_refreshes_its_token_before_expiry_and_after_a_401(server):
    from dr_oadr_ven.client31 import Oadr31Client

    now = [0.0]
    client = Oadr31Client(server.base, VEN1[0], VEN1[1], refresh_margin_s=60, clock=lambda: now[0])
    try:
        client.programs()
        assert client.tokens_fetched == 1 and client.token_url == server.base + "/auth/token"
        now[0] = 3600 - 61  # the VTN's tokens live 3600 s: still outside the margin
        client.programs()
        assert client.tokens_fetched == 1
        now[0] = 3600 - 59  # within the margin: renewed before it expires
        client.programs()
        assert client.tokens_fetched == 2
        client._token = "revoked-or-unknown"  # the VTN forgot it (e.g. dr.web restarted): a 401, then a new one
        client.programs()
        assert client.tokens_fetched == 3
    finally:
        client.close()
