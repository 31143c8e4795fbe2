"""The OpenADR VEN agent (dr.oadr.<venId>) speaking OpenADR 3.1, across two platforms that meet only over HTTP.

VTN platform (site `<VDR_TEST_SITE>b`): dr.vtn and dr.web serving /openadr3/3.1.0 with a business-logic
client and a VEN client. Building platform (the session's `vplatform`): platform.driver with the demo home's
simulated devices, dr.ven.ven-demo and dr.oadr.ven-demo (webhook and polling), whose OpenADR venName is
`building-1`. The business logic creates an event (2 kW shed, 40 s) targeting `building-1`: the agent's command
reaches dr.ven on the building's bus, the metered reduction reaches 2 kW within the tolerance dr.ven holds,
every written point is back at its pre-event value after the event, and the building's reports reach the VTN
(its report search, and the event's metrics through dr.vtn). Then the fault: dr.web stops mid-event for 60 s;
the loads are restored at the event's end all the same, and once the VTN is back the agent enrols again
without a second VEN object or a second report for an event. The water heater's element is held off for the
module (as tests/integration/test_ven_load_control.py does) so the meter measures the VEN.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import gevent
import httpx
import pytest

from dr_common import topics
from dr_common.timeutil import to_iso
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, OadrVenRpc, VenRpc, device_all_topic
from dr_testing.platform import VPlatform
from tests.integration.test_ven_load_control import install_demo_building
from tests.integration.test_web_platform import _healthy, web_url
from tests.support.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VEN_CONFIG = json.loads((ROOT / "platform-config" / "sites" / "demo" / "ven.json").read_text())
VEN_ID = VEN_CONFIG["venId"]
VEN_IDENTITY = topics.ven_identity(VEN_ID)
OADR_IDENTITY = topics.oadr_ven_identity(VEN_ID)
VEN_NAME = "building-1"
BL = ("it-bl", "it-bl-secret-0001")
VEN = ("it-building", "it-building-secret-01")
DEVICES = ("ev_charger", "water_heater", "hvac", "panel", "battery", "meter")
METER = device_all_topic("demo/meter")
WRITABLE = ["demo/ev_charger/PowerLimitKw", "demo/water_heater/SetpointC", "demo/water_heater/ElementEnable",
            "demo/hvac/CoolingSetpointC", "demo/panel/LightingEnable", "demo/panel/KitchenEnable",
            "demo/panel/LaundryEnable", "demo/panel/FridgeEnable", "demo/battery/PowerSetpointKw"]


class Recorder:
    """Every message on a prefix with the monotonic time it arrived and its sender."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, peer, sender, bus, topic, headers, message) -> None:
        with self.lock:
            self.items.append((time.monotonic(), sender, topic, message))

    def on(self, topic: str, since: float = 0.0) -> list[tuple[float, str, Any]]:
        with self.lock:
            return [(t, s, m) for t, s, top, m in self.items if top == topic and t >= since]


