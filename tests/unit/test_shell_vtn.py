"""dr.vtn's agent shell on volttron-testing's TestServer (no platform): the config entry starts the VTN on its
store, an event created over RPC is dispatched as a command on the VEN's bus topic, an ack is taken only from the
VEN it is for (the bus sender), a bad config is a health status with the running VTN kept, every VtnRpc is
exported under its constant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("volttrontesting")
from dr_common import topics  # noqa: E402
from dr_common.topics import VtnRpc  # noqa: E402
from dr_testing.shell import AgentShell, wait_until  # noqa: E402
from dr_vtn_dispatcher.agent import VtnAgent  # noqa: E402


@pytest.fixture
def shell(tmp_path):
    sh = AgentShell(VtnAgent, topics.VTN_IDENTITY)
    sh.start({"config": {"sqlitePath": str(tmp_path / "vtn.sqlite"), "flushIntervalS": 0.1}})
    yield sh
    sh.stop()


def test_an_event_is_dispatched_on_the_vens_bus_topic_and_only_its_ven_may_ack(shell):
    assert shell.call(VtnRpc.HEALTH)["ok"] is True
    reg = shell.call(VtnRpc.REGISTER_VEN, {"venId": "ven-a", "transport": "bus", "status": "online", "maxShedKw": 5})
    assert "error" not in reg, reg
    now = datetime.now(timezone.utc)
    made = shell.call(VtnRpc.CREATE_EVENT, {"startTime": now.isoformat(),
                                            "endTime": (now + timedelta(minutes=5)).isoformat(),
                                            "requestedReductionKw": 2.0, "venIds": ["ven-a"]})
    assert "error" not in made, made
    commands = wait_until(lambda: shell.published(topics.bus_cmd("ven-a")))
    cmd = commands[0]
    assert cmd["op"] == "event" and cmd["requestedReductionKw"] == pytest.approx(2.0)
    ack = {"correlationId": cmd["correlationId"], "ok": True, "venId": "ven-a"}
    shell.publish(topics.bus_ack("ven-a"), ack, sender="dr.ven.ven-b")         # another VEN's forgery
    assert shell.call(VtnRpc.HEALTH)["counters"]["senderMismatch"] == 1
    assert shell.call(VtnRpc.EVENT_METRICS, made["eventId"])["vensResponding"] == 0
    shell.publish(topics.bus_ack("ven-a"), ack, sender="dr.ven.ven-a")
    metrics = wait_until(lambda: (m := shell.call(VtnRpc.EVENT_METRICS, made["eventId"]))["vensResponding"] and m)
    assert metrics["vens"][0]["ok"] is True and metrics["acceptedKw"] == pytest.approx(2.0), metrics


def test_a_bad_config_keeps_the_running_vtn_and_says_why(shell):
    shell.update_config("config", {"flushIntervalS": -3})
    health = shell.call(VtnRpc.HEALTH)
    assert "flushIntervalS" in (health["configError"] or ""), health
    assert shell.call(VtnRpc.LIST_VENS) is not None


def test_every_vtn_rpc_is_exported_under_its_constant(shell):
    names = {v for k, v in vars(VtnRpc).items() if k.isupper()}
    assert names <= set(shell.exports()), names - set(shell.exports())
