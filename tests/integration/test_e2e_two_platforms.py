"""The seeds' ten steps across two platforms that meet only at the local Mosquitto.

A VTN platform (`aggregator` site: dr.vtn, dr.mqtt, platform.historian, dr.web) and a VEN platform (`home`
site: dr.ven.ven-demo, platform.driver with the simulated demo devices, its own dr.mqtt and historian).
Register the VEN over HTTP; create an event over HTTP; the command reaches the VEN; the ack is recorded;
telemetry shows the event id and the reduction; metrics report it; at the end loads are restored and
telemetry returns to baseline; the M&V report for the event is produced.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest

from dr_common import topics
from dr_common.payloads import Ack, Command, Telemetry
from dr_common.timeutil import parse_time, to_iso, utcnow
from tests.integration.conftest import VPlatform
from tests.support.services import free_port, require_mosquitto

pytestmark = pytest.mark.integration

VEN_ID = "ven-demo"
REQUEST_KW = 2.0
EVENT_S = 60  # M&V windows are whole minutes (rounded): 60 s always gives one
SHED_POINTS = [("demo/ev_charger", "PowerLimitKw"), ("demo/water_heater", "ElementEnable"),
               ("demo/water_heater", "SetpointC"), ("demo/hvac", "CoolingSetpointC"),
               ("demo/panel", "LaundryEnable"), ("demo/panel", "KitchenEnable"), ("demo/panel", "LightingEnable"),
               ("demo/battery", "PowerSetpointKw")]


class Http:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body=None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


class Monitor:
    """Everything on the broker for the VEN, with the wall-clock time it was received."""

    def __init__(self) -> None:
        self.inbox: "queue.SimpleQueue[tuple[float, str, dict]]" = queue.SimpleQueue()
        self.seen: list[tuple[float, str, dict]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"e2e-monitor-{uuid.uuid4().hex[:6]}")
        self.client.on_message = lambda _c, _u, m: self.inbox.put((time.time(), m.topic, json.loads(m.payload)))
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        for template in (topics.MQTT_CMD, topics.MQTT_ACK, topics.MQTT_TELEMETRY, topics.MQTT_STATUS):
            self.client.subscribe(topics.mqtt_topic(template, VEN_ID), qos=1)

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        for item in self.seen:
            if predicate(*item):
                return item
        while time.monotonic() < deadline:
            try:
                item = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(item)
            if predicate(*item):
                return item
        raise AssertionError(f"{what} not seen on the broker within {timeout:.0f} s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def sites(figure):
    require_mosquitto()
    tag = uuid.uuid4().hex[:6]
    agg, home = VPlatform("pytest-agg"), VPlatform("pytest-home")
    port = free_port()
    token = f"e2e-token-{tag}"
    t0 = time.monotonic()
    try:
        agg.start()
        home.start()
        agg.install_site("aggregator", overrides={
            "dr.mqtt": {"broker": {"client_id": f"e2e-agg-{tag}"}},
            "dr.web": {"port": port, "api_token": token}})
        home.install_site("home", overrides={"dr.mqtt": {"broker": {"client_id": f"e2e-home-{tag}"}}})
        figure("e2e: two platforms up with every agent", f"{time.monotonic() - t0:.0f} s")
        yield agg, home, Http(f"http://127.0.0.1:{port}", token)
    finally:
        for plat in (home, agg):
            try:
                plat.stop()
            finally:
                if not os.environ.get("VDR_KEEP_TEST_SITE"):
                    subprocess.run(["rm", "-rf", str(plat.plat.site_dir)], check=False)


def test_ten_steps_across_two_platforms(sites, figure):
    agg, home, http = sites
    monitor = Monitor()
    try:
        run_flow(agg, home, http, monitor, figure)
    finally:
        monitor.close()


def run_flow(agg: VPlatform, home: VPlatform, http: Http, monitor: Monitor, figure) -> None:
    # 1. register the VEN over HTTP (and a write without the token is refused)
    body = {"venId": VEN_ID, "name": "Demo home", "site": "home", "transport": "mqtt", "maxShedKw": 10}
    assert http("POST", "/api/vens/", body, auth=False)[0] == 401
    status, ven = http("POST", "/api/vens/", body)
    assert status in (200, 201), ven
    assert ven["venId"] == VEN_ID and ven["transport"] == "mqtt"

    # 2-3. the VEN platform is running and its telemetry flows over the broker to the VTN
    _, _, first = monitor.wait(lambda t, topic, p: topic == f"ven/telemetry/{VEN_ID}", 30, "VEN telemetry")
    pre_event_kw = Telemetry.from_payload(first).used_power_kw
    online = agg.wait_for(lambda: next((v for v in http("GET", "/api/vens/")[1]
                                        if isinstance(v, dict) and v.get("venId") == VEN_ID and v.get("online")), None),
                          timeout=30, what="dr.vtn sees the VEN online")
    assert online["usedPowerKw"] is not None
    before = {(path, point): home.rpc("platform.driver", "get_point", path, point) for path, point in SHED_POINTS}

    # 4. create an event over HTTP, starting in 6 s
    start = utcnow() + timedelta(seconds=6)
    end = start + timedelta(seconds=EVENT_S)
    status, event = http("POST", "/api/events/", {"status": "scheduled", "startTime": to_iso(start),
                                                  "endTime": to_iso(end), "requestedReductionKw": REQUEST_KW,
                                                  "venIds": [VEN_ID]})
    assert status == 201, event
    event_id = event["eventId"]

    # 5. the command reaches the VEN at the start instant
    t_cmd, _, cmd_raw = monitor.wait(lambda t, topic, p: topic == f"ven/cmd/{VEN_ID}" and p.get("eventId") == event_id,
                                     30, "the event command")
    command = Command.from_payload(cmd_raw)
    assert command.op == "event" and command.requested_reduction_kw == pytest.approx(REQUEST_KW)
    start_to_cmd_ms = (t_cmd - start.timestamp()) * 1000

    # 6. the VEN acknowledges, and the VTN records the ack
    t_ack, _, ack_raw = monitor.wait(lambda t, topic, p: topic == f"ven/ack/{VEN_ID}"
                                     and p.get("correlationId") == command.correlation_id, 10, "the ack")
    ack = Ack.from_payload(ack_raw)
    assert ack.ok and ack.accepted_reduce_kw == pytest.approx(REQUEST_KW, rel=0.05)
    assert ack.until == end.replace(microsecond=(end.microsecond // 1000) * 1000)

    # 7-8. telemetry carries the event id and the metered reduction reaches the request (within 5 %)
    t_shed, _, shed_raw = monitor.wait(
        lambda t, topic, p: topic == f"ven/telemetry/{VEN_ID}" and p.get("eventId") == event_id
        and abs(float(p.get("shedPowerKw", 0)) - REQUEST_KW) <= 0.05 * REQUEST_KW, 30, "a metered reduction within 5 %")
    shed = Telemetry.from_payload(shed_raw)
    assert shed.requested_reduction_kw == pytest.approx(REQUEST_KW)
    assert shed.baseline_power_kw is not None and shed.used_power_kw < shed.baseline_power_kw - 0.9 * REQUEST_KW

    # 10 (during). metrics report the VEN responding, its response time and the reduction
    seen_metrics: list[dict] = []

    def metrics_ready():
        m = http("GET", f"/api/events/{event_id}/metrics")[1]
        seen_metrics.append(m)
        return m.get("vensResponding") == 1 and abs(m.get("currentReductionKw", 0) - REQUEST_KW) <= 0.05 * REQUEST_KW and m

    try:
        metrics = agg.wait_for(metrics_ready, timeout=15, what="event metrics with the reduction")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last metrics: {seen_metrics[-1] if seen_metrics else None}") from None
    assert metrics["avgResponseMs"] > 0
    ven_metrics = metrics["vens"][0]
    assert ven_metrics["venId"] == VEN_ID and ven_metrics["state"] == "acked"

    # 9. at the end the VTN restores, the VEN acks, loads come back and telemetry returns to baseline
    _, _, restore_raw = monitor.wait(lambda t, topic, p: topic == f"ven/cmd/{VEN_ID}" and p.get("op") == "restore"
                                     and p.get("eventId") == event_id, EVENT_S + 20, "the restore command")
    monitor.wait(lambda t, topic, p: topic == f"ven/ack/{VEN_ID}"
                 and p.get("correlationId") == restore_raw["correlationId"] and p.get("ok"), 10, "the restore ack")
    after = agg.wait_for(lambda: all(home.rpc("platform.driver", "get_point", path, point) == value
                                     for (path, point), value in before.items()) and True,
                         timeout=30, what="every shed point back at its pre-event value")
    assert after
    baseline = shed.baseline_power_kw
    monitor.wait(lambda t, topic, p: topic == f"ven/telemetry/{VEN_ID}" and p.get("eventId") is None
                 and t > t_cmd and abs(float(p["usedPowerKw"]) - baseline) <= 0.05 * baseline, 40,
                 "telemetry back at the baseline")
    status, final = http("GET", f"/api/events/{event_id}")
    assert status == 200 and final["status"] == "completed"

    # M&V: the event's performance through the API and the report script on the VTN historian
    answers: list = []

    def performance():
        answers.append(http("GET", f"/api/events/{event_id}/performance"))
        status, body = answers[-1]
        return status == 200 and VEN_ID in body.get("vens", {}) and body

    try:
        perf = agg.wait_for(performance, timeout=30, what="event performance from the historian")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last answer {str(answers[-1])[:1500] if answers else None}") from None
    status, missing = http("GET", "/api/events/evt-unknown/performance")
    assert status == 404 and missing["field"] == "eventId", missing
    reported = perf["vens"][VEN_ID]["methods"]["ven-reported"]
    # M&V works on whole minutes and the meter shows the shed some seconds after the command, so over this
    # short event the average reduction is a fraction of the request: a real, positive, bounded figure
    assert 0.1 * REQUEST_KW < reported["avgReductionKw"] <= 1.05 * REQUEST_KW, reported
    assert reported["peakReductionKw"] >= reported["avgReductionKw"] - 1e-9
    assert reported["percentOfRequested"] == pytest.approx(100 * reported["avgReductionKw"] / REQUEST_KW, rel=1e-3)
    db = agg.state_dir / "historian.sqlite"
    png = agg.state_dir / f"{event_id}.png"
    report = subprocess.run([sys.executable, str(agg.repo / "scripts" / "mv_report.py"), event_id, "--db", str(db),
                             "--method", "ven-reported", "--png", str(png)], capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert VEN_ID in report.stdout and png.exists() and png.stat().st_size > 1000

    cmd_to_ack_ms = (t_ack - t_cmd) * 1000
    cmd_to_shed_s = t_shed - t_cmd
    figure("e2e: event start -> command at VEN", f"{start_to_cmd_ms:.0f} ms")
    figure("e2e: command -> ack at the VTN broker", f"{cmd_to_ack_ms:.0f} ms (VTN recorded "
           f"{metrics['avgResponseMs']:.0f} ms)")
    figure("e2e: command -> metered reduction within 5 %", f"{cmd_to_shed_s:.1f} s (pre-event site {pre_event_kw:.2f} kW)")
