"""The foundation on a real VOLTTRON 11 platform: an agent of ours installed with `vctl install`, a pubsub
and an RPC round trip through the platform, config-store updates, bad input counted, site scripts."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from dr_common import topics

pytestmark = pytest.mark.integration

# the session's bus client (pytest.client) plays a bridge that publishes for any VEN; dr.web reads its VEN registry
# from an identity no agent has, so what it holds does not depend on whether another module installed dr.vtn
WEB_CONFIG = {"host": "127.0.0.1", "port": 0, "api_token": "pytest-token-0001",
              "trustedBridges": ["dr.mqtt", "pytest.client"], "vtnIdentity": "pytest.no-vtn"}


@pytest.fixture(scope="module")
def web_agent(vplatform):
    t0 = time.monotonic()
    action = vplatform.install_agent("web", topics.WEB_IDENTITY, config=WEB_CONFIG, tag="dr-web")
    print(f"\ndr.web {action} in {time.monotonic() - t0:.1f} s")
    vplatform.wait_for(lambda: vplatform.rpc(topics.WEB_IDENTITY, "health")["ok"], timeout=30, what="dr.web healthy")
    return vplatform


def test_platform_started_and_its_start_time_is_printed(vplatform, figure):
    figure("platform start (session site, first start incl. seeding)", f"{vplatform.start_seconds:.1f} s")
    assert vplatform.plat.is_running()


def test_agent_installed_with_vctl_is_running_with_its_tag(web_agent):
    info = web_agent.agents()[topics.WEB_IDENTITY]
    assert info.running and info.tag == "dr-web"
    assert info.name.startswith("volttron-dr-web")


def test_rpc_round_trip(web_agent):
    health = web_agent.rpc(topics.WEB_IDENTITY, "health")
    assert health["identity"] == topics.WEB_IDENTITY
    assert health["configError"] is None
    assert health["url"].startswith("http://127.0.0.1:")


def test_pubsub_round_trip_through_the_platform(web_agent):
    seen = web_agent.subscribe(topics.BUS_TELEMETRY_PREFIX)
    telemetry = {"ven_id": "ven-rt", "used_power_kw": "4.5", "shed_power_kw": 1, "event_id": "evt-rt",
                 "ts": "2026-11-23T12:00:00"}
    web_agent.publish(topics.bus_telemetry("ven-rt"), telemetry)
    # the client's own subscription sees the message come back from the router
    web_agent.wait_for(lambda: seen.on_topic("dr/telemetry/ven-rt"), timeout=10, what="message on the bus")
    # and the agent received it, parsed it tolerantly and reports it over RPC
    latest = web_agent.wait_for(lambda: web_agent.rpc(topics.WEB_IDENTITY, "latest_telemetry").get("ven-rt"),
                                timeout=10, what="dr.web saw the telemetry")
    assert latest["usedPowerKw"] == 4.5 and latest["eventId"] == "evt-rt"


def test_bad_message_is_counted_and_the_agent_keeps_working(web_agent):
    before = web_agent.rpc(topics.WEB_IDENTITY, "health")["telemetryRejected"]
    web_agent.publish(topics.bus_telemetry("ven-bad"), {"venId": "ven-bad", "usedPowerKw": "lots"})
    health = web_agent.wait_for(
        lambda: (h := web_agent.rpc(topics.WEB_IDENTITY, "health"))["telemetryRejected"] > before and h,
        timeout=10, what="rejection counted")
    assert "usedPowerKw" in health["lastError"]
    web_agent.publish(topics.bus_telemetry("ven-ok"), {"venId": "ven-ok", "usedPowerKw": 1})
    web_agent.wait_for(lambda: "ven-ok" in web_agent.rpc(topics.WEB_IDENTITY, "latest_telemetry"), timeout=10,
                       what="next good message processed")


def test_config_store_update_reconfigures_and_bad_config_is_reported(web_agent):
    web_agent.store_config(topics.WEB_IDENTITY, "config", dict(WEB_CONFIG, port="eighty"))
    health = web_agent.wait_for(lambda: (h := web_agent.rpc(topics.WEB_IDENTITY, "health"))["configError"] and h,
                                timeout=10, what="config error reported")
    assert "port" in health["configError"]
    assert health["url"]  # still serving with the previous configuration
    web_agent.store_config(topics.WEB_IDENTITY, "config", WEB_CONFIG)
    health = web_agent.wait_for(lambda: (h := web_agent.rpc(topics.WEB_IDENTITY, "health"))["ok"] and h,
                                timeout=10, what="config accepted")
    with urllib.request.urlopen(health["url"] + "api/health", timeout=5) as resp:
        assert json.load(resp)["identity"] == topics.WEB_IDENTITY


def test_reinstall_is_idempotent(web_agent):
    before = web_agent.agents()[topics.WEB_IDENTITY].uuid
    assert web_agent.install_agent("web", topics.WEB_IDENTITY, config=WEB_CONFIG, tag="dr-web") == "unchanged"
    assert web_agent.agents()[topics.WEB_IDENTITY].uuid == before
    assert list(web_agent.agents()).count(topics.WEB_IDENTITY) == 1


def test_second_site_side_by_side_start_and_stop_times(vplatform, figure):
    """scripts/platform: another site starts beside the session's on its own VIP address, and `stop` leaves no
    process of it; the start and stop times are printed (figures, not bounds: they follow the machine's load)."""
    repo = vplatform.repo
    site = "pytest-side"
    run = lambda *a: subprocess.run([str(repo / "scripts" / "platform"), *a, "--site", site],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    try:
        t0 = time.monotonic()
        started = run("start")
        start_s = time.monotonic() - t0
        assert started.returncode == 0, started.stdout + started.stderr
        status = run("status")
        assert status.returncode == 0 and f"sites/{site}/vhome/run/vip.socket" in status.stdout
        assert str(vplatform.home) not in status.stdout
        assert vplatform.rpc(topics.WEB_IDENTITY, "health")["ok"]  # the session's platform is unaffected
        # start without its seeding (done once per site) is what an operator waits for
        t0 = time.monotonic()
        assert run("stop").returncode == 0
        stop_s = time.monotonic() - t0
        t0 = time.monotonic()
        assert run("start").returncode == 0
        restart_s = time.monotonic() - t0
        t0 = time.monotonic()
        stopped = run("stop")
        stop2_s = time.monotonic() - t0
        figure("scripts/platform, second site", f"first start {start_s:.1f} s (incl. seeding), stop {stop_s:.1f} s, "
               f"start {restart_s:.1f} s, stop {stop2_s:.1f} s")
        assert stopped.returncode == 0 and "no process left" in stopped.stdout
        assert run("status").returncode == 3
    finally:
        run("stop")
        subprocess.run(["rm", "-rf", str(vplatform.plat.state / "sites" / site)], check=False)
