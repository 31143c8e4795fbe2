"""The OpenADR VEN agent (dr.oadr.<venId>) speaking OpenADR 2.0b, on a real platform with the demo site's
simulated devices behind platform.driver and dr.ven.<venId>, against an independent 2.0b VTN: openleadr's
`OpenADRServer`, started by the test in a thread of this process on a free port (tests/unit/test_oadr_ven_20b).

The VTN sends a LOAD_DISPATCH event (2 kW shed, 40 s): the agent opts in, dr.ven sheds through the driver, the
metered reduction reaches 2 kW within the tolerance dr.ven holds, every point is back at its pre-event value
when the event ends, and the VTN receives TELEMETRY_USAGE reports carrying dr.ven's own telemetry. The water
heater's element is held off for the module (as tests/integration/test_ven_load_control.py does) so the meter
measures the VEN rather than a thermostat switching mid-event.
"""

from __future__ import annotations

import json
import queue
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import gevent
import pytest

from dr_common import topics
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, OadrVenRpc, VenRpc
from tests.integration.test_ven_load_control import DEVICES, METER, Recorder, install_demo_building, writable
from tests.unit.test_oadr_ven_20b import OpenleadrVtn, make_event, signal

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")]

ROOT = Path(__file__).resolve().parents[2]
VEN_CONFIG = json.loads((ROOT / "platform-config" / "sites" / "demo" / "ven.json").read_text())
VEN_ID = VEN_CONFIG["venId"]
VEN_IDENTITY = topics.ven_identity(VEN_ID)
OADR_IDENTITY = topics.oadr_ven_identity(VEN_ID)
VTN_VEN_ID = "vtn-side-ven-1"        # the venID the 2.0b VTN assigns at registration


def drain(q: queue.Queue) -> list[Any]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


@pytest.fixture(scope="module")
def site(vplatform):
    vp = vplatform
    with OpenleadrVtn(ven_id=VTN_VEN_ID, poll_s=1, report_s=2) as vtn:
        rec = Recorder()
        install_demo_building(vp, rec, VEN_CONFIG)
        oadr_config = {"venId": VEN_ID, "vtn": {"protocol": "oadr20b"},
                       "oadr20b": {"venName": "demo-building", "vtnUrl": vtn.url, "reportMinPeriodS": 1}}
        vp.install_agent("oadr_ven", OADR_IDENTITY, config=oadr_config)
        try:
            assert vtn.registrations.get(timeout=60) == "demo-building"
            vp.wait_for(lambda: (st := vp.rpc(OADR_IDENTITY, OadrVenRpc.STATUS)) and st["link"]["registered"]
                        and st, timeout=30, what=f"{OADR_IDENTITY} registered with the 2.0b VTN")
            yield vp, rec, vtn
        finally:
            for identity in (OADR_IDENTITY, VEN_IDENTITY):
                info = vp.agents().get(identity)
                if info is not None:
                    vp.vctl("stop", info.uuid, timeout=60)
            for device in DEVICES:
                vp.rpc(DRIVER_IDENTITY, DriverRpc.REVERT_DEVICE, f"demo/{device}")


