"""dr.vtn's command link (`commandLink`): commands straight to the broker, acks, telemetry and status back into
dr.vtn in one pump pass with each item's venId bound to its MQTT topic, the bus echo for the record, and the
configuration. The link runs on a fake paho link (no broker); the real-broker path is in
tests/integration/test_vtn_command_link.py."""

from __future__ import annotations

import json
import time

import gevent
import pytest
from dr_common import topics
from dr_common.batches import batch_items
from dr_common.config import ConfigError
from dr_common.mqtt import link as link_mod
from dr_common.mqtt.config import parse_config as parse_link_config
from dr_common.payloads import Ack, Telemetry, VenStatus
from dr_vtn_dispatcher.command_link import CommandLink, Echo
from dr_vtn_dispatcher.config import parse_config

from tests.support.fake_link import FakeLink


class Bus:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[tuple[str, object]] = []
        self.fail = fail

    def publish(self, topic, message):
        if self.fail:
            raise RuntimeError("bus down")
        self.messages.append((topic, message))


def wait(predicate, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.005)
    return False


@pytest.fixture
def linked(tmp_path):
    links: list[FakeLink] = []

    def factory(*args, **kwargs):
        links.append(FakeLink(*args, **kwargs))
        return links[-1]

    from dr_common.mqtt.core import BridgeCore

    bus = Bus()
    echo = Echo(bus.publish, interval_s=3600)  # flushed by the tests
    config = parse_link_config({"store": {"path": str(tmp_path / "outbox.sqlite")}, "dedup": {"window_s": 0}})
    link = CommandLink(config, bus, echo, base_dir=str(tmp_path),
                       core_factory=lambda *a, **kw: BridgeCore(*a, link_factory=factory, **kw))
    delivered: list[tuple[str, list]] = []
    link.attach(lambda kind, items: delivered.append((kind, items)))
    link.start()
    assert wait(lambda: link.core.connected)
    yield link, links[0], bus, delivered
    link.stop()


def _inbound(fake: FakeLink, topic: str, payload: dict) -> None:
    fake.inbox.put((link_mod.EV_MESSAGE, topic, json.dumps(payload).encode()))


def test_commands_go_to_each_vens_topic_and_are_echoed_for_the_record(linked):
    link, fake, bus, _ = linked
    commands = [{"op": "event", "venId": f"v-{i}", "correlationId": f"e1:m0:r0:event:v-{i}", "eventId": "e1",
                 "requestedReductionKw": 1.0} for i in range(3)]
    result = link.send_batch(commands)
    assert result == {"sent": 3, "queued": 0, "refused": 0, "rejected": 0}
    assert [t for t, _ in fake.published] == ["ven/cmd/v-0", "ven/cmd/v-1", "ven/cmd/v-2"]
    assert json.loads(fake.published[1][1])["correlationId"] == "e1:m0:r0:event:v-1"
    assert bus.messages == []          # nothing on the bus before the echo's turn
    link.echo.flush()
    [(topic, message)] = bus.messages
    assert topic == topics.BUS_CMD_SENT
    assert batch_items(message, "commands") == commands


def test_acks_telemetry_and_status_reach_dr_vtn_parsed_and_bound_to_their_topic(linked):
    link, fake, bus, delivered = linked
    _inbound(fake, "ven/ack/v-1", {"correlationId": "c1", "ok": True, "acceptedReduceKw": 1.5})
    _inbound(fake, "ven/telemetry/v-2", {"venId": "v-2", "usedPowerKw": 3.0, "ts": "2026-12-05T18:00:00Z"})
    _inbound(fake, "ven/status/v-3", {"venId": "v-3", "online": False})
    assert wait(lambda: len(delivered) == 3)
    kinds = {kind: items for kind, items in delivered}
    [ack] = kinds["ack"]
    assert isinstance(ack, Ack) and ack.ven_id == "v-1" and ack.accepted_reduce_kw == 1.5
    [tel] = kinds["telemetry"]
    assert isinstance(tel, Telemetry) and tel.ven_id == "v-2" and tel.used_power_kw == 3.0
    [status] = kinds["status"]
    assert isinstance(status, VenStatus) and status.ven_id == "v-3" and status.online is False
    assert bus.messages == []          # in-process: no bus hop on the way in
    link.echo.flush()
    echoed = dict(bus.messages)
    assert echoed[topics.BUS_ACK_BATCH]["items"][0]["venId"] == "v-1"
    assert set(echoed) == {topics.BUS_ACK_BATCH, topics.BUS_TELEMETRY_BATCH, topics.BUS_STATUS_BATCH}


