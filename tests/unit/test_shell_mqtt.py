"""dr.mqtt's agent shell on volttron-testing's TestServer (no platform), against the real Mosquitto on
127.0.0.1:1883: in VEN mode the config entry connects the bridge, a command on the broker's `ven/cmd/<venId>`
reaches the bus on `dr/cmd/<venId>`, the VEN's ack on the bus goes out on `ven/ack/<venId>`; a bad config is a
health status; every BridgeRpc is exported under its constant."""

from __future__ import annotations

import json
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

pytest.importorskip("volttrontesting")
from dr_common import topics  # noqa: E402
from dr_common.topics import BridgeRpc  # noqa: E402
from dr_mqtt_bridge.agent import MqttBridgeAgent  # noqa: E402
from dr_testing.shell import AgentShell, wait_until  # noqa: E402

from tests.support.services import require_mosquitto  # noqa: E402


@pytest.fixture
def ven_id():
    return f"shell-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def shell(tmp_path, ven_id):
    require_mosquitto()
    sh = AgentShell(MqttBridgeAgent, topics.MQTT_BRIDGE_IDENTITY)
    sh.start({"config": {"mode": "ven", "venId": ven_id,
                         "broker": {"host": "127.0.0.1", "port": 1883, "clientId": ven_id},
                         "store": {"path": str(tmp_path / "outbox.sqlite")}}})
    yield sh
    sh.stop()


def test_commands_come_in_from_the_broker_and_acks_go_out(shell, ven_id):
    wait_until(lambda: shell.call(BridgeRpc.HEALTH)["status"] == "GOOD")
    got: list[tuple[str, dict]] = []
    subscribed = threading.Event()
    peer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"vtn-side-{ven_id}")
    peer.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    peer.on_subscribe = lambda *a: subscribed.set()
    peer.connect("127.0.0.1", 1883)
    peer.subscribe(f"ven/ack/{ven_id}", qos=1)
    peer.loop_start()
    try:
        assert subscribed.wait(5)
        command = {"op": "restore", "correlationId": "shell-c1", "venId": ven_id}
        peer.publish(f"ven/cmd/{ven_id}", json.dumps(command), qos=1)
        arrived = wait_until(lambda: shell.published(topics.bus_cmd(ven_id)))
        assert arrived[0]["correlationId"] == "shell-c1"
        shell.publish(topics.bus_ack(ven_id), {"correlationId": "shell-c1", "ok": True, "venId": ven_id},
                      sender=topics.ven_identity(ven_id))
        wait_until(lambda: got)
        assert got[0][0] == f"ven/ack/{ven_id}" and got[0][1]["correlationId"] == "shell-c1"
    finally:
        peer.loop_stop()
        peer.disconnect()


def test_a_bad_config_is_a_health_status(shell):
    shell.update_config("config", {"mode": "sideways"})
    health = shell.call(BridgeRpc.HEALTH)
    assert "mode" in json.dumps(health), health


def test_every_bridge_rpc_is_exported_under_its_constant(shell):
    names = {v for k, v in vars(BridgeRpc).items() if k.isupper()}
    assert names <= set(shell.exports()), names - set(shell.exports())
