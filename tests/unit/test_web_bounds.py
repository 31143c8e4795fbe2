"""dr.web's live state holds only what it should: VENs dr.vtn registered, at most `max_vens` of them, none
not heard from for `evict_s`; the site total counts registered VENs only. And its configuration: one
pydantic model, a placeholder token only on loopback."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from dr_common.config import ConfigError as CommonConfigError
from dr_web.config import ConfigError, WebConfig, parse_config
from dr_web.livestate import CAPACITY, UNREGISTERED, LiveState

T0 = 1_800_000_000.0
SITES = Path(__file__).resolve().parents[2] / "platform-config" / "sites"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tel(ven: str, used: float = 1.0, **extra):
    return {"venId": ven, "usedPowerKw": used, **extra}


# --- registered VENs only ---------------------------------------------------------------------------
def test_made_up_ven_ids_are_refused_and_counted_once_the_registry_is_known():
    clock = Clock()
    live = LiveState(clock=clock)
    live.set_registered(["ven-1"])
    batch = {"items": [tel(f"fake-{i:06d}", 1_000_000.0) for i in range(100_000)]}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    refused = live.on_message("dr/batch/telemetry", batch)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert refused == 100_000 and live.rejects.snapshot()["byReason"] == {UNREGISTERED: 100_000}
    assert live.latest == {} and live.history == {} and grown < 1_000_000
    live.on_message("dr/telemetry/ven-1", tel("ven-1", 2.5))
    assert list(live.latest) == ["ven-1"] and live.site_series()[-1]["usedPowerKw"] == 2.5


def test_the_site_total_counts_registered_vens_only():
    clock = Clock()
    live = LiveState(clock=clock)
    live.on_items([tel("ven-1", 3.0), tel("stray", 1e6)])  # registry not known yet: both held
    assert live.site_series()[-1]["usedPowerKw"] == 1_000_003.0
    clock.now += 5
    assert live.set_registered(["ven-1", "ven-2"]) == 1
    assert set(live.latest) == {"ven-1"} and "stray" not in live.history
    latest = live.site_series()[-1]
    assert latest["usedPowerKw"] == 3.0 and latest["vens"] == 1
    assert live.on_items([tel("stray", 1e6)]) == 1 and live.site_series()[-1]["usedPowerKw"] == 3.0


def test_a_ven_registered_through_the_api_survives_a_registry_read_from_before():
    clock = Clock()
    live = LiveState(clock=clock)
    live.set_registered([])
    asked_at = clock.now
    clock.now += 0.1
    live.add_registered("ven-new")  # registered while the refresh's RPC was in flight
    assert live.on_items([tel("ven-new")]) == 0
    live.set_registered([], asked_at)
    assert "ven-new" in live.latest and live.on_items([tel("ven-new")]) == 0
    clock.now += 120
    live.set_registered([], clock.now)  # a read taken after the registration: dr.vtn no longer has it
    assert "ven-new" not in live.latest


# --- hard cap and eviction --------------------------------------------------------------------------
def test_hard_cap_on_vens_refuses_new_ones_and_keeps_the_held_ones():
    live = LiveState(max_vens=100, clock=Clock())
    refused = live.on_items([tel(f"v-{i}") for i in range(1000)])
    assert refused == 900 and len(live.latest) == 100 and len(live.history) == 100
    assert live.rejects.snapshot()["byReason"] == {CAPACITY: 900}
    assert live.on_items([tel("v-5", 7.0)]) == 0 and live.latest["v-5"]["usedPowerKw"] == 7.0


def test_vens_not_heard_from_for_evict_s_are_dropped():
    clock = Clock()
    live = LiveState(evict_s=600.0, clock=clock)
    live.on_items([tel("old"), tel("kept")])
    clock.now += 400
    live.on_items([tel("kept")])
    clock.now += 300  # old: 700 s, kept: 300 s
    live.on_items([tel("new")])
    assert set(live.latest) == {"kept", "new"} and "old" not in live.history
    assert live.counters()["vensEvicted"] == 1
    clock.now += 1000
    assert live.evict() == 2 and live.latest == {}


def test_counters_say_why_telemetry_was_refused():
    live = LiveState(clock=Clock())
    live.set_registered(["a"])
    live.on_items([tel("b"), {"venId": "a", "usedPowerKw": "lots"}])
    counters = live.counters()
    assert counters["telemetryRejectedByReason"] == {UNREGISTERED: 1, "field:usedPowerKw": 1}
    assert counters["registryKnown"] is True and live.last_reason == "field:usedPowerKw"


def test_nan_inside_loads_is_refused_so_latest_stays_valid_json():
    live = LiveState(clock=Clock())
    assert live.on_items([tel("a", loads={"ev": {"powerKw": float("nan")}}),
                          tel("a", loads={"ev": {"powerKw": 10 ** 400}}),
                          tel("a", extraField=float("inf"))]) >= 2
    json.dumps(live.latest, allow_nan=False)


def test_a_ven_topic_speaks_for_that_ven_only():
    live = LiveState(clock=Clock())
    assert live.on_message("dr/telemetry/ven-b", tel("ven-a", 50.0)) == 1
    assert live.latest == {} and live.rejects.snapshot()["byReason"] == {"field:venId": 1}
    assert live.on_message("dr/telemetry/ven-b", {"usedPowerKw": 1.0}) == 0 and list(live.latest) == ["ven-b"]


def test_a_time_beyond_float_range_is_refused_not_raised():
    live = LiveState(clock=Clock())
    assert live.on_items([tel("a", ts=10 ** 400), tel("b")]) == 1
    assert list(live.latest) == ["b"] and live.rejects.total == 1


# --- configuration ------------------------------------------------------------------------------------
def test_one_config_error_and_camel_case_keys():
    assert ConfigError is CommonConfigError
    config = parse_config({"apiToken": "a-real-token-123", "maxVens": 50, "venEvictS": 120, "registryRefreshS": 5})
    assert (config.token(), config.max_vens, config.ven_evict_s, config.registry_refresh_s) == \
        ("a-real-token-123", 50, 120.0, 5.0)
    with pytest.raises(ConfigError) as err:
        parse_config({"api_token": 12345678})  # a wrong-typed secret
    assert err.value.key == "api_token" and "12345678" not in str(err.value)


@pytest.mark.parametrize("token", ["demo-token-change-me", "aggregator-token-change-me"])
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_a_shipped_placeholder_token_is_refused_beyond_loopback(token, host):
    with pytest.raises(ConfigError) as err:
        parse_config({"host": host, "api_token": token})
    assert err.value.key == "apiToken" and "placeholder" in str(err.value) and token not in str(err.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_a_placeholder_token_is_accepted_on_loopback(host):
    assert parse_config({"host": host, "api_token": "demo-token-change-me"}).token() == "demo-token-change-me"


def test_a_real_token_may_serve_beyond_loopback():
    assert parse_config({"host": "0.0.0.0", "api_token": "s3cret-Operator-Token"}).host == "0.0.0.0"


def test_shipped_site_configs_start():
    files = sorted(SITES.glob("*/web.json"))
    assert files, "no site ships a web.json"
    for path in files:
        config = parse_config(json.loads(path.read_text()))
        assert config.host in ("127.0.0.1", "::1", "localhost"), path


def test_the_token_is_never_rendered():
    config = WebConfig(api_token="very-secret-token-1")
    assert "very-secret-token-1" not in repr(config) and "very-secret-token-1" not in str(config.model_dump())


# --- fuzz: the bus and config parsers of dr.web never raise -------------------------------------------
HOSTILE = [None, True, 0, -1, 2 ** 63, 10 ** 400, 1e308, float("nan"), float("inf"), "", "NaN", "1e999", "9" * 5000,
           "a/b", "a\x00b", "a\u202eb", "ven-1\n", "x" * 5000, [], {}, [1, [2, [3]]], {"k": {"k": {"k": 1}}}]


def _mutated(rng, base: dict) -> object:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(HOSTILE)
    out = dict(base)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        key = rng.choice(list(base) + ["x" * rng.choice([3, 300]), "Ven_ID", "used-power-kw", "loads"])
        if action < 0.6:
            out[key] = rng.choice(HOSTILE)
        elif action < 0.8:
            out.pop(key, None)
        else:
            out[key] = {"ev": {"powerKw": rng.choice(HOSTILE), "action": rng.choice(HOSTILE)}}
    return out


def test_fuzz_telemetry_and_config_parsers_never_raise_and_count_every_refusal(figure):
    import random

    rng = random.Random(13)
    live = LiveState(clock=Clock(), max_vens=500)
    live.set_registered(f"ven-{i}" for i in range(50))
    base = {"venId": "ven-1", "usedPowerKw": 2.0, "shedPowerKw": 0.5, "ts": T0, "eventId": "evt-1",
            "loads": {"ev": {"powerKw": 1.0}}}
    items = refused = 0
    for _ in range(20_000):
        topic = rng.choice(["dr/telemetry/ven-1", "dr/telemetry/ven-2", "dr/telemetry/a\x00", "dr/batch/telemetry"])
        if topic == "dr/batch/telemetry":
            message = {"items": [_mutated(rng, base) for _ in range(rng.randint(0, 5))]} if rng.random() < 0.9 \
                else rng.choice(HOSTILE)
            items += len(message["items"]) if isinstance(message, dict) and isinstance(message.get("items"), list) \
                else 1
        else:
            message, items = _mutated(rng, base), items + 1
        refused += live.on_message(topic, message)
    assert live.received + live.rejected == items and live.rejected == refused
    assert sum(live.rejects.snapshot()["byReason"].values()) == live.rejected
    json.dumps(live.latest, allow_nan=False)
    config_base = {"host": "127.0.0.1", "port": 0, "api_token": "a-real-token-1", "refresh_s": 1}
    configs = bad = 0
    for _ in range(5_000):
        configs += 1
        try:
            parse_config(_mutated(rng, config_base))
        except ConfigError as exc:
            bad += 1
            assert exc.key and "a-real-token-1" not in str(exc)
    figure("dr.web fuzz: telemetry items / config entries", f"{items} items ({live.rejected} refused), "
           f"{configs} configs ({bad} refused), no exception")


def test_telemetry_is_bound_to_the_bus_sender() -> None:
    from dr_web.livestate import LiveState

    live = LiveState()
    tel = {"usedPowerKw": 3.0}
    assert live.on_message("dr/telemetry/ven-a", tel, "dr.ven.ven-a") == 0
    assert live.on_message("dr/telemetry/ven-a", tel, "dr.mqtt") == 0
    assert live.on_message("dr/telemetry/ven-a", tel, "dr.ven.ven-b") == 1
    assert live.on_message("dr/batch/telemetry", {"items": [{"venId": "ven-c", "usedPowerKw": 1.0}]},
                           "dr.ven.ven-c") == 1
    assert "ven-c" not in live.latest
    assert live.rejects.snapshot()["byReason"]["sender"] == 2
    live.trusted_bridges = frozenset({"pytest.client"})
    assert live.on_message("dr/batch/telemetry", {"items": [{"venId": "ven-c", "usedPowerKw": 1.0}]},
                           "pytest.client") == 0
    assert "ven-c" in live.latest
