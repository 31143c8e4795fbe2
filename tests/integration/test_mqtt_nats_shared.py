"""Several VTN-side bridge instances sharing the fleet's inbound traffic through a shared subscription
(`share_group`: `$share/<group>/ven/ack/+`...). nats-server 2.9 has no shared subscriptions
(test_mqtt_nats.py asserts it), so this runs on a private Mosquitto 2, which has them for MQTT 3.1.1 clients as
EMQX and AWS IoT Core do: every ack reaches exactly one instance, and when one instance goes away the others
take all of it."""

from __future__ import annotations

import json

import gevent
import pytest

try:  # run the core as it runs inside the agent: with gevent's socket/ssl/os patches of volttron.client
    import volttron.client  # noqa: F401
except ImportError:
    pass

from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore
from dr_tools.fleet.brokers import Mosquitto
from dr_tools.fleet.probe import Probe

from tests.integration.test_mqtt_link import RecordingBus, wait

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

N = 200


def _instance(tmp_path, name: str, port: int, bus: RecordingBus) -> BridgeCore:
    core = BridgeCore(parse_config({"share_group": "dr-vtn", "batch": {"max_items": 100, "max_delay_ms": 20},
                                    "broker": {"port": port, "client_id": name, "clean_session": True,
                                               "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
                                    "store": {"path": str(tmp_path / f"{name}.sqlite")}}), bus)
    core.start()
    return core


def _acks(fleet: Probe, tag: str) -> None:
    for i in range(N):
        fleet.publish(f"ven/ack/sh-{i:03d}", json.dumps({"correlationId": f"{tag}:{i}", "op": "ping", "ok": True}))


def test_two_bridge_instances_share_the_acks_each_once_and_one_takes_over(tmp_path):
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    buses = {"a": RecordingBus(), "b": RecordingBus()}
    cores = {k: _instance(tmp_path, f"dr-vtn-bridge-{k}", broker.port, bus) for k, bus in buses.items()}
    fleet = Probe(port=broker.port, client_id="sh-fleet").start()
    try:
        wait(lambda: all(c.connected for c in cores.values()), 15, "both instances connected")
        gevent.sleep(0.3)  # subscriptions in place

        def got(tag: str) -> dict[str, list[str]]:
            return {k: [a["correlationId"] for a in bus.items("dr/batch/ack") if a["correlationId"].startswith(tag)]
                    for k, bus in buses.items()}

        _acks(fleet, "one")
        wait(lambda: sum(map(len, got("one").values())) >= N, 15, "every ack at one of the instances")
        gevent.sleep(0.5)  # a copy to the other instance would arrive now
        split = got("one")
        assert sorted(split["a"] + split["b"]) == sorted(f"one:{i}" for i in range(N)), "lost or doubled"
        assert split["a"] and split["b"], f"the broker gave everything to one instance: {len(split['a'])}"
        assert not set(split["a"]) & set(split["b"])
        assert {a["venId"] for a in buses["a"].items("dr/batch/ack")} <= {f"sh-{i:03d}" for i in range(N)}

        cores["a"].stop()  # one instance goes away: the group's other member takes every ack
        _acks(fleet, "two")
        wait(lambda: len(got("two")["b"]) >= N, 15, "every ack at the remaining instance")
        assert sorted(got("two")["b"]) == sorted(f"two:{i}" for i in range(N))
        assert got("two")["a"] == []
        assert cores["b"].status()["rejectsTotal"] == 0
    finally:
        fleet.stop()
        for c in cores.values():
            c.stop()
        broker.stop()
