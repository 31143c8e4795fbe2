"""Fuzzing dr.vtn's inbound paths: bus messages (acks, telemetry, status; per-VEN topics and bridge batches,
from the VEN's agent, the bridge or anybody) and every RPC entry point, with random JSON and mutated valid
payloads. Nothing escapes as an exception, every refused item is counted, no RPC answers `internal`, and no
state is created for made-up VENs.

`VDR_FUZZ_INPUTS` sets the number of inputs of each test (default 3,000; the closing figure was taken with
100,000).
"""

from __future__ import annotations

import os
import random
import string

import pytest
from dr_vtn_dispatcher.errors import api_call

from tests.unit.test_vtn_service import T0, Harness, iso

N = int(os.environ.get("VDR_FUZZ_INPUTS", "3000"))
VENS = ("ven-a", "ven-b")
SENDERS = ("dr.mqtt", "dr.ven.ven-a", "dr.ven.ven-b", "dr.web", "nobody", "")
KEYS = ("venId", "correlationId", "ok", "op", "error", "data", "eventId", "ts", "usedPowerKw", "shedPowerKw",
        "availableShedKw", "requestedReductionKw", "baselinePowerKw", "online", "items", "targetKw",
        "acceptedReduceKw", "startTime", "durationS", "endTime", "allVens", "venIds", "groups", "level", "kw",
        "priority", "programId", "name", "transport", "maxShedKw", "status", "group", "site")
WEIRD_TEXT = ("", " ", "a/b", "x" * 300, "\u202eevil", "nul\x00", "ven-a\n", "NaN", "Infinity", "1e999",
              "9" * 400, "2999-01-01T00:00:00Z", "-1", "true", "ven-a", "ven-b", "dr.mqtt")
WEIRD_NUMBERS = (0, -1, 1e308, -1e308, 10 ** 30, 2 ** 63, 0.5, 1e-300, 9892 * 10 ** 9, float("nan"),
                 float("inf"), True, False)


def junk(rng: random.Random, depth: int = 0):
    """A random JSON-like value (with the non-JSON floats a broken producer might send)."""
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice(WEIRD_NUMBERS)
    if kind == 2:
        return rng.choice(WEIRD_TEXT)
    if kind == 3:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.randrange(-10, 10)
    if kind == 5:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS) if rng.random() < 0.8 else junk_key(rng): junk(rng, depth + 1)
            for _ in range(rng.randrange(6))}


def junk_key(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + "_- ") for _ in range(rng.randrange(1, 80)))


def mutated(rng: random.Random, valid: dict) -> dict:
    out = dict(valid)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(3)
        if action == 0 and out:
            out.pop(rng.choice(sorted(out)))
        else:
            out[rng.choice(sorted(out)) if action == 1 and out else rng.choice(KEYS)] = junk(rng)
    return out


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    for ven_id in VENS:
        harness.register(ven_id, transport="mqtt", maxShedKw=5)
    harness.event(0, 3600, requestedReductionKw=4.0, eventId="fuzz-evt")
    yield harness
    harness.svc.stop()
    harness.store.close()


