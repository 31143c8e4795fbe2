"""Fuzzing the bridge's inbound parsers: MQTT payloads, bus messages to be sent, and configurations; nothing
escapes, every message ends in exactly one counter. VDR_FUZZ_SCALE multiplies the number of examples (the
default runs 5,100; VDR_FUZZ_SCALE=20 runs 102,000)."""

from __future__ import annotations

import json
import os

from dr_common.mqtt.config import parse_config
from dr_common.mqtt.core import BridgeCore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class NullBus:
    def publish(self, topic, message):
        raise AssertionError("the inbound path must not publish from the caller")


SCALE = max(1, int(os.environ.get("VDR_FUZZ_SCALE", "1")))
VTN = BridgeCore(parse_config({"dedup": {"window_s": 0}}), NullBus())
VEN = BridgeCore(parse_config({"mode": "ven", "ven_id": "home-1", "dedup": {"window_s": 0}}), NullBus())

TOPICS = st.sampled_from(["ven/ack/v1", "ven/telemetry/v1", "oadr/meter/v-2", "ven/status/v3", "ven/ack/a:b.c_d-e",
                          "ven/unknown/v1", "ven/ack/v1/extra"])
KEYS = st.sampled_from(["correlationId", "correlation_id", "ok", "op", "data", "venId", "ven", "ts", "usedPowerKw",
                        "shedPowerKw", "requestedReductionKw", "eventId", "baselinePowerKw", "online", "error",
                        "until", "durationS", "startTime", "targetKw", "acceptedReduceKw", "loads", "optOut", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["NaN", "inf", "-1e999", "1e308", "9" * 40, "2026-13-45T99:99:99Z", "", " ",
                                     "true", "v1", "v2", "../../etc", "\u0000", "0x10", "1e20", "-0"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)
OBJECTS = st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), JSON_VALUES, max_size=10)


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(_encode),
    OBJECTS.map(_encode),
    # near-valid acks and telemetry with one field broken
    st.builds(lambda k, v: _encode({"correlationId": "c1", "ok": True, "ts": "2026-05-01T14:00:00Z", k: v}),
              KEYS, JSON_VALUES),
    st.builds(lambda k, v: _encode({"venId": "v1", "usedPowerKw": 3.0, "ts": 1_780_000_000, k: v}),
              KEYS, JSON_VALUES),
    st.integers(min_value=1, max_value=200).map(lambda n: b"[" * n * 50 + b"]" * n * 50),
    st.just(b"{" + b'"a":' * 5000 + b"1" + b"}" * 5000),
)


def _check(core: BridgeCore, topic: str, payload: bytes) -> None:
    c = core.stats.counters
    before = (c["in"], c["in_accepted"] + c["duplicates"] + sum(core.stats.rejects.values()))
    core.on_mqtt_message(topic, payload)  # must not raise
    after = (c["in"], c["in_accepted"] + c["duplicates"] + sum(core.stats.rejects.values()))
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 1  # each message ends in exactly one counter


@settings(max_examples=2500 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(topic=TOPICS, payload=PAYLOADS)
def test_vtn_inbound_fuzz(topic, payload):
    _check(VTN, topic, payload)


@settings(max_examples=1000 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.one_of(PAYLOADS, st.builds(
    lambda k, v: _encode({"op": "event", "correlationId": "k", "requestedReductionKw": 1, "durationS": 60, k: v}),
    KEYS, JSON_VALUES)))
def test_ven_inbound_fuzz(payload):
    _check(VEN, "ven/cmd/home-1", payload)


def test_fuzz_saw_thousands_and_counted_every_one():
    # runs after the two fuzz tests above (pytest keeps file order)
    total = VTN.stats.counters["in"] + VEN.stats.counters["in"]
    assert total >= 3000
    for core in (VTN, VEN):
        c = core.stats.counters
        assert c["in"] == c["in_accepted"] + c["duplicates"] + sum(core.stats.rejects.values())
        assert sum(core.stats.rejects.values()) > 0
        assert core.stats.rejects.get("internal_error", 0) == 0
    assert {"invalid_json", "schema"} <= set(VTN.stats.rejects)
    assert "bad_topic" in VTN.stats.rejects


# --- configurations: only ConfigError, naming a key, and never a secret's value ----------------------------
CONFIG_KEYS = st.sampled_from(["mode", "ven_id", "broker", "qos", "outbound", "inbound", "batch", "store", "dedup",
                               "max_payload_bytes", "status_topic", "status_retain", "publish_chunk", "host",
                               "port", "client_id", "username", "password", "tls", "ca_file", "insecure",
                               "max_items", "max_messages", "telemetry_ttl_s", "bus", "mqtt", "kind", "batch",
                               "items_key", "priority", "maxItems", "clientId", "x"])
CONFIGS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(CONFIG_KEYS, inner, max_size=5)),
                       max_leaves=10)
CONFIG_SEEN = {"n": 0, "errors": 0}


@settings(max_examples=1000 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.one_of(CONFIGS, st.builds(lambda b: {"broker": b}, st.dictionaries(CONFIG_KEYS, CONFIGS, max_size=4)),
                     st.builds(lambda p: {"broker": {"username": "u", "password": p}}, SCALARS)))
def test_config_fuzz(raw):
    from dr_common.config import ConfigError

    CONFIG_SEEN["n"] += 1
    try:
        parse_config(raw)
    except ConfigError as exc:
        CONFIG_SEEN["errors"] += 1
        assert exc.key
        password = raw.get("broker", {}).get("password") if isinstance(raw, dict) and isinstance(
            raw.get("broker"), dict) else None
        if isinstance(password, str) and len(password) >= 6:
            assert password not in str(exc)


# --- bus -> MQTT: every item sent, queued, refused or rejected ----------------------------------------------
class _OfflineLink:
    def __init__(self, broker, inbox, subscriptions, birth=None, log_packets=False) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


BUS_ITEMS = st.one_of(JSON_VALUES, st.builds(lambda v, k, x: {"venId": v, "op": "event", k: x},
                                              st.one_of(st.sampled_from(["v1", "v-2", "a/b", "", "+"]),
                                                        st.text(max_size=70)), KEYS, JSON_VALUES))
BUS_SEEN = {"n": 0}


@settings(max_examples=600 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(items=st.lists(BUS_ITEMS, max_size=6), form=st.sampled_from(["commands", "columns", "raw"]))
def test_bus_batch_fuzz(tmp_path_factory, items, form):
    core = _BUS_CORE.get("core")
    if core is None:
        path = tmp_path_factory.mktemp("fuzz") / "outbox.sqlite"
        core = BridgeCore(parse_config({"store": {"path": str(path), "max_messages": 500}}), NullBus(),
                          link_factory=_OfflineLink)
        core.start()
        _BUS_CORE["core"] = core
    message = {"commands": items} if form == "commands" else {"columns": {"venId": items}} if form == "columns" \
        else items
    result = core.on_bus_message("dr/batch/cmd", message)  # must not raise
    BUS_SEEN["n"] += 1
    assert set(result) == {"sent", "queued", "refused", "rejected"} and all(v >= 0 for v in result.values())


_BUS_CORE: dict = {}


def test_fuzz_of_configs_and_bus_batches_ran():
    assert CONFIG_SEEN["n"] >= 1000 and CONFIG_SEEN["errors"] > 0
    assert BUS_SEEN["n"] >= 500
    core = _BUS_CORE.pop("core")
    assert core.stats.rejects.get("internal_error", 0) == 0
    core.stop(timeout=0.2)
