"""dr.ven's agent shell on volttron-testing's TestServer (no platform): the config store's entry builds the
engine, the agent subscribes to its command topic and its devices, a bad command is answered on its ack topic
naming the field, a bad config is a health status (the agent keeps answering), every VenRpc is exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("volttrontesting")
from dr_common import topics  # noqa: E402
from dr_common.topics import DRIVER_IDENTITY, DriverRpc, VenRpc  # noqa: E402
from dr_testing.shell import AgentShell  # noqa: E402
from dr_ven_load_control.agent import VenLoadControlAgent  # noqa: E402

CONFIG = json.loads((Path(__file__).resolve().parents[2] / "platform-config/sites/demo/ven.json").read_text())
VEN_ID = CONFIG["venId"]


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the agent's state file (statePath, default data/ven_state.json) lands here
    driver = {DriverRpc.GET_MULTIPLE_POINTS: lambda points, *a, **k: ({}, {p: "no reading" for p in points}),
              DriverRpc.SCRAPE_ALL: lambda path, *a, **k: {},
              DriverRpc.SET_POINT: lambda *a, **k: None, DriverRpc.REVERT_POINT: lambda *a, **k: None}
    sh = AgentShell(VenLoadControlAgent, topics.ven_identity(VEN_ID), peers={DRIVER_IDENTITY: driver})
    yield sh
    sh.stop()


def test_the_config_entry_builds_the_engine_and_the_agent_subscribes(shell):
    shell.start({"config": CONFIG})
    health = shell.call(VenRpc.HEALTH)
    assert health["ok"] is True and health["configured"] is True, health
    subs = shell.subscribed()
    assert topics.bus_cmd(VEN_ID) in subs
    assert any(s.startswith("devices/") for s in subs), subs


def test_a_bad_command_is_answered_naming_the_field(shell):
    shell.start({"config": CONFIG})
    shell.publish(topics.bus_cmd(VEN_ID), {"op": "event", "correlationId": "c-1", "venId": VEN_ID,
                                           "requestedReductionKw": "lots"}, sender="dr.vtn")
    acks = shell.published(topics.bus_ack(VEN_ID))
    assert len(acks) == 1 and acks[0]["ok"] is False, acks
    assert "requestedReductionKw" in acks[0]["error"], acks[0]


def test_a_bad_config_is_a_health_status_and_the_agent_keeps_answering(shell):
    shell.start({"config": CONFIG})
    shell.update_config("config", {**CONFIG, "restoreStaggerS": -1})
    health = shell.call(VenRpc.HEALTH)
    assert "restoreStaggerS" in (health["configError"] or ""), health
    shell.publish(topics.bus_cmd(VEN_ID), {"op": "restore", "correlationId": "c-2", "venId": VEN_ID})
    assert shell.published(topics.bus_ack(VEN_ID)), "the agent answered after the bad config"


def test_stop_unsubscribes_what_the_agent_subscribed(shell):
    shell.start({"config": CONFIG})
    subs = set(shell.subscribed())
    shell.stop()
    assert subs and subs <= set(shell.unsubscribed), subs - set(shell.unsubscribed)


def test_every_ven_rpc_is_exported_under_its_constant(shell):
    names = {v for k, v in vars(VenRpc).items() if k.isupper()}
    assert names <= set(shell.exports()), names - set(shell.exports())