def test_fuzzed_bus_messages_never_escape_and_every_refusal_is_counted(h):
    rng = random.Random(1300)
    cmds = {c["venId"]: c for c in h.commands("event")}
    valid = {
        "ack": {"correlationId": cmds["ven-a"]["correlationId"], "op": "event", "ok": True, "venId": "ven-a",
                "data": {"targetKw": 2, "acceptedReduceKw": 2}},
        "telemetry": {"venId": "ven-b", "ts": iso(T0), "usedPowerKw": 3, "shedPowerKw": 1, "eventId": "fuzz-evt"},
        "status": {"venId": "ven-a", "online": True},
    }
    counters = h.svc.counters
    for i in range(N):
        kind = rng.choice(("ack", "telemetry", "status"))
        sender = "dr.mqtt" if rng.random() < 0.5 else rng.choice(SENDERS)  # half reach the parsers
        item = mutated(rng, valid[kind]) if rng.random() < 0.6 else junk(rng)
        if rng.random() < 0.5:
            ven_id = rng.choice((*VENS, "ghost", "a/b", "", "x" * 70))
            message = item
        else:
            ven_id = None
            message = {"items": [item, mutated(rng, valid[kind])]} if rng.random() < 0.8 else junk(rng)
        before = counters["badMessages"] + counters["senderMismatch"]
        errors = h.svc.ingest(kind, message, ven_id, sender=sender)
        assert isinstance(errors, list)
        assert len(errors) == counters["badMessages"] + counters["senderMismatch"] - before, (kind, message)
        if i % 500 == 0:
            h.clock.advance(0.5)
    assert set(h.svc.vens) == set(VENS)
    h.svc.flush()
    assert {row["ven_id"] for row in h.store.telemetry()} <= set(VENS)
    assert {row["ven_id"] for row in h.store.acks()} <= set(VENS)
    assert counters["ingestErrors"] == 0 and counters["storeErrors"] == 0


RPCS = ("get_event", "stop_event", "cancel_event", "event_metrics", "get_ven", "update_ven", "update_event",
        "create_event", "register_ven", "list_vens", "list_events")


def test_fuzzed_rpc_arguments_get_a_named_error_never_an_internal_one(h):
    rng = random.Random(1301)
    event = {"startTime": iso(T0 + 60), "durationS": 600, "requestedReductionKw": 1, "allVens": True}
    for _ in range(N):
        method = rng.choice(RPCS)
        if method in ("create_event", "register_ven"):
            args = (mutated(rng, event) if method == "create_event" and rng.random() < 0.7 else junk(rng),)
        elif method in ("update_ven", "update_event"):
            args = (rng.choice(("ven-a", "fuzz-evt", *WEIRD_TEXT)), junk(rng) if rng.random() < 0.5
                    else mutated(rng, event))
        elif method == "list_events":
            args = (rng.choice((None, "far", "active", *WEIRD_TEXT)), rng.choice((1, 100, *WEIRD_NUMBERS)),
                    rng.choice((0, 5, *WEIRD_NUMBERS)))[:rng.randrange(4)]
        elif method == "list_vens":
            args = tuple(junk(rng) for _ in range(rng.randrange(3)))
        else:
            args = (rng.choice((*WEIRD_TEXT, "fuzz-evt", "ven-a", 7, None, ["x"], {"a": 1})),)
        result = api_call(getattr(h.svc, method), *args)
        if isinstance(result, dict) and "error" in result:
            assert result["code"] in ("invalid", "not_found", "conflict"), (method, args, result)
            assert isinstance(result["field"], str) and result["field"]
    assert h.svc.counters["timerErrors"] == 0


CONFIG_KEYS = ("databaseUrl", "sqlitePath", "allocation", "simpleLevelsKw", "programs", "offlineTimeoutS",
               "dispatchToOffline", "retryInitialS", "retryFactor", "retryMaxS", "restoreRetryWindowS",
               "randomizeGranularityS", "flushIntervalS", "batchSize", "maxEventDurationS", "maxRequestedKw",
               "maxStartAheadS", "trustedBridges")


def test_fuzzed_configs_are_a_config_error_naming_a_key_or_a_valid_model():
    from dr_common.config import ConfigError
    from dr_vtn_dispatcher.config import VtnConfig, parse_config

    rng = random.Random(1302)
    valid = 0
    for _ in range(N):
        raw = {rng.choice(CONFIG_KEYS) if rng.random() < 0.9 else junk_key(rng): junk(rng)
               for _ in range(rng.randrange(4))} if rng.random() < 0.9 else junk(rng)
        try:
            config = parse_config(raw)
        except ConfigError as exc:
            assert exc.key and isinstance(exc.key, str)
            continue
        assert isinstance(config, VtnConfig)
        valid += 1
    assert 0 < valid < N