def test_a_ven_cannot_ack_as_another_and_bad_payloads_are_counted(linked):
    link, fake, _, delivered = linked
    _inbound(fake, "ven/ack/v-1", {"correlationId": "c1", "ok": True, "venId": "v-2"})   # speaks for v-2
    fake.inbox.put((link_mod.EV_MESSAGE, "ven/ack/v-1", b"{not json"))
    _inbound(fake, "ven/ack/v-1", {"ok": True})                                          # no correlationId
    _inbound(fake, "ven/ack/v-4", {"correlationId": "c4", "ok": True})
    assert wait(lambda: delivered)
    assert [(kind, [a.ven_id for a in items]) for kind, items in delivered] == [("ack", ["v-4"])]
    rejects = link.status()["rejects"]
    assert rejects == {"ven_id_mismatch": 1, "invalid_json": 1, "schema": 1}


def test_a_failing_consumer_loses_only_its_hand_off(linked, tmp_path):
    link, fake, bus, delivered = linked
    calls = []

    def broken(kind, items):
        calls.append(len(items))
        if len(calls) == 1:
            raise ValueError("boom")
        delivered.append((kind, items))

    link.attach(broken)
    _inbound(fake, "ven/ack/v-1", {"correlationId": "c1", "ok": True})
    assert wait(lambda: calls)
    _inbound(fake, "ven/ack/v-2", {"correlationId": "c2", "ok": True})
    assert wait(lambda: delivered)
    assert delivered[0][1][0].ven_id == "v-2"
    status = link.status()
    assert status["localFailed"] == 1 and status["localItems"] == 1
    link.echo.flush()
    assert [item["venId"] for _, m in bus.messages for item in m["items"]] == ["v-1", "v-2"]  # both recorded


def test_the_echo_is_bounded_and_survives_a_failing_bus():
    bus = Bus(fail=True)
    echo = Echo(bus.publish, interval_s=3600, max_items=10)
    echo.add(topics.BUS_ACK_BATCH, [{"venId": f"v-{i}"} for i in range(8)])
    echo.add(topics.BUS_TELEMETRY_BATCH, [{"venId": f"t-{i}"} for i in range(5)])
    assert echo.summary() == {"echoed": 0, "dropped": 3, "failed": 0, "waiting": 10}
    echo.flush()
    assert echo.summary() == {"echoed": 0, "dropped": 3, "failed": 10, "waiting": 0}
    bus.fail = False
    echo.add(topics.BUS_ACK_BATCH, [{"venId": "v-9"}])
    echo.flush()
    assert bus.messages == [(topics.BUS_ACK_BATCH, {"items": [{"venId": "v-9"}]})]


def test_configuration_names_the_key_and_never_renders_the_password():
    config = parse_config({"commandLink": {"broker": {"host": "127.0.0.1", "port": 1884, "username": "vtn",
                                                      "password": "s3cret-value"}}})
    assert config.link is not None and config.link.mode == "vtn" and config.link.broker.port == 1884
    assert config.link.broker.client_id == "dr-vtn-bridge"   # the identity the shipped broker ACL gives the VTN
    assert "s3cret-value" not in repr(config) and "s3cret-value" not in str(config.model_dump())
    assert parse_config({}).link is None
    with pytest.raises(ConfigError) as err:
        parse_config({"commandLink": {"broker": {"port": "many"}}})
    assert err.value.key == "commandLink.broker.port"
    with pytest.raises(ConfigError) as err:
        parse_config({"commandLink": {"mode": "ven", "ven_id": "v-1"}})
    assert err.value.key == "commandLink.mode"
    with pytest.raises(ConfigError) as err:
        parse_config({"commandLink": {"broker": {"password": "s3cret-value", "username": "u", "host": "10.1.2.3"},
                                      "qos": 7}})
    assert "s3cret-value" not in str(err.value)


def test_the_shipped_example_is_valid():
    from pathlib import Path

    example = json.loads((Path(__file__).resolve().parents[2] / "platform-config" / "sites" / "aggregator" /
                          "vtn-commandlink.example.json").read_text())
    link = parse_link_config(example.pop("commandLink"), check_files=False)  # its certificates are per deployment
    assert link.mode == "vtn" and link.broker.tls is not None and link.broker.client_id == "dr-vtn-bridge"
    config = parse_config(example)
    assert config.prepare_lead_s == 1.0 and config.link is None
