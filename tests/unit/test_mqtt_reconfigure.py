"""Reconfiguring the bridge: a configuration is refused before the running bridge is touched when its TLS files
are missing or unusable; a usable one is fully built before the old bridge stops."""

from __future__ import annotations

import contextlib

from dr_common.mqtt import link as link_mod
from dr_common.mqtt.core import BridgeCore
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


# --- the outbox classes through the core, while the broker is away ----------------------------------------
class OfflineLink(FakeLink):
    def start(self) -> None:  # never connects: everything goes to the outbox
        self.events.log.append(f"start {self.name}")


def _offline_core(tmp_path, **cfg) -> BridgeCore:
    from dr_common.mqtt.config import parse_config

    events = Events()
    core = BridgeCore(parse_config({"store": {"path": str(tmp_path / "o.sqlite"), "max_messages": 10}, **cfg}),
                      object(), link_factory=lambda *a, **k: OfflineLink(events, *a, **k))
    core.start()
    return core


def test_a_full_outbox_still_takes_restores_on_the_vtn_side(tmp_path):
    core = _offline_core(tmp_path)
    events = [{"venId": f"v{i}", "op": "event", "correlationId": f"e{i}", "requestedReductionKw": 1,
               "until": "2099-01-01T00:00:00Z"} for i in range(12)]
    assert core.send_batch(events) == {"sent": 0, "queued": 10, "refused": 2, "rejected": 0}
    restores = [{"venId": f"v{i}", "op": "restore", "correlationId": f"r{i}"} for i in range(12)]
    result = core.send_batch(restores)
    # with no telemetry to shed, restores push out the event commands, then use the reserve (a tenth: 1);
    # only beyond that hard bound is a restore refused
    assert result == {"sent": 0, "queued": 11, "refused": 1, "rejected": 0}
    status = core.status()
    assert status["outboxShed"] == 10 and status["backlog"] == 11 and status["rejects"] == {"outbox_full": 3}
    core.stop(timeout=0.2)


def test_a_full_outbox_sheds_telemetry_for_acks_on_the_ven_side(tmp_path):
    core = _offline_core(tmp_path, mode="ven", ven_id="home-1")
    for i in range(5):  # each report goes to ven/telemetry and oadr/meter: 10 rows
        core.on_bus_message("dr/telemetry/home-1", {"venId": "home-1", "usedPowerKw": 1.0, "ts": i})
    assert core.status()["backlog"] == 10
    result = core.on_bus_message("dr/ack/home-1", {"correlationId": "c1", "ok": True, "op": "restore"})
    assert result["queued"] == 1 and result["refused"] == 0 and core.status()["outboxShed"] == 1
    more = core.on_bus_message("dr/telemetry/home-1", {"venId": "home-1", "usedPowerKw": 1.0, "ts": 9})
    assert more["refused"] == 2  # telemetry does not push out telemetry
    core.stop(timeout=0.2)


def test_stale_telemetry_expires_from_the_outbox_of_the_core(tmp_path):
    from dr_common.mqtt.config import parse_config

    now = [5000.0]
    events = Events()
    core = BridgeCore(parse_config({"mode": "ven", "ven_id": "home-1", "store": {
        "path": str(tmp_path / "o.sqlite"), "max_messages": 4, "telemetry_ttl_s": 60}}), object(),
        link_factory=lambda *a, **k: OfflineLink(events, *a, **k), wall_clock=lambda: now[0])
    core.start()
    core.on_bus_message("dr/telemetry/home-1", {"venId": "home-1", "usedPowerKw": 1.0, "ts": 1})  # 2 rows
    core.on_bus_message("dr/ack/home-1", {"correlationId": "c1", "ok": True, "op": "event"})
    now[0] += 61
    # full: the stale telemetry expires first, so the new report takes its place without shedding
    result = core.on_bus_message("dr/telemetry/home-1", {"venId": "home-1", "usedPowerKw": 2.0, "ts": 2})
    status = core.status()
    assert result["queued"] == 2 and status["outboxExpired"] == 2 and status["outboxShed"] == 0
    assert status["backlog"] == 3
    core.stop(timeout=0.2)


def test_an_unexpected_error_is_counted_and_logged_once_a_minute(tmp_path, caplog, monkeypatch):
    from dr_common.mqtt import core as core_mod
    from dr_common.mqtt.config import parse_config

    core = BridgeCore(parse_config({"store": {"path": str(tmp_path / "o.sqlite")}}), object())
    monkeypatch.setattr(core_mod, "validate", lambda *a: 1 / 0)
    with caplog.at_level("WARNING"):
        for _ in range(100):
            core._handle_safely((link_mod.EV_MESSAGE, "ven/ack/v1", b"{}"), [])
    assert core.status()["rejects"] == {"internal_error": 100}
    lines = [r for r in caplog.records if "internal_error" in r.getMessage()]
    assert len(lines) == 1 and "ZeroDivisionError" in lines[0].getMessage()
