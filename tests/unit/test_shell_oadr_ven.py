"""dr.oadr.<venId>'s agent shell on volttron-testing's TestServer (no platform): the config entry starts the
OpenADR 3.1 link (to a VTN that is not there: health says the link is down, the agent keeps running), the agent
listens to its VEN's ack and telemetry topics and takes them only from dr.ven.<venId> (dr.vtn republishes
OpenADR reports on the same topic), a bad config is said, stop unsubscribes, every OadrVenRpc is exported."""

from __future__ import annotations

import pytest

pytest.importorskip("volttrontesting")
from dr_common import topics  # noqa: E402
from dr_common.topics import OadrVenRpc  # noqa: E402
from dr_oadr_ven.agent import OadrVenAgent  # noqa: E402
from dr_testing.shell import AgentShell, wait_until  # noqa: E402

from tests.support.services import free_port  # noqa: E402

VEN_ID = "shell-ven"


def _config(tmp_path) -> dict:
    return {"venId": VEN_ID, "statePath": str(tmp_path / "oadr_state.json"),
            "vtn": {"protocol": "oadr31", "baseUrl": f"http://127.0.0.1:{free_port()}/openadr3/3.1.0",
                    "clientId": "shell-ven", "clientSecret": "shell-secret-0001", "venName": VEN_ID,
                    "pollS": 1, "notify": "poll"}}


@pytest.fixture
def shell(tmp_path):
    sh = AgentShell(OadrVenAgent, topics.oadr_ven_identity(VEN_ID))
    sh.start({"config": _config(tmp_path)})
    yield sh
    sh.stop()


def test_an_absent_vtn_is_a_health_status_and_the_agent_listens_to_its_ven(shell):
    health = wait_until(lambda: (h := shell.call(OadrVenRpc.HEALTH))["status"] == "BAD" and h)
    assert "VTN link down" in health["context"], health
    assert {topics.bus_ack(VEN_ID), topics.bus_telemetry(VEN_ID)} <= set(shell.subscribed())
    assert shell.call(OadrVenRpc.STATUS)["running"] is True


def test_telemetry_is_taken_only_from_the_vens_own_agent(shell):
    telemetry = {"venId": VEN_ID, "ts": "2026-12-05T12:00:00+00:00", "usedPowerKw": 3.0, "baselinePowerKw": 5.0}
    shell.publish(topics.bus_telemetry(VEN_ID), telemetry, sender=topics.VTN_IDENTITY)
    refused = shell.call(OadrVenRpc.HEALTH)["rejects"]
    assert "bus.sender" in str(refused), refused
    before = str(refused)
    shell.publish(topics.bus_telemetry(VEN_ID), telemetry, sender=topics.ven_identity(VEN_ID))
    assert str(shell.call(OadrVenRpc.HEALTH)["rejects"]) == before


def test_a_bad_config_is_said(shell, tmp_path):
    shell.update_config("config", {**_config(tmp_path), "vtn": {"protocol": "oadr99"}})
    assert "vtn" in (shell.call(OadrVenRpc.STATUS)["configError"] or ""), shell.call(OadrVenRpc.STATUS)


def test_stop_unsubscribes(shell):
    subs = set(shell.subscribed())
    shell.stop()
    assert subs and subs <= set(shell.unsubscribed)


def test_every_oadr_ven_rpc_is_exported_under_its_constant(shell):
    names = {v for k, v in vars(OadrVenRpc).items() if k.isupper()}
    assert names <= set(shell.exports()), names - set(shell.exports())
