"""What a site owner writes to test their own site: install it on a throwaway platform, send its VEN an event,
see the meter show the shed, and every point back at its value after the event.

Run it for a site of your own: copy this file, set SITE and the names below to your site's, and run
`./scripts/test tests/examples/test_my_site.py` (or `pytest` in a venv where volttron-dr-tools is installed:
its pytest plugin gives `volttron_instance`, `dr_site` and `build_agent`)."""

from __future__ import annotations

import json
import gevent
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dr_common import topics
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, VenRpc, device_all_topic

pytestmark = pytest.mark.integration

SITE = "home"                                  # platform-config/sites/<SITE>
VEN = json.loads((Path(__file__).resolve().parents[2] / "platform-config/sites/demo/ven.json").read_text())
VEN_ID = VEN["venId"]
METER = device_all_topic("demo/meter")         # the device whose /all publish carries the site's power
POINTS = ["demo/ev_charger/PowerLimitKw", "demo/hvac/CoolingSetpointC", "demo/battery/PowerSetpointKw",
          "demo/panel/LaundryEnable"]          # points the VEN may write


def test_my_site_sheds_2_kw_and_gives_everything_back(volttron_instance, dr_site, build_agent):
    vp = volttron_instance
    dr_site(SITE, only=[DRIVER_IDENTITY])                      # the site's devices first
    me = build_agent("site.tester")
    meter = me.subscribe(METER)
    acks = me.subscribe(topics.bus_ack(VEN_ID))
    vp.wait_for(lambda: len(meter) >= 1, timeout=120, what="a meter reading")
    me.rpc(DRIVER_IDENTITY, DriverRpc.SET_POINT, "demo/water_heater", "ElementEnable", False)  # a steady site
    dr_site(SITE, only=[topics.ven_identity(VEN_ID)])          # then its VEN, whose baseline starts now
    vp.wait_for(lambda: me.rpc(topics.ven_identity(VEN_ID), VenRpc.HEALTH)["ok"], timeout=60,
                what="the VEN healthy")
    before, _ = me.rpc(DRIVER_IDENTITY, DriverRpc.GET_MULTIPLE_POINTS, POINTS)
    gevent.sleep(15)  # the VEN's baseline: the site's power over the seconds before the event
    now = datetime.now(timezone.utc)
    until = now + timedelta(seconds=40)
    me.publish(topics.bus_cmd(VEN_ID), {"op": "event", "correlationId": "example-1", "eventId": "example-evt",
                                        "venId": VEN_ID, "requestedReductionKw": 2.0,
                                        "startTime": now.isoformat(), "until": until.isoformat()})
    ack = vp.wait_for(lambda: next((m for m in acks.on_topic(topics.bus_ack(VEN_ID))
                                    if m.get("correlationId") == "example-1"), None), timeout=30, what="the ack")
    assert ack["ok"] is True, ack
    baseline = me.rpc(topics.ven_identity(VEN_ID), VenRpc.STATUS)["event"]["baselineKw"]
    seen = len(meter)
    vp.wait_for(lambda: len(meter) >= seen + 4, timeout=60, what="four meter readings during the event")
    last = [values["PowerKw"] for _, _, (values, _meta) in list(meter)[-3:]]   # an /all publish: [values, meta]
    shed = baseline - sum(last) / len(last)
    assert shed == pytest.approx(2.0, rel=0.10), f"the meter shows {shed:.2f} kW shed"
    vp.wait_for(lambda: me.rpc(DRIVER_IDENTITY, DriverRpc.GET_MULTIPLE_POINTS, POINTS)[0] == before
                and not me.rpc(topics.ven_identity(VEN_ID), VenRpc.STATUS)["actions"],
                timeout=(until - datetime.now(timezone.utc)).total_seconds() + 60,
                what="every point back at its value after the event")
