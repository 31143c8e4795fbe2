"""After a large fan-out, inbound messages wait for the broker's acknowledgement of its last command (or for
FANOUT_PRIORITY_S), then reach the bus in order; PUBACKs and connection events are handled meanwhile."""

from __future__ import annotations

import json
import time

import gevent
import pytest
from dr_mqtt_bridge import core as core_mod
from dr_mqtt_bridge import link as link_mod
from dr_mqtt_bridge.config import parse_config
from dr_mqtt_bridge.core import BridgeCore


class FakeLink:
    """MqttLink's interface without a broker: publishes get consecutive mids; the test plays paho's events."""

    def __init__(self, broker, inbox, subscriptions, birth=None, log_packets=False) -> None:
        self.inbox = inbox
        self.published: list[tuple[str, bytes]] = []

    def start(self) -> None:
        self.inbox.put((link_mod.EV_CONNECTED, False))

    def stop(self) -> None:
        pass

    def publish(self, topic, payload, qos, retain=False):
        self.published.append((topic, payload))
        return link_mod.SUCCESS, len(self.published)

    def coalesced(self):
        import contextlib

        return contextlib.nullcontext()

    def is_connected(self) -> bool:
        return True


class RecordingBus:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def publish(self, topic, message):
        self.items.extend(message["items"])


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.01)
    return False


def _start(tmp_path, **cfg) -> tuple[BridgeCore, FakeLink, RecordingBus]:
    links: list[FakeLink] = []

    def factory(*args, **kwargs):
        links.append(FakeLink(*args, **kwargs))
        return links[-1]

    bus = RecordingBus()
    core = BridgeCore(parse_config({"store": {"path": str(tmp_path / "outbox.sqlite")}, "publish_chunk": 100, **cfg}),
                      bus, link_factory=factory)
    core.start()
    assert wait(lambda: core.connected)
    return core, links[0], bus


@pytest.fixture
def bridge(tmp_path):
    core, link, bus = _start(tmp_path, batch={"max_items": 1000, "max_delay_ms": 5}, dedup={"window_s": 0})
    yield core, link, bus
    core.stop(timeout=1)


def _fan_out(core: BridgeCore, n: int) -> None:
    result = core.on_bus_message("dr/batch/cmd", {"commands": [
        {"venId": f"v-{i}", "op": "ping", "correlationId": f"c{i}"} for i in range(n)]})
    assert result["sent"] == n


def _acks(link: FakeLink, ids: range) -> None:
    for i in ids:
        link.inbox.put((link_mod.EV_MESSAGE, f"ven/ack/v-{i}",
                        json.dumps({"correlationId": f"c{i}", "ok": True, "op": "ping"}).encode()))


def test_acks_wait_for_the_broker_to_acknowledge_the_fan_out(bridge):
    core, link, bus = bridge
    _fan_out(core, 300)
    _acks(link, range(0, 150))
    gevent.sleep(0.2)
    assert bus.items == [] and core.status()["inboundHeld"] == 150
    # the broker acknowledges all but the last command: still held; PUBACKs are counted meanwhile
    link.inbox.put((link_mod.EV_BATCH, [(link_mod.EV_PUBACK, mid) for mid in range(1, 300)]))
    _acks(link, range(150, 200))
    gevent.sleep(0.2)
    assert bus.items == [] and core.status()["messagesAcked"] == 299
    link.inbox.put((link_mod.EV_PUBACK, 300))
    _acks(link, range(200, 300))
    assert wait(lambda: len(bus.items) == 300)
    assert [item["correlationId"] for item in bus.items] == [f"c{i}" for i in range(300)]
    assert core.status()["inboundHeld"] == 0


def test_small_sends_hold_nothing(bridge):
    core, link, bus = bridge
    _fan_out(core, 100)  # not more than publish_chunk
    _acks(link, range(0, 100))
    assert wait(lambda: len(bus.items) == 100)


def test_held_messages_go_on_after_the_priority_window_or_a_disconnect(bridge, monkeypatch):
    core, link, bus = bridge
    monkeypatch.setattr(core_mod, "FANOUT_PRIORITY_S", 0.3)
    _fan_out(core, 200)
    started = time.monotonic()
    _acks(link, range(0, 10))
    assert wait(lambda: len(bus.items) == 10, 3)
    assert time.monotonic() - started >= 0.25  # no PUBACK came: released by the window
    _fan_out(core, 200)
    _acks(link, range(10, 20))
    gevent.sleep(0.1)
    assert len(bus.items) == 10
    link.inbox.put((link_mod.EV_DISCONNECTED, "test"))
    assert wait(lambda: len(bus.items) == 20, 1)


def test_stop_hands_held_messages_to_the_bus(tmp_path):
    core, link, bus = _start(tmp_path)
    _fan_out(core, 150)
    _acks(link, range(0, 5))
    gevent.sleep(0.1)
    assert bus.items == []
    core.stop(timeout=0.5)  # the PUBACKs never come: stop waits for them only so long
    assert [item["correlationId"] for item in bus.items] == [f"c{i}" for i in range(5)]
