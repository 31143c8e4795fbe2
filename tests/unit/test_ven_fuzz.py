"""Fuzz of every inbound path of the VEN core: commands, device readings, config. Nothing escapes, every refusal
is an `ok: false` ack naming a field and is counted."""

from __future__ import annotations

import json
import random
from typing import Any

from dr_common.config import ConfigError
from dr_common.payloads import Ack
from dr_ven_load_control.config import parse_config
from tests.unit.test_ven_harness import SiteHarness, ven_config

VALUES: list[Any] = [None, True, False, 0, -1, 1, 2.5, 1e6, 1e308, -1e308, 10**400, float("nan"), float("inf"),
                     "", " ", "x" * 300, "2999-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "ven-demo", "ven-other",
                     "a/b", "\x00", "\u202e", "event", "restore", "ping", "shedPanel", [], ["Laundry"], [1, 2],
                     {}, {"a": 1}, 253402300799000, 1_800_000_060, "1800000060"]
KEYS = ["op", "operation", "correlationId", "cid", "venId", "eventId", "requestedReductionKw", "kw", "until",
        "startTime", "durationS", "modificationNumber", "circuits", "loads", "priority", "test", "issuedAt",
        "unknownField", "x" * 100]


def mutate(rng: random.Random, base: dict[str, Any]) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(VALUES)
    if roll < 0.1:
        text = json.dumps(base)
        cut = rng.randrange(len(text))
        return text[:cut] + rng.choice(["", "}", "\x00", "NaN", "1e999"]) + text[cut + 1:]
    out = dict(base)
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(KEYS)
        if rng.random() < 0.2:
            out.pop(key, None)
        else:
            out[key] = rng.choice(VALUES)
    return out


def test_commands_fuzz_never_raise_and_every_refusal_is_counted():
    site = SiteHarness()
    site.run(30)
    rng = random.Random(13)
    base = {"op": "event", "correlationId": "f", "eventId": "fz", "requestedReductionKw": 2.0, "durationS": 300}
    refused = 0
    for i in range(3000):
        payload = mutate(rng, {**base, "correlationId": f"f{i}"})
        if site.engine.meter_uncertain():
            site.engine.on_meter_live(site.meter_kw())
        outcome = site.engine.on_command(payload)
        ack = Ack.from_payload(outcome.ack.to_payload())
        if not ack.ok:
            refused += 1
            assert ack.error and "field '" in ack.error, ack.error
        site.execute(outcome.ops)
        if i % 50 == 0:
            site.run(1)
    status = site.engine.status()
    assert refused > 500
    assert status["rejects"]["total"] == status["counters"]["refused_commands"] >= refused
    assert status["counters"]["commands"] == 3000


def test_device_readings_fuzz_never_raise():
    site = SiteHarness()
    site.run(30)
    site.command(op="event", correlationId="e", eventId="e", requestedReductionKw=2.0, durationS=300)
    rng = random.Random(7)
    paths = site.cfg.device_paths + ["demo/unknown"]
    for _ in range(2000):
        path = rng.choice(paths)
        values = site.values(path) if path in site.models else {}
        if rng.random() < 0.1:
            values = rng.choice(VALUES)
        else:
            for _ in range(rng.randint(0, 3)):
                values[rng.choice(list(values) or ["PowerKw"])] = rng.choice(VALUES)
        site.execute(site.engine.on_device(path, values))
    assert site.engine.telemetry() is not None


def test_config_fuzz_raises_only_config_error():
    rng = random.Random(5)
    base = ven_config()
    for _ in range(1500):
        data = json.loads(json.dumps(base))
        target = data if rng.random() < 0.5 else rng.choice(data["loads"])
        key = rng.choice(list(target) + ["limits", "speed", "liveReadAfterShedS"])
        target[key] = rng.choice(VALUES)
        try:
            parse_config(data)
        except ConfigError as exc:
            assert exc.key


def test_a_stream_of_bad_readings_is_logged_once_a_minute_and_counted(caplog):
    site = SiteHarness()
    site.run(30)
    problems = site.engine.counters["problems"]
    with caplog.at_level("ERROR", logger="dr_ven_load_control.engine"):
        for _ in range(200):
            site.engine.on_device("demo/meter", {"PowerKw": "broken"})
    assert site.engine.counters["problems"] == problems + 200
    assert len([r for r in caplog.records if "PowerKw missing" in r.getMessage()]) == 1
    site.clock.now += 61
    with caplog.at_level("ERROR", logger="dr_ven_load_control.engine"):
        site.engine.on_device("demo/meter", {"PowerKw": "broken"})
    assert "199 more like it suppressed" in caplog.records[-1].getMessage()
