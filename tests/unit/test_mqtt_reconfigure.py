"""Reconfiguring the bridge: a configuration is refused before the running bridge is touched when its TLS files
are missing or unusable; a usable one is fully built before the old bridge stops."""

from __future__ import annotations

import contextlib

from dr_mqtt_bridge import link as link_mod
from dr_mqtt_bridge.core import BridgeCore
from dr_mqtt_bridge.lifecycle import BridgeSlot


class Events:
    def __init__(self) -> None:
        self.log: list[str] = []


class FakeLink:
    def __init__(self, events: Events, broker, inbox, subscriptions, birth=None, log_packets=False) -> None:
        self.events, self.inbox, self.name = events, inbox, broker.client_id
        events.log.append(f"build {self.name}")

    def start(self) -> None:
        self.events.log.append(f"start {self.name}")
        self.inbox.put((link_mod.EV_CONNECTED, False))

    def stop(self) -> None:
        self.events.log.append(f"stop {self.name}")

    def publish(self, topic, payload, qos, retain=False):
        return link_mod.SUCCESS, 1

    def coalesced(self):
        return contextlib.nullcontext()


def _slot(events: Events, real_link_for: set[str] = frozenset()) -> BridgeSlot:
    def make_core(config, bus):
        if config.broker.client_id in real_link_for:
            return BridgeCore(config, bus)  # paho and the TLS context for real
        return BridgeCore(config, bus, link_factory=lambda *a, **k: FakeLink(events, *a, **k))

    return BridgeSlot(object(), make_core=make_core)


def _cfg(tmp_path, client_id: str, **broker) -> dict:
    return {"broker": {"client_id": client_id, **broker}, "store": {"path": str(tmp_path / f"{client_id}.sqlite")}}


def test_missing_tls_files_leave_the_running_bridge_untouched(tmp_path):
    events = Events()
    slot = _slot(events)
    assert slot.apply(_cfg(tmp_path, "one"))
    running = slot.core
    assert not slot.apply(_cfg(tmp_path, "two", tls={"ca_file": str(tmp_path / "missing-ca.pem")}))
    assert slot.core is running and events.log == ["build one", "start one"]
    assert "broker.tls.ca_file" in slot.config_error and "no such file" in slot.config_error
    slot.stop()


def test_unusable_certificates_are_found_before_the_old_bridge_stops(tmp_path):
    events = Events()
    slot = _slot(events, real_link_for={"bad-tls"})
    assert slot.apply(_cfg(tmp_path, "one"))
    running = slot.core
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    assert not slot.apply(_cfg(tmp_path, "bad-tls", tls={"ca_file": str(garbage)}))
    assert slot.core is running and running.health()["status"] in ("GOOD", "BAD")
    assert events.log == ["build one", "start one"]  # the old link was neither stopped nor rebuilt
    assert "cannot be built" in slot.config_error
    # the refused configuration's outbox was closed again: the same store can be used by the next one
    assert slot.apply(dict(_cfg(tmp_path, "three"), store={"path": str(tmp_path / "bad-tls.sqlite")}))
    assert events.log[-2:] == ["stop one", "start three"]
    slot.stop()


def test_a_good_configuration_is_built_before_the_old_bridge_stops(tmp_path):
    events = Events()
    slot = _slot(events)
    assert slot.apply(_cfg(tmp_path, "one"))
    assert slot.apply(_cfg(tmp_path, "two"))
    assert events.log == ["build one", "start one", "build two", "stop one", "start two"]
    assert slot.config_error is None and slot.core.config.broker.client_id == "two"
    slot.stop()
    assert events.log[-1] == "stop two"
