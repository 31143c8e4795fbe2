"""The shared library's trust rules: one identifier rule, strict JSON numbers, bounded caches, one ConfigError,
rate-limited logs."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from dr_common import schema
from dr_common.config import ConfigError, ConfigModel, check_secret_binding, load_model
from dr_common.payloads import Ack, Command, EventRequest, Telemetry, VenRegistration
from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_common.schema import PayloadError, check_id, decode_json, is_valid_id
from dr_common.timeutil import UTC, parse_time


@pytest.mark.parametrize("bad", ["a/b", "a\x00b", "a\u202eb", "ven-1\n", "", "x" * 65, "-lead", " ", "é"])
def test_identifier_rule_refuses(bad: str) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(PayloadError) as err:
        check_id(bad, "eventId")
    assert err.value.field == "eventId"


@pytest.mark.parametrize("good", ["ven-1", "A", "evt_2026.12:05", "x" * 64])
def test_identifier_rule_accepts(good: str) -> None:
    assert check_id(good, "venId") == good


def _event(**extra: object) -> dict[str, object]:
    start = datetime(2026, 12, 5, 14, tzinfo=UTC)
    return {"startTime": start.isoformat(), "endTime": (start + timedelta(hours=1)).isoformat(),
            "requestedReductionKw": 2, "allVens": True, **extra}


@pytest.mark.parametrize("field,value", [("eventId", "a/b"), ("programId", "p\u202e"), ("groups", ["g\x00"]),
                                         ("venIds", ["ven/1"])])
def test_every_id_field_of_an_event_follows_the_rule(field: str, value: object) -> None:
    payload = _event(**{field: value})
    payload.pop("allVens")
    with pytest.raises(PayloadError) as err:
        EventRequest.from_payload(payload)
    assert err.value.field == field


def test_registration_and_command_ids_follow_the_rule() -> None:
    with pytest.raises(PayloadError):
        VenRegistration.from_payload({"venId": "ven/1"})
    with pytest.raises(PayloadError) as err:
        Command.from_payload({"op": "restore", "eventId": "a/b"})
    assert err.value.field == "eventId"


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e999}',
                                 b'{"a": ' + b"9" * 4400 + b"}", b'{"a": ' + b"9" * 400 + b"}"])
def test_decode_json_refuses_non_finite_and_huge_numbers(raw: bytes) -> None:
    with pytest.raises(PayloadError) as err:
        decode_json(raw)
    assert err.value.field == "<payload>"


def test_decode_json_keeps_ordinary_numbers() -> None:
    assert decode_json(b'{"a": 1.5, "b": -3, "c": 1e300}') == {"a": 1.5, "b": -3, "c": 1e300}


def test_nested_non_finite_value_is_named() -> None:
    with pytest.raises(PayloadError) as err:
        Telemetry.from_payload({"venId": "v1", "usedPowerKw": 1.0, "loads": {"ev": {"kw": float("nan")}}})
    assert err.value.field == "loads"
    with pytest.raises(PayloadError) as err:
        Telemetry.from_payload({"venId": "v1", "usedPowerKw": 10 ** 400})
    assert err.value.field == "usedPowerKw"


def test_long_keys_are_not_cached_and_very_long_keys_refused() -> None:
    schema._normalize_cached.cache_clear()
    for i in range(50):
        schema.normalize_key("k" * 100 + str(i))
    assert schema._normalize_cached.cache_info().currsize == 0
    with pytest.raises(PayloadError):
        Telemetry.from_payload({"venId": "v1", "usedPowerKw": 1.0, "x" * 60_000: 1})


def test_epoch_milliseconds_are_bounded_like_iso_times() -> None:
    year_9892_ms = (datetime(9892, 1, 1, tzinfo=UTC).timestamp()) * 1000
    with pytest.raises(ValueError):
        parse_time(year_9892_ms)
    with pytest.raises(ValueError):
        parse_time(str(int(year_9892_ms)))
    with pytest.raises(ValueError):
        parse_time("2999-12-31T23:59:59Z".replace("2999", "3000"))


class _Cfg(ConfigModel):
    port: int = 8080
    bind_host: str = "127.0.0.1"
    password: SecretStr | None = None


def test_load_model_names_the_key_and_never_the_value() -> None:
    assert load_model(_Cfg, {"bindHost": "0.0.0.0"}).bind_host == "0.0.0.0"
    assert load_model(_Cfg, {"bind_host": "::1"}).bind_host == "::1"
    with pytest.raises(ConfigError) as err:
        load_model(_Cfg, {"password": 12345678})
    assert err.value.key == "password" and "12345678" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_model(_Cfg, {"prot": 1})
    assert err.value.key == "prot"
    with pytest.raises(ConfigError):
        load_model(_Cfg, [1, 2])


def test_placeholder_secret_only_on_loopback() -> None:
    check_secret_binding("apiToken", "demo-token-change-me", "127.0.0.1")
    check_secret_binding("apiToken", "demo-token-change-me", "localhost")
    check_secret_binding("apiToken", "s3cr3t-9f8e7d", "0.0.0.0")
    with pytest.raises(ConfigError) as err:
        check_secret_binding("apiToken", "demo-token-change-me", "0.0.0.0")
    assert "demo-token" not in str(err.value)


def test_rate_limited_log_says_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t.rl"), interval_s=60, clock=lambda: now[0], max_keys=2)
    with caplog.at_level(logging.WARNING, logger="t.rl"):
        assert rl.warning("ven-a", "bad %s", 1)
        for _ in range(999):
            assert not rl.warning("ven-a", "bad %s", 2)
        now[0] = 61
        assert rl.warning("ven-a", "bad %s", 3)
    assert len(caplog.records) == 2
    assert "999 more like it suppressed" in caplog.records[1].getMessage()
    rl.warning("b", "x")
    rl.warning("c", "x")
    assert len(rl._seen) == 2


def test_reject_counter_is_bounded() -> None:
    c = RejectCounter()
    for i in range(1000):
        c.count(f"reason-{i}")
    snap = c.snapshot()
    assert snap["total"] == 1000
    assert len(snap["byReason"]) <= 257 and snap["byReason"]["other"] == 1000 - 256


def test_device_models_raise_the_one_config_error() -> None:
    from dr_devices import ConfigError as DeviceConfigError
    from dr_devices import build_device

    assert DeviceConfigError is ConfigError
    with pytest.raises(ConfigError) as err:
        build_device("toaster", {})
    assert err.value.key == "type"


def test_integer_times_beyond_float_range_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_time(10 ** 400)
    with pytest.raises(PayloadError) as err:
        Command.from_payload({"op": "event", "requestedReductionKw": 1, "until": 10 ** 400})
    assert err.value.field == "until"


def test_huge_integers_where_text_is_expected_are_refused() -> None:
    with pytest.raises(PayloadError) as err:
        Telemetry.from_payload({"venId": 10 ** 5000, "usedPowerKw": 1.0})
    assert err.value.field == "venId"
    with pytest.raises(PayloadError) as err:
        Ack.from_payload({"correlationId": 10 ** 5000, "ok": True})
    assert err.value.field == "correlationId"
    with pytest.raises(PayloadError) as err:
        Command.from_payload({"op": "event", "requestedReductionKw": 1, "durationS": 60, "circuits": [10 ** 5000]})
    assert err.value.field == "circuits"
