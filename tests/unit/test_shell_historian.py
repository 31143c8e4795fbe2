"""platform.historian's agent shell on volttron-testing's TestServer (no platform): the config entry opens the
store, DR telemetry published on the bus is captured, cached and stored by the base historian's thread and
answered by `query`; a bad config is said by health and the previous store stays; every HistorianRpc is
exported under its constant."""

from __future__ import annotations

from datetime import datetime, timezone

import gevent
import gevent.event
import pytest

pytest.importorskip("volttrontesting")
from dr_common import topics  # noqa: E402
from dr_common.topics import HistorianRpc  # noqa: E402
from dr_historian.agent import HistorianAgent  # noqa: E402
from dr_testing.shell import AgentShell, wait_until  # noqa: E402


class _InstanceName:
    """The router's answer to the base historian's `query("instance-name")` (the mock core has no router)."""

    def __init__(self, core) -> None:
        pass

    def query(self, prop: str):
        result = gevent.event.AsyncResult()
        result.set("pytest-instance")
        return result


@pytest.fixture
def shell(tmp_path, monkeypatch):
    import historian.base.base_historian as base

    monkeypatch.chdir(tmp_path)   # the base historian's backup cache lives in the agent's working folder
    monkeypatch.setattr(base, "Query", _InstanceName)
    sh = AgentShell(HistorianAgent, topics.HISTORIAN_IDENTITY)
    sh.start({"config": {"connection": {"type": "sqlite", "params": {"database": str(tmp_path / "h.sqlite")}},
                         "record_dr": True, "retry_period": 0.5}})
    yield sh
    sh.stop()
    sh.agent.stop_process_thread()  # before the working folder changes back: the thread opens its cache there


def test_dr_telemetry_on_the_bus_is_stored_and_queried(shell):
    now = datetime.now(timezone.utc).isoformat()
    shell.publish(topics.bus_telemetry("ven-a"), {"venId": "ven-a", "usedPowerKw": 3.5, "baselinePowerKw": 5.0,
                                                  "timestamp": now}, sender="dr.ven.ven-a")
    topic = topics.hist_telemetry("ven-a", "usedPowerKw") if hasattr(topics, "hist_telemetry") else None
    names = wait_until(lambda: [t for t in shell.call(HistorianRpc.GET_TOPIC_LIST) if "ven-a" in t], timeout=15)
    chosen = topic or next(t for t in names if t.lower().endswith("usedpowerkw"))
    result = shell.call(HistorianRpc.QUERY, topic=chosen)
    assert [value for _, value in result["values"]] == [3.5], result
    assert shell.call(HistorianRpc.HEALTH)["ok"] is True


def test_a_bad_config_is_said_and_the_store_stays(shell):
    shell.update_config("config", {"connection": {"type": "oracle"}})
    health = shell.call(HistorianRpc.HEALTH)
    assert "connection" in str(health), health


def test_every_historian_rpc_is_exported_under_its_constant(shell):
    names = {v for k, v in vars(HistorianRpc).items() if k.isupper()}
    assert names <= set(shell.exports()), names - set(shell.exports())
