"""Contract tests of the historian's storage: the same cases on SQLite and on the local PostgreSQL (a database
each test creates and drops). They pin VOLTTRON's SQL-historian query semantics."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from dr_historian.store import EventEntry, Point, QueryError, Store, StoreError, parse_agg_period

from tests.support.services import postgres_url, throwaway_postgres_db

UTC = timezone.utc
T0 = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hist.sqlite'}"
        return
    with throwaway_postgres_db("drhist_test") as name:
        yield postgres_url(name)


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.setup()
    yield s
    s.dispose()


def _series(store: Store, topic: str, n: int, step_s: int = 60, meta=None) -> list[float]:
    values = [float(i) * 1.5 for i in range(n)]
    store.write([Point(topic, T0 + timedelta(seconds=i * step_s), v, meta) for i, v in enumerate(values)])
    return values


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def test_round_trip_keeps_every_value_type(store):
    values = [1.25, 7, True, False, "on", None, {"a": [1, 2.5, "x"]}, [1, 2], -0.0, 2**60, 1e-300]
    store.write([Point(f"site/dev/p{i}", T0, v, {"units": "kW"}) for i, v in enumerate(values)])
    for i, value in enumerate(values):
        got = store.query(f"site/dev/p{i}")
        assert got["values"] == [[_iso(T0), value]]
        assert type(got["values"][0][1]) is type(value)
        assert got["metadata"] == {"units": "kW"}
    store.write([Point("site/dev/nan", T0, float("nan")), Point("site/dev/inf", T0, float("inf"))])
    assert math.isnan(store.query("site/dev/nan")["values"][0][1])
    assert store.query("site/dev/inf")["values"][0][1] == float("inf")


def test_timestamps_keep_microseconds_and_zone(store):
    ts = datetime(2026, 7, 15, 14, 3, 27, 123456, tzinfo=timezone(timedelta(hours=-7)))
    store.write([Point("a/b", ts, 1.0)])
    assert store.query("a/b")["values"] == [["2026-07-15T21:03:27.123456+00:00", 1.0]]


def test_order_count_skip(store):
    values = _series(store, "site/meter/PowerKw", 10)
    ts = [_iso(T0 + timedelta(minutes=i)) for i in range(10)]
    first = store.query("site/meter/PowerKw", count=3)["values"]
    assert first == [[ts[i], values[i]] for i in range(3)]
    last = store.query("site/meter/PowerKw", count=3, order="LAST_TO_FIRST")["values"]
    assert last == [[ts[i], values[i]] for i in (9, 8, 7)]
    skipped = store.query("site/meter/PowerKw", count=2, skip=4)["values"]
    assert skipped == [[ts[4], values[4]], [ts[5], values[5]]]
    skipped_desc = store.query("site/meter/PowerKw", count=2, skip=1, order="LAST_TO_FIRST")["values"]
    assert skipped_desc == [[ts[8], values[8]], [ts[7], values[7]]]
    assert len(store.query("site/meter/PowerKw", skip=7)["values"]) == 3
    assert store.query("site/meter/PowerKw", count=0)["values"] == []


def test_start_inclusive_end_exclusive_and_instant(store):
    _series(store, "x/y", 10)
    got = store.query("x/y", start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=5))["values"]
    assert [v for _, v in got] == [3.0, 4.5, 6.0]
    instant = store.query("x/y", start=T0 + timedelta(minutes=4), end=T0 + timedelta(minutes=4))["values"]
    assert instant == [[_iso(T0 + timedelta(minutes=4)), 6.0]]
    assert store.query("x/y", start=T0 + timedelta(hours=1))["values"] == []
    assert len(store.query("x/y", end=T0 + timedelta(minutes=3))["values"]) == 3


def test_multi_topic_query_counts_per_topic(store):
    _series(store, "s/a/P", 5)
    _series(store, "s/b/P", 3, step_s=120)
    got = store.query(["s/a/P", "s/b/P", "s/unknown/P"], count=2, order="LAST_TO_FIRST")
    assert got["metadata"] == {}
    assert set(got["values"]) == {"s/a/P", "s/b/P"}
    assert [v for _, v in got["values"]["s/a/P"]] == [6.0, 4.5]
    assert [v for _, v in got["values"]["s/b/P"]] == [3.0, 1.5]


def test_unknown_topic_gives_empty_values(store):
    assert store.query("nothing/here") == {"values": [], "metadata": {}}


def test_topic_list_names_and_case_insensitive_lookup(store):
    store.write([Point("Demo/Meter/PowerKw", T0, 1.0), Point("demo/ev/ChargeKw", T0, 2.0)])
    store.write([Point("demo/meter/powerkw", T0 + timedelta(minutes=1), 3.0)])
    assert store.topic_list() == ["Demo/Meter/PowerKw", "demo/ev/ChargeKw"]
    assert [v for _, v in store.query("DEMO/METER/POWERKW")["values"]] == [1.0, 3.0]
    assert store.topics_by_pattern("meter") == {"Demo/Meter/PowerKw": store.topics_by_pattern("Meter/P")[
        "Demo/Meter/PowerKw"]}
    assert store.topics_metadata(["demo/ev/ChargeKw", "nope"]) == {"demo/ev/ChargeKw": {}}


def test_same_topic_and_time_is_stored_once_last_write_wins(store):
    store.write([Point("d/p", T0, 1.0), Point("d/p", T0, 2.0)])
    store.write([Point("d/p", T0, 3.0), Point("d/p", T0 + timedelta(seconds=1), 4.0)])
    assert store.query("d/p")["values"] == [[_iso(T0), 3.0], [_iso(T0 + timedelta(seconds=1)), 4.0]]
    assert store.count_rows() == 2


def test_metadata_follows_the_latest_reading(store):
    store.write([Point("m/p", T0, 1.0, {"units": "W"})])
    store.write([Point("m/p", T0 + timedelta(minutes=1), 2.0, {"units": "kW", "type": "float"})])
    assert store.query("m/p")["metadata"] == {"units": "kW", "type": "float"}


def test_a_second_store_sees_the_same_data(store, store_url):
    _series(store, "p/q", 4)
    other = Store(store_url)
    other.setup()
    try:
        assert other.topic_list() == ["p/q"]
        assert len(other.query("p/q")["values"]) == 4
        other.write([Point("p/q", T0 + timedelta(hours=1), 9.0)])
        assert store.query("p/q", count=1, order="LAST_TO_FIRST")["values"][0][1] == 9.0
    finally:
        other.dispose()


def test_aggregation_on_the_fly(store):
    _series(store, "agg/p", 10)  # 0, 1.5, ... 13.5 one per minute
    got = store.query("agg/p", agg_type="avg", agg_period="5m")
    assert got["values"] == [[_iso(T0), 3.0], [_iso(T0 + timedelta(minutes=5)), 10.5]]
    assert store.query("agg/p", agg_type="MAX", agg_period="5m", order="LAST_TO_FIRST", count=1)["values"] == \
        [[_iso(T0 + timedelta(minutes=5)), 13.5]]
    assert store.query("agg/p", agg_type="count", agg_period="1h")["values"] == [[_iso(T0), 10]]
    assert store.interval_sums("agg/p", T0, T0 + timedelta(minutes=10), 300) == [
        (int(T0.timestamp()), 15.0, 5), (int(T0.timestamp()) + 300, 52.5, 5)]
    windows = [(T0, T0 + timedelta(minutes=2)), (T0 + timedelta(minutes=7), T0 + timedelta(minutes=9))]
    assert store.interval_sums("agg/p", T0, T0, 300, windows) == [  # 0 + 1.5, then 10.5 + 12
        (int(T0.timestamp()), 1.5, 2), (int(T0.timestamp()) + 300, 22.5, 2)]


@pytest.mark.parametrize("kwargs, message", [
    ({"order": "SIDEWAYS"}, "order"), ({"count": -1}, "count"), ({"skip": "2"}, "skip"),
    ({"agg_type": "avg"}, "both"), ({"agg_type": "median", "agg_period": "1h"}, "agg_type"),
    ({"agg_type": "avg", "agg_period": "soon"}, "agg_period"),
])
def test_bad_query_arguments_are_named(store, kwargs, message):
    with pytest.raises(QueryError, match=message):
        store.query("a/b", **kwargs)


def test_agg_period_parsing():
    assert [parse_agg_period(p) for p in ("15m", "1h", "2d", "30s", "1w", 900)] == [900, 3600, 172800, 30, 604800,
                                                                                     900]


def test_event_index_keeps_latest_modification_and_restore(store):
    start, end = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    store.write([], [EventEntry("ev1", "ven1", "event", T0, start, end, 2.0, 0),
                     EventEntry("ev1", "ven2", "event", T0, start, end, 1.0, 0)])
    store.write([], [EventEntry("ev1", "ven1", "event", T0 + timedelta(minutes=5), start, end + timedelta(hours=1),
                                3.0, 1),
                     EventEntry("ev1", "ven1", "event", T0 + timedelta(minutes=6), start, end, 9.0, 0)])
    store.write([], [EventEntry("ev1", "ven2", "restore", start + timedelta(minutes=20))])
    windows = {w.ven_id: w for w in store.event_windows("ev1")}
    assert windows["ven1"].requested_kw == 3.0 and windows["ven1"].end == end + timedelta(hours=1)
    assert windows["ven1"].effective_end == end + timedelta(hours=1)
    assert windows["ven2"].effective_end == start + timedelta(minutes=20)
    assert [w.ven_id for w in store.events_between(end, end + timedelta(minutes=1))] == ["ven1"]
    assert store.event_windows("other") == []


def test_unreachable_postgresql_raises_store_error_quickly():
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    store = Store(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nope", connect_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="postgresql"):
        store.setup()
    with pytest.raises(StoreError):
        store.write([Point("a/b", T0, 1.0)])
    assert time.monotonic() - t0 < 10
    store.dispose()


def test_refuses_a_foreign_schema(tmp_path):
    import sqlite3

    path = tmp_path / "stock.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE data (ts timestamp, topic_id INTEGER, value_string TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another historian"):
        Store(f"sqlite:///{path}").setup()
