"""`broker.refused_topic_chars`: the characters a broker refuses in topics (nats-server's MQTT: '.' and ' ')
are refused in the configuration's topics and its venId, and a command whose venId would put one into a topic
is dropped and counted, never handed to paho (the broker would close the connection, and paho would resend it
after every reconnect). tests/integration/test_mqtt_nats.py runs it against a real nats-server."""

from __future__ import annotations

import pytest
from dr_common.mqtt.config import ConfigError, parse_config
from dr_common.mqtt.core import BridgeCore
from dr_common.mqtt.outbound import REASON_TOPIC_REFUSED

NATS = {"refused_topic_chars": ". "}


def test_default_refuses_nothing_and_nats_chars_are_kept():
    assert parse_config({}).broker.refused_topic_chars == ""
    assert parse_config({"broker": NATS}).broker.refused_topic_chars == ". "
    assert parse_config({"broker": {"refusedTopicChars": "."}}).broker.refused_topic_chars == "."
    # a venId with a dot is fine where the broker takes it
    assert parse_config({"mode": "ven", "ven_id": "site.a"}).ven_id == "site.a"


@pytest.mark.parametrize("raw, key", [
    ({"mode": "ven", "ven_id": "site.a", "broker": NATS}, "ven_id"),
    ({"broker": NATS, "outbound": [{"bus": "dr/batch/cmd", "mqtt": ["ven/cmd.v2/{venId}"],
                                    "items_key": "commands"}]}, "outbound.0.mqtt"),
    ({"broker": NATS, "inbound": [{"mqtt": "ven/ack x/{venId}", "bus": "dr/batch/ack", "kind": "ack",
                                   "batch": True}]}, "inbound.0.mqtt"),
    ({"mode": "ven", "ven_id": "v1", "broker": NATS, "status_topic": "ven/status.v1"}, "status_topic"),
    ({"broker": {"refused_topic_chars": "/"}}, "broker.refused_topic_chars"),
    ({"broker": {"refused_topic_chars": "+"}}, "broker.refused_topic_chars"),
    ({"broker": {"refused_topic_chars": "." * 17}}, "broker.refused_topic_chars"),
])
def test_a_topic_the_broker_refuses_is_a_config_error_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == key, err.value


class _Bus:
    def publish(self, topic: str, message: object) -> None:
        raise AssertionError("nothing reaches the bus in this test")


def test_a_command_whose_topic_the_broker_refuses_is_dropped_and_counted(tmp_path):
    # not started: nothing is connected, so what is accepted goes to the outbox, in order
    core = BridgeCore(parse_config({"broker": NATS, "store": {"path": str(tmp_path / "o.sqlite")}}), _Bus())
    core.prepare()
    try:
        result = core.on_bus_message("dr/batch/cmd", {"commands": [
            {"venId": "ok-1", "op": "ping", "correlationId": "c1"},
            {"venId": "site.a", "op": "ping", "correlationId": "c2"},
            {"venId": "ok-2", "op": "ping", "correlationId": "c3"}]})
        assert result == {"sent": 0, "queued": 2, "refused": 0, "rejected": 1}
        status = core.status()
        assert status["rejects"] == {REASON_TOPIC_REFUSED: 1}
        assert status["backlog"] == 2
        queued = [row.topic for row in core.out.outbox.read_after(0, 10)]
        assert queued == ["ven/cmd/ok-1", "ven/cmd/ok-2"]
    finally:
        core.discard()


def test_without_the_setting_a_dotted_ven_id_goes_out(tmp_path):
    core = BridgeCore(parse_config({"store": {"path": str(tmp_path / "o.sqlite")}}), _Bus())
    core.prepare()
    try:
        result = core.on_bus_message("dr/batch/cmd", {"commands": [{"venId": "site.a", "op": "ping",
                                                                    "correlationId": "c1"}]})
        assert result["queued"] == 1 and result["rejected"] == 0
        assert core.status()["rejectsTotal"] == 0
    finally:
        core.discard()


# --- several VTN-side bridge instances sharing the fleet's inbound traffic ------------------------------
def test_share_group_subscribes_every_inbound_route_as_a_shared_subscription(tmp_path):
    core = BridgeCore(parse_config({"share_group": "dr-vtn", "store": {"path": str(tmp_path / "o.sqlite")}}),
                      _Bus())
    core.prepare()
    try:
        assert core.out.link._subscriptions == [("$share/dr-vtn/ven/ack/+", 1), ("$share/dr-vtn/ven/telemetry/+", 1),
                                                ("$share/dr-vtn/oadr/meter/+", 1), ("$share/dr-vtn/ven/status/+", 1)]
    finally:
        core.discard()
    plain = BridgeCore(parse_config({"store": {"path": str(tmp_path / "p.sqlite")}}), _Bus())
    plain.prepare()
    try:
        assert plain.out.link._subscriptions[0] == ("ven/ack/+", 1)
    finally:
        plain.discard()


@pytest.mark.parametrize("raw", [
    {"mode": "ven", "ven_id": "v1", "share_group": "g"},
    {"share_group": "a/b"},
    {"share_group": "a+"},
    {"share_group": ""},
    {"share_group": "g" * 65},
])
def test_a_bad_share_group_is_a_config_error(raw):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.key == "share_group", err.value