class Bl:
    """The business-logic client of the VTN (plain HTTP, a token per call site)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.headers: dict[str, str] = {}
        self.login()

    def login(self) -> None:
        answer = httpx.post(self.base + "/auth/token", data={"grant_type": "client_credentials",
                                                             "client_id": BL[0], "client_secret": BL[1]})
        self.headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer = httpx.request(method, self.base + path, headers=self.headers, timeout=10, **kwargs)
        if answer.status_code == 401:
            self.login()
            answer = httpx.request(method, self.base + path, headers=self.headers, timeout=10, **kwargs)
        return answer


def writable(vp) -> dict[str, Any]:
    values, errors = vp.rpc(DRIVER_IDENTITY, DriverRpc.GET_MULTIPLE_POINTS, WRITABLE)
    assert errors == {}
    return values


@pytest.fixture(scope="module")
def sites(vplatform, figure):
    vp = vplatform
    vtn = VPlatform(os.environ.get("VDR_TEST_SITE", "pytest") + "b")
    port, hook_port = free_port(), free_port()
    t0 = time.monotonic()
    try:
        vtn.start()
        vtn.install_agent("vtn_dispatcher", topics.VTN_IDENTITY, tag="dr-vtn", config={
            "flushIntervalS": 0.5, "openadr3": {"callbackPolicy": {"allowedHosts": ["127.0.0.1"]}}})
        vtn.install_agent("web", topics.WEB_IDENTITY, tag="dr-web", config={
            "host": "127.0.0.1", "port": port, "api_token": "it-oadr-ven-token-01", "openadr3": {"clients": [
                {"clientId": BL[0], "clientSecret": BL[1], "role": "bl"},
                {"clientId": VEN[0], "clientSecret": VEN[1], "role": "ven", "venName": VEN_NAME}]}})
        vtn.wait_for(lambda: _healthy(vtn, topics.VTN_IDENTITY), timeout=30, what="dr.vtn healthy")
        base = web_url(vtn).rstrip("/") + "/openadr3/3.1.0"
        bl = Bl(base)
        program = bl("POST", "/programs", json={"programName": "summer"}).json()["id"]

        rec = Recorder()
        install_demo_building(vp, rec, VEN_CONFIG)
        vp.install_agent("oadr_ven", OADR_IDENTITY, config={
            "venId": VEN_ID, "programs": ["summer"], "reports": {"intervalS": 5},
            "vtn": {"baseUrl": base, "clientId": VEN[0], "clientSecret": VEN[1], "venName": VEN_NAME,
                    "pollS": 2, "notify": "webhook", "backoffMaxS": 4,
                    "webhook": {"host": "127.0.0.1", "port": hook_port}}})
        status = vp.wait_for(lambda: (st := vp.rpc(OADR_IDENTITY, OadrVenRpc.STATUS)) and st.get("linkUp") and
                             st["enrolment"].get("subscriptionID") and st, timeout=60,
                             what=f"{OADR_IDENTITY} enrolled with the VTN")
        assert status["link"]["notify"] == "webhook"
        figure("OpenADR 3.1 VEN: two platforms up, building enrolled", f"{time.monotonic() - t0:.0f} s")
        yield vp, vtn, rec, bl, program
    finally:
        for identity in (OADR_IDENTITY, VEN_IDENTITY):
            info = vp.agents().get(identity)
            if info is not None:
                vp.vctl("stop", info.uuid, timeout=60)
        for device in DEVICES:
            try:
                vp.rpc(DRIVER_IDENTITY, DriverRpc.REVERT_DEVICE, f"demo/{device}")
            except Exception:  # noqa: BLE001 - the driver may not be installed when set-up failed early
                pass
        try:
            vtn.stop()
        finally:
            if not os.environ.get("VDR_KEEP_TEST_SITE"):
                shutil.rmtree(vtn.plat.site_dir, ignore_errors=True)


def create_event(bl: Bl, program: str, start: datetime, seconds: int, kw: float) -> dict[str, Any]:
    answer = bl("POST", "/events", json={
        "programID": program, "eventName": f"shed {kw} kW", "targets": [VEN_NAME],
        "intervalPeriod": {"start": to_iso(start), "duration": f"PT{seconds}S"},
        "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT_RELATIVE", "values": [-kw]}]}],
        "reportDescriptors": [{"payloadType": "USAGE"}, {"payloadType": "BASELINE"},
                              {"payloadType": "DELTA_USAGE"}, {"payloadType": "OPERATING_STATE"}]})
    assert answer.status_code == 201, answer.text
    return answer.json()


def command_for(vp, rec: Recorder, event_id: str, since: float, timeout: float = 20) -> tuple[float, dict]:
    found = vp.wait_for(lambda: [(t, m) for t, s, m in rec.on(topics.bus_cmd(VEN_ID), since)
                                 if s == OADR_IDENTITY and m.get("eventId") == event_id], timeout=timeout,
                        step=0.02, what=f"dr.oadr's command for {event_id}")
    return found[0]


def wait_restored(vp, before: dict[str, Any], end: datetime) -> None:
    gevent.sleep(max(0.0, (end - datetime.now(timezone.utc)).total_seconds()))
    vp.wait_for(lambda: vp.rpc(VEN_IDENTITY, VenRpc.STATUS)["event"] is None, timeout=30,
                what="dr.ven's event over")
    after = vp.wait_for(lambda: (got := writable(vp)) and all(got[p] == pytest.approx(v) for p, v in before.items())
                        and got, timeout=VEN_CONFIG["restoreStaggerS"] * 12 + 10, what="every point restored")
    for point, value in before.items():
        assert after[point] == pytest.approx(value), point


def launch(sites, lead_s: int, seconds: int, kw: float) -> tuple[dict, datetime, datetime, float, dict]:
    """The writable points before, the event's start and end, when it was sent, the event."""
    vp, _, _, bl, program = sites
    before = writable(vp)
    start = (datetime.now(timezone.utc) + timedelta(seconds=lead_s)).replace(microsecond=0)
    t_sent = time.monotonic()
    return before, start, start + timedelta(seconds=seconds), t_sent, create_event(bl, program, start, seconds, kw)