def test_a_2_0b_event_sheds_2_kw_restores_on_time_and_reports_telemetry_usage(site, figure):
    vp, rec, vtn = site
    before = writable(vp)
    drain(vtn.reports)
    start = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    end = start + timedelta(seconds=40)
    t_sent = time.monotonic()
    vtn.add_event(make_event("ev-20b-1", [signal("LOAD_DISPATCH", "delta", start, [-2.0], minutes=40 / 60)],
                             start=start, market_context="oadr://demo-program", ven_id=VTN_VEN_ID))
    assert vtn.opts.get(timeout=15) == ("ev-20b-1", "optIn")
    commands = vp.wait_for(lambda: [(t, m) for t, m in rec.on(topics.bus_cmd(VEN_ID), t_sent)
                                    if m.get("eventId") == "ev-20b-1"], timeout=15,
                           what="dr.ven's command for the 2.0b event")
    t_cmd, command = commands[0]
    figure("OpenADR 2.0b event queued at the VTN -> dr.ven command on the bus (1 s polling)",
           f"{(t_cmd - t_sent) * 1000:.0f} ms")
    assert command["op"] == "event" and command["requestedReductionKw"] == pytest.approx(2.0)
    assert command["until"].startswith(end.isoformat()[:19])
    acks = vp.wait_for(lambda: [m for _, m in rec.on(topics.bus_ack(VEN_ID), t_sent)
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
    reductions = [baseline - m[0]["PowerKw"] for _, m in meters[:6]]
    figure("OpenADR 2.0b event: metered reduction (kW, first scrapes then steady)",
           ", ".join(f"{r:.3f}" for r in reductions))
    for r in reductions[2:]:
        assert r == pytest.approx(2.0, rel=0.05)

    wait_s = (end - datetime.now(timezone.utc)).total_seconds() + VEN_CONFIG["restoreStaggerS"] * 2 + 2.0
    gevent.sleep(max(0.0, wait_s))
    after = writable(vp)
    for point, value in before.items():
        assert after[point] == pytest.approx(value), point
    assert vp.rpc(VEN_IDENTITY, VenRpc.STATUS)["event"] is None

    telemetry = [m for _, m in rec.on(topics.bus_telemetry(VEN_ID))]
    used = {round(m["usedPowerKw"], 6) for m in telemetry}
    baselines = {round(m["baselinePowerKw"], 6) for m in telemetry if m.get("baselinePowerKw") is not None}
    reports = drain(vtn.reports)
    power = [v for r_id, _, v in reports if r_id == "power"]
    assert len(power) >= 10, reports
    assert {round(v, 6) for v in power} <= used, (power, used)   # dr.ven's own telemetry, as published
    assert any(round(v, 6) in baselines for r_id, _, v in reports if r_id == "baseline")
    oadr = vp.rpc(OADR_IDENTITY, OadrVenRpc.STATUS)
    link = oadr["link"]
    assert link["venId"] == VTN_VEN_ID and link["counts"]["optIn"] == 1 and link["counts"]["reportsSent"] >= 10
    assert link["handoff"]["count"] >= 1
    assert vp.rpc(OADR_IDENTITY, OadrVenRpc.HEALTH)["status"] == "GOOD"
    figure("OpenADR 2.0b link -> agent loop hand-off (last, max)",
           f"{link['handoff']['lastMs']} ms, {link['handoff']['maxMs']} ms")


def test_the_vtn_gone_mid_event_loads_restore_on_time_and_a_restart_registers_as_the_same_ven(site):
    vp, rec, vtn = site
    before = writable(vp)
    start = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    end = start + timedelta(seconds=40)
    t_sent = time.monotonic()
    vtn.add_event(make_event("ev-20b-2", [signal("LOAD_DISPATCH", "delta", start, [-2.0], minutes=40 / 60)],
                             start=start, market_context="oadr://demo-program", ven_id=VTN_VEN_ID))
    assert vtn.opts.get(timeout=15) == ("ev-20b-2", "optIn")
    vp.wait_for(lambda: [m for _, m in rec.on(topics.bus_cmd(VEN_ID), t_sent) if m.get("eventId") == "ev-20b-2"],
                timeout=15, what="dr.ven's command for ev-20b-2")
    gevent.sleep(max(0.0, (start - datetime.now(timezone.utc)).total_seconds()) + 2.0)
    assert vp.rpc(VEN_IDENTITY, VenRpc.STATUS)["event"] is not None
    vtn.__exit__(None, None, None)     # the VTN is gone for the rest of the event
    wait_s = (end - datetime.now(timezone.utc)).total_seconds() + VEN_CONFIG["restoreStaggerS"] * 2 + 2.0
    gevent.sleep(max(0.0, wait_s))
    after = writable(vp)
    for point, value in before.items():
        assert after[point] == pytest.approx(value), point
    assert vp.rpc(VEN_IDENTITY, VenRpc.STATUS)["event"] is None
    health = vp.rpc(OADR_IDENTITY, OadrVenRpc.HEALTH)
    assert health["status"] == "BAD" and "2.0b VTN link down" in health["context"], health

    with OpenleadrVtn(ven_id=VTN_VEN_ID, poll_s=1, report_s=2, port=vtn.port) as back:
        vp.restart_agent(OADR_IDENTITY)
        assert back.registrations.get(timeout=60) == "demo-building"
        assert back.registration_ven_ids == [VTN_VEN_ID]     # the VEN it was: no second VEN at the VTN
        vp.wait_for(lambda: vp.rpc(OADR_IDENTITY, OadrVenRpc.HEALTH)["status"] == "GOOD", timeout=30,
                    what=f"{OADR_IDENTITY} healthy again")
