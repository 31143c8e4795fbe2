"""Fuzz run of the historian's inbound paths: the DR bus intake (dr_records.convert) and every RPC of the API.

No exception escapes the intake; an RPC answers or raises QueryError naming an argument (counted), never an
internal error (rpcFailures stays 0). Seeded, so a failure can be replayed; VDR_FUZZ_N scales the run."""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from dr_historian.api import HistorianApi
from dr_historian.config import parse_config
from dr_historian.dr_records import convert
from dr_historian.schema import Point, QueryError
from dr_historian.store import Store

UTC = timezone.utc
NOW = datetime(2026, 7, 15, 14, tzinfo=UTC)
N_INTAKE = int(os.environ.get("VDR_FUZZ_N", "100000"))
N_RPC = max(1, N_INTAKE // 10)

SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 2 ** 63, 10 ** 400, 1e308, -1e308, 1e-320, float("nan"), float("inf"),
    float("-inf"), 0.5, "", " ", "NaN", "Infinity", "1e999", "9" * 5000, "x" * 70_000, "a/b", "a\x00b", "a\u202eb",
    "ven-1\n", "..", "%", "_", "*", "[", "[a-", "\\", "2999-12-31T23:59:59Z", "9892-01-01T00:00:00Z",
    "now -1h", "now -99999999w", "now +1d", "2026-07-15T12:00:00Z", 1784116800, 1784116800000, "15m", "1h", "0s",
    "avg", "AVG", "median", "FIRST_TO_LAST", "LAST_TO_FIRST", "m/p", "M/P", "dr/telemetry/*/usedPowerKw",
    "^(([a-z0-9-]+)/?)*!$", "ev-1", "caiso-10in10", "ven-reported", "UTC", "Mars/Olympus", [], {}, [1, 2],
    ["m/p"], ["m/p", "m/q"], ["m/p"] * 200, {"a": 1}, [[[[[]]]]],
]
TOPICS = ["dr/telemetry/ven1", "dr/telemetry/a/b", "dr/telemetry/", "dr/cmd/ven1", "dr/ack/ven1", "dr/batch/telemetry",
          "dr/batch/cmd", "dr/batch/ack", "dr/batch/status", "dr/event/ev1", "dr/other"]
TELEMETRY = {"venId": "ven1", "ts": "2026-07-15T14:00:00Z", "usedPowerKw": 3.5, "shedPowerKw": 1.0,
             "baselinePowerKw": 4.5, "requestedReductionKw": 1.0, "eventId": "ev1", "optOut": False}
COMMAND = {"op": "event", "correlationId": "c1", "eventId": "ev1", "venId": "ven1", "requestedReductionKw": 2.0,
           "startTime": "2026-07-15T14:00:00Z", "until": "2026-07-15T15:00:00Z", "issuedAt": "2026-07-15T13:59:00Z"}
ACK = {"venId": "ven1", "correlationId": "c1", "ok": True, "ts": "2026-07-15T14:00:01Z", "acceptedReduceKw": 2.0}


def _mutate(rng: random.Random, payload: dict[str, Any]) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(SCALARS)
    out = dict(payload)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*payload, "x" * rng.choice([3, 300]), "items", "commands"])
        if rng.random() < 0.2:
            out.pop(key, None)
        else:
            out[key] = rng.choice(SCALARS)
    return out


def _message(rng: random.Random, topic: str) -> Any:
    base = ACK if "ack" in topic else COMMAND if "cmd" in topic else TELEMETRY
    if topic.startswith("dr/batch/"):
        key = "commands" if topic.endswith("cmd") else "items"
        items = [_mutate(rng, base) for _ in range(rng.randint(0, 4))]
        if topic.endswith("status"):
            items = [{"venId": rng.choice(["ven1", "a/b", 5]), "online": rng.choice(SCALARS)} for _ in items]
        return rng.choice([{key: items}, {key: rng.choice(SCALARS)}, rng.choice(SCALARS)])
    return _mutate(rng, base)


def test_dr_intake_never_raises(figure):
    rng = random.Random(20261205)
    points = errors = 0
    t0 = time.perf_counter()
    for _ in range(N_INTAKE):
        topic = rng.choice(TOPICS)
        headers = rng.choice([{}, {"TimeStamp": rng.choice(SCALARS)}, None])
        out = convert(topic, headers, _message(rng, topic), NOW)
        points += len(out.points)
        errors += len(out.errors)
    elapsed = time.perf_counter() - t0
    figure("historian DR intake fuzz", f"{N_INTAKE:,} messages in {elapsed:.1f} s: {points:,} readings, "
                                       f"{errors:,} refusals counted, no exception")
    assert errors > 0 and points > 0


@pytest.fixture
def api(tmp_path):
    config = parse_config({"connection": {"url": f"sqlite:///{tmp_path / 'fuzz.sqlite'}"}})
    store = Store(config.url)
    store.setup()
    store.write([Point("m/p", NOW + timedelta(minutes=i), float(i)) for i in range(30)])
    yield HistorianApi(lambda: store, lambda: config)
    store.dispose()


def test_rpcs_answer_or_name_the_argument(api, figure):
    rng = random.Random(7)
    calls = {
        "query": (api.query, ("topic", "start", "end", "agg_type", "agg_period", "skip", "count", "order")),
        "get_topics_by_pattern": (api.topics_by_pattern, ("pattern",)),
        "get_topics_metadata": (api.topics_metadata, ("topics",)),
        "event_performance": (api.event_performance, ("event_id", "methods", "interval_minutes", "timezone",
                                                      "include_plot")),
        "baseline": (api.baseline, ("topic", "start", "end", "baseline_method", "interval_minutes", "timezone")),
    }
    answered = refused = 0
    t0 = time.perf_counter()
    for _ in range(N_RPC):
        name = rng.choice(list(calls))
        fn, params = calls[name]
        kwargs = {p: rng.choice(SCALARS) for p in params if rng.random() < 0.7}
        if name in ("query", "baseline") and "topic" not in kwargs:
            kwargs["topic"] = "m/p"
        if name == "baseline":
            kwargs.setdefault("start", "2026-07-15T14:00:00Z")
            kwargs.setdefault("end", "2026-07-15T15:00:00Z")
        if name == "get_topics_by_pattern":
            kwargs.setdefault("pattern", "m/")
        if name == "get_topics_metadata":
            kwargs.setdefault("topics", "m/p")
        if name == "event_performance":
            kwargs.setdefault("event_id", "ev-1")
        try:
            api.guarded(name, lambda fn=fn, kwargs=kwargs: fn(**kwargs))
            answered += 1
        except QueryError as exc:
            assert exc.field
            refused += 1
    elapsed = time.perf_counter() - t0
    snapshot = api.snapshot()
    figure("historian RPC fuzz", f"{N_RPC:,} calls in {elapsed:.1f} s: {answered:,} answered, {refused:,} refused "
                                 f"naming the argument, {snapshot['rpcFailures']} internal failures")
    assert snapshot["rpcFailures"] == 0
    assert snapshot["rpcRejects"]["total"] == refused > 0 and answered > 0