def test_an_openadr_event_sheds_2_kw_restores_on_time_and_reports_reach_the_vtn(sites, figure):
    vp, vtn, rec, bl, program = sites
    before, start, end, t_sent, event = launch(sites, 4, 40, 2.0)
    t_cmd, command = command_for(vp, rec, event["id"], t_sent)
    figure("OpenADR 3.1 event created at the VTN -> dr.ven command on the building's bus (webhook)",
           f"{(t_cmd - t_sent) * 1000:.0f} ms")
    assert command["op"] == "event" and command["requestedReductionKw"] == pytest.approx(2.0)
    assert command["startTime"].startswith(start.isoformat()[:19])
    assert command["until"].startswith(end.isoformat()[:19])
    acks = vp.wait_for(lambda: [m for _, _, m in rec.on(topics.bus_ack(VEN_ID), t_sent)
                                if m.get("correlationId") == command["correlationId"]], timeout=10,
                       what="dr.ven's ack")
    assert acks[0]["ok"] is True, acks[0]

    gevent.sleep(max(0.0, (start - datetime.now(timezone.utc)).total_seconds()))
    t_start = time.monotonic()
    status = vp.wait_for(lambda: (st := vp.rpc(VEN_IDENTITY, VenRpc.STATUS)) and st["event"] and
                         st["event"]["baselineKw"] is not None and st, timeout=15, what="dr.ven's event baseline")
    baseline = status["event"]["baselineKw"]
    meters = vp.wait_for(lambda: len(got := rec.on(METER, t_start)) >= 6 and got, timeout=45,
                         what="six meter publishes during the event")
    reductions = [baseline - m[0]["PowerKw"] for _, _, m in meters[:6]]
    figure("OpenADR 3.1 event: metered reduction (kW, first scrapes then steady)",
           ", ".join(f"{r:.3f}" for r in reductions))
    for r in reductions[2:]:
        assert r == pytest.approx(2.0, rel=0.05)

    reports = vtn.wait_for(lambda: (got := bl("GET", "/reports", params={"eventID": event["id"]}).json()) and
                           len(got[0]["resources"][0]["intervals"]) >= 3 and got, timeout=40,
                           what="three report intervals at the VTN")
    assert len(reports) == 1 and reports[0]["clientName"] == VEN_NAME
    last = {p["type"]: p["values"] for p in reports[0]["resources"][0]["intervals"][-1]["payloads"]}
    assert set(last) == {"USAGE", "BASELINE", "DELTA_USAGE", "OPERATING_STATE"}
    assert last["OPERATING_STATE"] == ["RUNNING_CURTAILED"]
    seconds = float(reports[0]["resources"][0]["intervals"][-1]["intervalPeriod"]["duration"][2:-1])
    shed_kw = last["DELTA_USAGE"][0] * 3600 / seconds
    assert shed_kw == pytest.approx(2.0, rel=0.15), last
    metrics = vtn.rpc(topics.VTN_IDENTITY, topics.VtnRpc.EVENT_METRICS, event["id"])
    figure("OpenADR 3.1 event: dr.vtn metrics from the building's reports", json.dumps(
        {k: metrics.get(k) for k in ("currentReductionKw", "requestedReductionKw") if k in metrics}))

    wait_restored(vp, before, end)
    oadr = vp.rpc(OADR_IDENTITY, OadrVenRpc.STATUS)
    assert oadr["counts"]["commands"] >= 1 and oadr["rejects"]["total"] == 0, oadr
    assert oadr["handoff"]["items"] >= 1
    figure("OpenADR 3.1 link -> agent loop hand-off (p50, p99, max)",
           f"{oadr['handoff']['p50Ms']} ms, {oadr['handoff']['p99Ms']} ms, {oadr['handoff']['maxMs']} ms")


def test_vtn_down_mid_event_loads_restored_on_time_and_no_duplicates_after(sites, figure):
    vp, vtn, rec, bl, program = sites
    before, start, end, t_sent, event = launch(sites, 3, 30, 1.5)
    command_for(vp, rec, event["id"], t_sent)
    gevent.sleep(max(0.0, (start - datetime.now(timezone.utc)).total_seconds()) + 6)
    web = vtn.agents()[topics.WEB_IDENTITY]
    vtn.vctl("stop", web.uuid, timeout=60)
    t_down = time.monotonic()
    vp.wait_for(lambda: not vp.rpc(OADR_IDENTITY, OadrVenRpc.STATUS)["linkUp"], timeout=20,
                what="dr.oadr sees the VTN down")
    wait_restored(vp, before, end)       # dr.ven's own timer: the VTN is still down
    restored_after_end = (datetime.now(timezone.utc) - end).total_seconds()
    figure("OpenADR 3.1 VTN down 60 s from mid-event: every point restored, s after the event's end",
           f"{restored_after_end:.1f}")
    gevent.sleep(max(0.0, 60 - (time.monotonic() - t_down)))
    vtn.vctl("start", web.uuid, timeout=60)
    web_url(vtn)
    status = vp.wait_for(lambda: (st := vp.rpc(OADR_IDENTITY, OadrVenRpc.STATUS)) and st["linkUp"] and
                         st["pendingReports"] == 0 and st, timeout=60, what="dr.oadr enrolled again")
    assert status["link"]["enrolments"] >= 2
    vens = bl("GET", "/vens", params={"venName": VEN_NAME}).json()
    assert len(vens) == 1, vens
    assert len(bl("GET", "/reports", params={"eventID": event["id"]}).json()) == 1
    subscriptions = bl("GET", "/subscriptions").json()
    assert len(subscriptions) == 1 and subscriptions[0]["clientName"] == VEN_NAME, subscriptions
    assert not [m for _, s, m in rec.on(topics.bus_cmd(VEN_ID), t_down) if s == OADR_IDENTITY
                and m.get("op") == "event"], "no command repeated after the VTN came back"
