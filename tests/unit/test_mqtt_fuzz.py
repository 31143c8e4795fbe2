"""Fuzzing the bridge's inbound path: thousands of malformed MQTT payloads; nothing escapes, all are counted."""

from __future__ import annotations

import json

from dr_mqtt_bridge.config import parse_config
from dr_mqtt_bridge.core import BridgeCore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class NullBus:
    def publish(self, topic, message):
        raise AssertionError("the inbound path must not publish from the caller")


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


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(topic=TOPICS, payload=PAYLOADS)
def test_vtn_inbound_fuzz(topic, payload):
    _check(VTN, topic, payload)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
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
