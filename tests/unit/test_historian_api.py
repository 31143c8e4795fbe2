"""The historian's RPC surface: glob topic search (no user regex), bounded answers, bad input named and counted,
database errors behind an error id, bounded memory for made-up VENs."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
from dr_historian.api import HistorianApi, HistorianUnavailable, parse_query_time
from dr_historian.config import parse_config
from dr_historian.dr_records import convert
from dr_historian.schema import Point, QueryError
from dr_historian.store import Store

UTC = timezone.utc
T0 = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
LIMITS = {"default_count": 5, "max_count": 20, "max_topics": 3, "max_topic_results": 4}


@pytest.fixture
def setup(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    config = parse_config({"connection": {"url": url}, "query": LIMITS})
    store = Store(config.url)
    store.setup()
    now = [0.0]
    api = HistorianApi(lambda: store, lambda: config, clock=lambda: now[0])
    yield store, api, config, now
    store.dispose()


def test_redos_pattern_from_the_field_answers_at_once(setup, figure):
    store, api, _, _ = setup
    name = "a" * 13 + "/" + "b" * 13  # Python's re needs about 5 s for this one name, 19 s at 14 + 14
    glob_match = "^((x+)/q)zz!$"  # the pattern read as a glob: [a-z0-9-] one character, ? one, * any run
    store.write([Point(name, T0, 1.0), Point("dr/telemetry/v1/usedPowerKw", T0, 2.0), Point(glob_match, T0, 3.0)])
    t0 = time.perf_counter()
    got = api.guarded("get_topics_by_pattern", lambda: api.topics_by_pattern("^(([a-z0-9-]+)/?)*!$"))
    elapsed = time.perf_counter() - t0
    figure("historian topic search, the 15.5 s regex of the field", f"{elapsed * 1000:.1f} ms")
    # matched as a glob, never run as a regular expression (which would match no topic here, slowly)
    assert list(got) == [glob_match]


def test_glob_prefix_and_contains_matching(setup):
    store, api, _, _ = setup
    names = ("histapi/dev/A", "histapi/dev/B", "histapi/dev/C", "dr/telemetry/v1/usedPowerKw",
             "dr/telemetry/v2/usedPowerKw", "dr/telemetry/v2/shedPowerKw", "x/a_b", "x/aXb", "x/100%")
    store.write([Point(t, T0, 1.0) for t in names])
    assert set(api.topics_by_pattern("histapi/dev/[AB]")) == {"histapi/dev/A", "histapi/dev/B"}
    assert set(api.topics_by_pattern("DR/telemetry/*/usedpowerkw")) == {"dr/telemetry/v1/usedPowerKw",
                                                                        "dr/telemetry/v2/usedPowerKw"}
    assert set(api.topics_by_pattern("dr/telemetry/v?/shed*")) == {"dr/telemetry/v2/shedPowerKw"}
    assert set(api.topics_by_pattern("a_b")) == {"x/a_b"}  # LIKE's wildcards are plain characters
    assert set(api.topics_by_pattern("100%")) == {"x/100%"}
    assert len(api.topics_by_pattern("/")) == LIMITS["max_topic_results"]
    assert len(api.topic_list()) == LIMITS["max_topic_results"]


@pytest.mark.parametrize("pattern, field", [("", "topic_pattern"), ("x" * 257, "topic_pattern"), (5, "topic_pattern"),
                                            ("a\nb", "topic_pattern")])
def test_bad_patterns_are_named(setup, pattern, field):
    _, api, _, _ = setup
    with pytest.raises(QueryError) as err:
        api.guarded("get_topics_by_pattern", lambda: api.topics_by_pattern(pattern))
    assert err.value.field == field


def test_query_count_has_a_default_and_a_maximum(setup):
    store, api, _, _ = setup
    store.write([Point("m/p", T0 + timedelta(seconds=i), float(i)) for i in range(50)])
    assert len(api.query("m/p")["values"]) == LIMITS["default_count"]
    assert len(api.query("m/p", count=20)["values"]) == 20
    assert len(api.query(["m/p", "m/q"])["values"]["m/p"]) == LIMITS["default_count"]
    with pytest.raises(QueryError) as err:
        api.query("m/p", count=21)
    assert err.value.field == "count" and "20" in str(err.value)
    last = api.query("m/p", count=2, skip=1, order="LAST_TO_FIRST")["values"]
    assert [v for _, v in last] == [48.0, 47.0]


@pytest.mark.parametrize("kwargs, field", [
    ({"topic": ["a", "b", "c", "d"]}, "topic"), ({"topic": ["a", 3]}, "topic[1]"), ({"topic": "a\x00b"}, "topic"),
    ({"topic": "x" * 513}, "topic"), ({"topic": None}, "topic"), ({"topic": "a", "start": "yesterday"}, "start"),
    ({"topic": "a", "end": "9" * 400}, "end"), ({"topic": "a", "count": True}, "count"),
    ({"topic": "a", "count": "5"}, "count"), ({"topic": "a", "skip": -1}, "skip"),
    ({"topic": "a", "order": "SIDEWAYS"}, "order"), ({"topic": "a", "agg_type": "avg"}, "agg_period"),
    ({"topic": "a", "agg_type": "avg", "agg_period": "9" * 5000}, "agg_period"),
    ({"topic": "a", "agg_type": ["avg"], "agg_period": "1h"}, "agg_type"),
    ({"topic": "a", "start": "2026-07-15T12:00:00Z", "end": "2026-07-15T11:00:00Z"}, "end"),
])
def test_bad_query_arguments_are_named_and_counted(setup, kwargs, field):
    store, api, _, _ = setup
    store.write([Point("a", T0, 1.0)])
    with pytest.raises(QueryError) as err:
        api.guarded("query", lambda: api.query(**kwargs))
    assert err.value.field == field
    assert api.snapshot()["rpcRejects"]["byReason"] == {f"query.{field}": 1}


def test_relative_times_like_volttron():
    now = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    assert parse_query_time("now", "start", now) == now
    assert parse_query_time("now -1d -1h -20m", "start", now) == now - timedelta(days=1, hours=1, minutes=20)
    assert parse_query_time("2026-07-15T10:00:00Z", "start", now) == datetime(2026, 7, 15, 10, tzinfo=UTC)


def test_refusals_are_logged_once_a_minute(setup, caplog):
    _, api, _, now = setup
    with caplog.at_level(logging.WARNING, logger="dr_historian.api"):
        for _ in range(500):
            with pytest.raises(QueryError):
                api.guarded("query", lambda: api.query("a", count=-1))
        now[0] = 61.0
        with pytest.raises(QueryError):
            api.guarded("query", lambda: api.query("a", count=-1))
    lines = [r.getMessage() for r in caplog.records if r.name == "dr_historian.api"]
    assert len(lines) == 2 and "499 more like it suppressed" in lines[1]
    assert api.snapshot()["rpcRejects"]["total"] == 501


def test_database_errors_reach_the_caller_only_as_an_error_id(setup, tmp_path, caplog):
    store, api, _, _ = setup
    store.write([Point("secret/topic", T0, 1.0)])
    with sqlite3.connect(tmp_path / "api.sqlite") as conn:
        conn.execute("DROP TABLE data")
    with caplog.at_level(logging.ERROR, logger="dr_historian.api"), pytest.raises(HistorianUnavailable) as err:
        api.guarded("query", lambda: api.query("secret/topic", start="2026-07-15T00:00:00Z"))
    message = str(err.value)
    error_id = re.search(r"error id ([0-9a-f]{12})", message).group(1)
    for leak in ("SELECT", "data", "no such table", "2026-07-15", "secret", "sqlite"):
        assert leak not in message
    logged = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert logged and "no such table" in logged[0]
    assert api.snapshot()["rpcFailures"] == 1


def test_an_unexpected_failure_is_hidden_too(setup):
    _, api, _, _ = setup

    def broken() -> None:
        raise KeyError("internal detail")

    with pytest.raises(HistorianUnavailable) as err:
        api.guarded("baseline", broken)
    assert "internal detail" not in str(err.value) and "error id" in str(err.value)


@pytest.mark.parametrize("call, field", [
    (lambda api: api.event_performance("a/b"), "eventId"),
    (lambda api: api.event_performance("x" * 65), "eventId"),
    (lambda api: api.event_performance("ev1", methods=["guess"]), "methods"),
    (lambda api: api.event_performance("ev1", interval_minutes=7), "interval_minutes"),
    (lambda api: api.event_performance("ev1", interval_minutes=1.5), "interval_minutes"),
    (lambda api: api.event_performance("ev1", timezone="Mars/Olympus"), "timezone"),
    (lambda api: api.event_performance("ev1", include_plot="yes"), "include_plot"),
    (lambda api: api.baseline("m/p", "2026-07-01T00:00:00Z", "2026-09-01T00:00:00Z"), "end"),
    (lambda api: api.baseline("m/p", None, "2026-07-01T00:00:00Z"), "start"),
    (lambda api: api.baseline("m/p", "2026-07-01T00:00:00Z", "2026-07-02T00:00:00Z", "ven-reported"),
     "baseline_method"),
])
def test_mv_arguments_are_named(setup, call, field):
    _, api, _, _ = setup
    with pytest.raises(QueryError) as err:
        api.guarded("mv", lambda: call(api))
    assert err.value.field == field


def test_unknown_event_is_not_found(setup):
    _, api, _, _ = setup
    assert api.event_performance("ev-none")["code"] == "not_found"


def test_made_up_vens_cost_rows_not_memory(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'vens.sqlite'}", max_cached_topics=100)
    store.setup()
    points = []
    for i in range(2000):
        ven = f"fake-{i}"
        points += convert(f"dr/telemetry/{ven}", {}, {"venId": ven, "usedPowerKw": float(i)}, T0).points
    store.write(points)
    assert len(store.topics) == 100
    assert store.query("dr/telemetry/fake-0/usedPowerKw")["values"][0][1] == 0.0  # evicted, read back
    store.write([Point("dr/telemetry/fake-1/usedPowerKw", T0 + timedelta(seconds=1), 7.0, {"units": "W"})])
    assert store.query("dr/telemetry/fake-1/usedPowerKw")["metadata"] == {"units": "W"}
    assert len(store.topics) == 100
    store.dispose()


def test_not_configured_is_unavailable():
    api = HistorianApi(lambda: None, lambda: None)
    with pytest.raises(HistorianUnavailable):
        api.guarded("query", lambda: api.query("a"))


def test_every_rpc_is_exported_under_its_name_constant_with_a_docstring():
    import ast
    from pathlib import Path

    from dr_common.topics import HistorianRpc

    source = Path(__file__).resolve().parents[2] / "agents" / "historian" / "dr_historian" / "agent.py"
    exported = {}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Attribute) and deco.attr == "export":
                    raise AssertionError(f"{node.name}: bare @RPC.export")
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "export":
                    arg = deco.args[0]
                    assert isinstance(arg, ast.Attribute) and arg.value.id == "HistorianRpc", node.name
                    assert ast.get_docstring(node), node.name
                    exported[getattr(HistorianRpc, arg.attr)] = node.name
    assert exported == {name: name for name in exported}  # each constant names the method it exports
    assert {"query", "get_topics_by_pattern", "event_performance", "baseline", "health"} <= set(exported)
