"""dr.web's agent shell on volttron-testing's TestServer (no platform): the config entry starts the HTTP server
on a free port, the VEN registry is read from dr.vtn over RPC (a fake peer here), telemetry is held only for a
registered VEN and only from that VEN's own agent on the bus, a bad config is a health status while the server
keeps serving, every WebRpc is exported under its constant."""

from __future__ import annotations

import json
import urllib.request

import gevent
import pytest

pytest.importorskip("volttrontesting")
from dr_common import topics  # noqa: E402
from dr_common.topics import VtnRpc, WebRpc  # noqa: E402
from dr_testing.shell import AgentShell, wait_until  # noqa: E402
from dr_web.agent import WebAgent  # noqa: E402

TOKEN = "shell-test-token-0001"


@pytest.fixture
def shell():
    vtn = {VtnRpc.LIST_VENS: lambda **filters: [] if filters.get("transport") else [{"venId": "ven-a"}],
           VtnRpc.HEALTH: lambda: {"ok": True}, VtnRpc.OADR_CLIENTS: lambda clients: {"clients": len(clients)}}
    sh = AgentShell(WebAgent, topics.WEB_IDENTITY, peers={topics.VTN_IDENTITY: vtn})
    sh.start({"config": {"host": "127.0.0.1", "port": 0, "api_token": TOKEN, "registryRefreshS": 1,
                         "openadr3": {"clients": [{"clientId": "bl-1", "clientSecret": "bl-secret-0001",
                                                   "role": "bl"}]}}})
    yield sh
    sh.stop()


def _get(url: str) -> tuple[int, dict]:
    def fetch():
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    return gevent.get_hub().threadpool.apply(fetch)


def test_serves_and_holds_telemetry_only_from_the_registered_vens_own_agent(shell):
    health = wait_until(lambda: (h := shell.call(WebRpc.HEALTH))["ok"] and h)
    status, body = _get(health["url"] + "api/health")
    assert status == 200 and isinstance(body, dict)
    telemetry = {"venId": "ven-a", "usedPowerKw": 3.0, "baselinePowerKw": 4.0,
                 "timestamp": "2026-12-05T12:00:00+00:00"}
    wait_until(lambda: any(c[1] == VtnRpc.LIST_VENS for c in shell.calls))
    shell.publish(topics.bus_telemetry("ven-a"), telemetry, sender="dr.ven.ven-b")     # not its own agent
    shell.publish(topics.bus_telemetry("ven-z"), {**telemetry, "venId": "ven-z"}, sender="dr.ven.ven-z")
    assert shell.call(WebRpc.LATEST_TELEMETRY) == {}
    shell.publish(topics.bus_telemetry("ven-a"), telemetry, sender="dr.ven.ven-a")
    assert set(shell.call(WebRpc.LATEST_TELEMETRY)) == {"ven-a"}


def test_a_bad_config_is_a_health_status_and_the_server_keeps_serving(shell):
    url = wait_until(lambda: shell.call(WebRpc.HEALTH)["url"])
    shell.update_config("config", {"host": "127.0.0.1", "port": "eighty"})
    health = shell.call(WebRpc.HEALTH)
    assert "port" in (health["configError"] or ""), health
    assert _get(url + "api/health")[0] == 200


def test_every_web_rpc_is_exported_under_its_constant(shell):
    names = {v for k, v in vars(WebRpc).items() if k.isupper()}
    assert names <= set(shell.exports()), names - set(shell.exports())


def test_the_openadr_clients_are_handed_to_dr_vtn_once_without_secrets(shell):
    pushed = wait_until(lambda: [c for c in shell.calls if c[1] == VtnRpc.OADR_CLIENTS])
    (peer, _method, args, _kwargs), = pushed[:1]
    assert peer == topics.VTN_IDENTITY
    assert args[0] == [{"clientId": "bl-1", "role": "bl", "venName": None, "scopes": args[0][0]["scopes"]}]
    assert "write_events" in args[0][0]["scopes"] and "bl-secret-0001" not in str(shell.calls)
    gevent.sleep(2.5)                                   # two more registry rounds: nothing new to hand over
    assert len([c for c in shell.calls if c[1] == VtnRpc.OADR_CLIENTS]) == 1
