"""After a large fan-out, inbound messages wait for the broker's acknowledgement of its last command (or for
FANOUT_PRIORITY_S), then reach the bus in order; PUBACKs and connection events are handled meanwhile.

The core runs on an injected clock: the priority window passes when the test moves the clock, and "nothing
reached the bus" is asserted once the core has visibly taken the messages in (held), never after a sleep."""

from __future__ import annotations

import json
import time

import gevent
import pytest
from dr_common.mqtt import link as link_mod
from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore
from dr_common.mqtt.outbound import FANOUT_PRIORITY_S

from tests.support.fake_link import FakeLink


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _start(tmp_path, clock=None, **cfg) -> tuple[BridgeCore, FakeLink, RecordingBus]:
    links: list[FakeLink] = []

    def factory(*args, **kwargs):
        links.append(FakeLink(*args, **kwargs))
        return links[-1]

    bus = RecordingBus()
    core = BridgeCore(parse_config({"store": {"path": str(tmp_path / "outbox.sqlite")}, "publish_chunk": 100, **cfg}),
                      bus, link_factory=factory, clock=clock or FakeClock())
    core.start()
    assert wait(lambda: core.connected)
    return core, links[0], bus


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def bridge(tmp_path, clock):
    # batches are due at once (max_delay 0): what is not held reaches the bus without the clock moving
    core, link, bus = _start(tmp_path, clock, batch={"max_items": 1000, "max_delay_ms": 0}, dedup={"window_s": 0})
    yield core, link, bus
    core.stop(timeout=1)


def _taken_in(core: BridgeCore, held: int, acked: int = 0) -> None:
    """Wait until the core has visibly taken in what was put in its inbox: `held` messages held, `acked`
    PUBACKs counted (each inbound message is either held or handled, so this is all of them)."""
    assert wait(lambda: core.status()["inboundHeld"] == held and core.status()["messagesAcked"] == acked)


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
    _taken_in(core, held=150)
    assert bus.items == [] and core.status()["busQueue"] == 0 and core.status()["pendingBatchItems"] == 0
    # the broker acknowledges all but the last command: still held; PUBACKs are counted meanwhile
    link.inbox.put((link_mod.EV_BATCH, [(link_mod.EV_PUBACK, mid) for mid in range(1, 300)]))
    _acks(link, range(150, 200))
    _taken_in(core, held=200, acked=299)
    assert bus.items == []
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


def test_held_messages_go_on_after_the_priority_window_or_a_disconnect(bridge, clock):
    core, link, bus = bridge
    _fan_out(core, 200)
    _acks(link, range(0, 10))
    _taken_in(core, held=10)
    clock.now += FANOUT_PRIORITY_S - 0.01
    link.inbox.put((link_mod.EV_BATCH, []))  # wakes the pump: the window has not passed yet
    _acks(link, range(10, 12))
    _taken_in(core, held=12)
    assert bus.items == []
    clock.now += 0.02  # no PUBACK came: the window passes and releases them
    link.inbox.put((link_mod.EV_BATCH, []))
    assert wait(lambda: len(bus.items) == 12, 3)
    _fan_out(core, 200)
    _acks(link, range(12, 20))
    _taken_in(core, held=8)
    assert len(bus.items) == 12
    link.inbox.put((link_mod.EV_DISCONNECTED, "test"))
    assert wait(lambda: len(bus.items) == 20, 1)


def test_stop_hands_held_messages_to_the_bus(tmp_path):
    core, link, bus = _start(tmp_path)
    _fan_out(core, 150)
    _acks(link, range(0, 5))
    _taken_in(core, held=5)
    assert bus.items == []
    core.stop(timeout=0.5)  # the PUBACKs never come: stop waits for them only so long
    assert [item["correlationId"] for item in bus.items] == [f"c{i}" for i in range(5)]
