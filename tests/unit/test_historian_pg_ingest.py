"""The PostgreSQL write path (binary COPY under a savepoint, the upsert when a reading is stored already) against
the local PostgreSQL server, each test in a database of its own that it drops: exact values and timestamps, one
row per (topic, ts), rollback and lost connections."""

from __future__ import annotations

import math
import struct
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest
from dr_historian import pg_ingest
from dr_historian.store import Point, Store, StoreError
from dr_historian.values import to_micros
from dr_historian.writer import Writer
from sqlalchemy import text

from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, postgres_url, throwaway_postgres_db

pytestmark = pytest.mark.postgres

UTC = timezone.utc
T0 = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def dbname():
    with throwaway_postgres_db("drhist_copy") as name:
        yield name


@pytest.fixture
def store(dbname):
    s = Store(postgres_url(dbname))
    s.setup()
    yield s
    s.dispose()


def _sql(dbname: str, query: str, args: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=dbname)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def test_binary_stream_layout():
    stream = pg_ingest.encode_rows([(7, to_micros(datetime(2000, 1, 1, tzinfo=UTC)) + 1, 2.5, None),
                                    (8, 0, None, "é")])
    assert stream.startswith(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
    assert stream.endswith(b"\xff\xff")
    body = stream[19:-2]
    first = struct.unpack("!hiiiqid", body[:34])
    assert first == (4, 4, 7, 8, 1, 8, 2.5)
    assert body[34:38] == b"\xff\xff\xff\xff"  # NULL value_json
    second = body[38:]
    assert struct.unpack("!hiiiq", second[:22]) == (4, 4, 8, 8, -946_684_800_000_000)
    assert second[22:26] == b"\xff\xff\xff\xff"  # NULL value_num
    assert second[26:] == struct.pack("!i", 2) + "é".encode()


def test_every_value_type_round_trips_through_copy(store, dbname):
    values = [1.5, -0.0, 1e-310, 1.7976931348623157e308, 42, 2**63 + 1, True, False, None, "plain",
              "tab\there\nnew line\\back\\slash \"quoted\" \r", "ünï©ødé ☃ 𝄞", "\x00nul", {"a": [1, 2.5, None]},
              [1, "x"], math.nan, math.inf, -math.inf]
    store.write([Point(f"t/v{i}", T0, v) for i, v in enumerate(values)])
    for i, v in enumerate(values):
        got = store.query(f"t/v{i}")["values"]
        assert len(got) == 1, (i, v)
        stored = got[0][1]
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(stored)
        else:
            assert stored == v and type(stored) is type(v), (i, v, stored)
    # what M&V aggregates in SQL: finite numbers in value_num, exactly
    nums = dict(_sql(dbname, "SELECT t.topic_name, d.value_num FROM data d JOIN topics t USING (topic_id)"))
    assert nums["t/v0"] == 1.5 and nums["t/v2"] == 1e-310 and nums["t/v4"] == 42.0
    assert nums["t/v5"] is None and nums["t/v6"] is None and nums["t/v15"] is None


def test_timestamps_exact_to_the_microsecond_either_side_of_2000(store, dbname):
    stamps = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
              datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(2026, 7, 15, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-7)))]
    store.write([Point("t/ts", ts, i) for i, ts in enumerate(stamps)])
    rows = _sql(dbname, "SELECT ts, value_json FROM data ORDER BY ts")
    assert [ts for ts, _ in rows] == sorted(stamps)
    assert {int(v): ts for ts, v in rows} == dict(enumerate(stamps))


def test_one_row_per_topic_and_time_last_write_wins(store, dbname):
    # duplicates inside one batch (any case of the topic name) and across batches
    store.write([Point("t/dup", T0, 1.0), Point("T/DUP", T0, 2.0), Point("t/dup", T0 + timedelta(seconds=1), 3.0)])
    store.write([Point("t/dup", T0, 4.0)])
    assert _sql(dbname, "SELECT ts, value_num FROM data ORDER BY ts") == [(T0, 4.0), (T0 + timedelta(seconds=1), 3.0)]
    assert _sql(dbname, "SELECT count(*) FROM topics") == [(1,)]


def test_batches_larger_than_a_copy_chunk(store, dbname, monkeypatch):
    monkeypatch.setattr(pg_ingest, "COPY_CHUNK", 7)
    copy_calls = []
    real = pg_ingest.encode_rows
    monkeypatch.setattr(pg_ingest, "encode_rows", lambda rows: copy_calls.append(len(rows)) or real(rows))
    points = [Point(f"t/big{i % 5}", T0 + timedelta(seconds=i), float(i)) for i in range(100)]
    assert store.write(points) == 100
    assert sum(copy_calls) == 100 and max(copy_calls) <= 7
    assert _sql(dbname, "SELECT count(*), sum(value_num) FROM data") == [(100, float(sum(range(100))))]


def test_a_replayed_batch_after_other_writes_changes_only_its_own_readings(store, dbname):
    store.write([Point("t/a", T0, 1.0)])
    _sql(dbname, "UPDATE data SET value_num = 99")  # another client changes the stored reading
    store.write([Point("t/b", T0, 2.0), Point("t/c", T0, 3.0)])
    store.write([Point("t/b", T0, 4.0), Point("t/d", T0, 5.0)])  # t/b stored: this batch takes the upsert
    assert _sql(dbname, "SELECT t.topic_name, d.value_num FROM data d JOIN topics t USING (topic_id) "
                        "ORDER BY t.topic_name") == [("t/a", 99.0), ("t/b", 4.0), ("t/c", 3.0), ("t/d", 5.0)]


def test_a_failed_batch_stores_nothing_and_the_next_one_works(store, dbname, monkeypatch):
    store.write([Point("t/keep", T0, 1.0)])
    real_upsert = Store._upsert

    def broken_upsert(self, conn, table, rows, keys, update):
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    monkeypatch.setattr(Store, "_upsert", broken_upsert)
    with pytest.raises(StoreError, match="postgresql write of 2 readings failed: UndefinedTable"):
        store.write([Point("t/keep", T0, 5.0), Point("t/new", T0, 6.0)])  # t/keep stored: the upsert runs
    monkeypatch.setattr(Store, "_upsert", real_upsert)
    assert _sql(dbname, "SELECT value_num FROM data") == [(1.0,)]
    assert _sql(dbname, "SELECT topic_name FROM topics") == [("t/keep",)]
    store.write([Point("t/after", T0, 7.0)])
    assert sorted(_sql(dbname, "SELECT value_num FROM data")) == [(1.0,), (7.0,)]


def test_a_killed_connection_is_replaced(store, dbname):
    writer = Writer(store)
    assert writer.publish([{"topic": "t/k", "timestamp": T0, "value": 1.0}])
    _sql(dbname, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
    # the pool's pre-ping replaces the dead connection
    assert writer.publish([{"topic": "t/k", "timestamp": T0 + timedelta(seconds=1), "value": 2.0}])
    assert _sql(dbname, "SELECT count(*) FROM data") == [(2,)]
    assert writer.stats.failures == 0


def test_same_answers_as_sqlite(store, tmp_path):
    lite = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    lite.setup()
    points = [Point(f"dev/p{i % 13}", T0 + timedelta(milliseconds=317 * i), v)
              for i, v in enumerate([float(i) / 7 if i % 3 else i for i in range(2500)])]
    points += [Point("dev/p1", T0, "text"), Point("dev/p2", T0 + timedelta(milliseconds=317 * 2), {"x": 1})]
    for s in (store, lite):
        assert s.write(points) == 2501  # dev/p2's reading at 634 ms is given twice
    topics = [f"dev/p{i}" for i in range(13)]
    assert store.query(topics, count=10_000) == lite.query(topics, count=10_000)
    assert store.query("dev/p4", agg_type="avg", agg_period="1m") == lite.query("dev/p4", agg_type="avg",
                                                                              agg_period="1m")
    lite.dispose()


def test_a_connection_lost_during_copy_is_a_store_error_and_the_next_write_reconnects(store, dbname, monkeypatch):
    writer = Writer(store)
    assert writer.publish([{"topic": "t/lost", "timestamp": T0, "value": 1.0}])
    real = pg_ingest.encode_rows

    def kill_then_encode(rows):  # the session dies between the batch's topic look-up and its COPY
        _sql(dbname, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        return real(rows)

    monkeypatch.setattr(pg_ingest, "encode_rows", kill_then_encode)
    assert not writer.publish([{"topic": "t/lost", "timestamp": T0 + timedelta(seconds=1), "value": 2.0}])
    assert writer.stats.failures == 1 and "postgresql write of 1 readings failed" in writer.stats.last_error
    monkeypatch.setattr(pg_ingest, "encode_rows", real)
    # the batch stays with the caller (the backup cache) and is stored whole by the next attempt
    assert writer.publish([{"topic": "t/lost", "timestamp": T0 + timedelta(seconds=1), "value": 2.0}])
    assert _sql(dbname, "SELECT value_num FROM data ORDER BY ts") == [(1.0,), (2.0,)]


def _raw_session(dbname: str):
    return psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=dbname)


def test_a_stored_reading_in_any_chunk_rolls_back_the_whole_copy(store, dbname):
    store.write([Point(f"t/{i}", T0, 0.0) for i in range(3)])  # topics 1..3
    conn = _raw_session(dbname)
    try:
        micros = to_micros(T0)
        fresh = [(1 + i % 3, micros + 1 + i, float(i), None) for i in range(10)]
        with conn.cursor() as cur:
            assert pg_ingest.copy_rows(cur, fresh, psycopg2.Error, chunk=3) is True
            assert pg_ingest.copy_rows(cur, [], psycopg2.Error) is True
        conn.commit()
        # the first chunk is new, the second holds a stored reading: nothing of the batch stays, the
        # transaction goes on
        again = [(1, micros + 100, 7.0, None), (2, micros + 101, 7.0, None), (3, micros + 102, 7.0, None),
                 (1, micros + 1, 8.0, '"replaced"')]
        with conn.cursor() as cur:
            assert pg_ingest.copy_rows(cur, again, psycopg2.Error, chunk=3) is False
            cur.execute("SELECT count(*) FROM data")
            assert cur.fetchone() == (3 + 10,)
        conn.commit()
    finally:
        conn.close()
    assert _sql(dbname, "SELECT value_num FROM data WHERE topic_id = 1 AND ts = %s",
                (T0 + timedelta(microseconds=1),)) == [(0.0,)]


def test_any_other_database_error_is_raised(store, dbname):
    store.write([Point("t/x", T0, 0.0)])
    conn = _raw_session(dbname)
    try:
        beyond = 946_684_800_000_000 + 2**63 - 2  # past timestamptz's range (2**63 - 1 would be 'infinity')
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as raised:
            pg_ingest.copy_rows(cur, [(1, beyond, 1.0, None)], psycopg2.Error)
        assert raised.value.pgcode != pg_ingest.UNIQUE_VIOLATION
        conn.rollback()
    finally:
        conn.close()
    assert _sql(dbname, "SELECT count(*) FROM data") == [(1,)]


def test_topics_inserted_now_and_topics_another_writer_stored(store, dbname):
    store.write([Point("t/Shared", T0, 1.0, {"units": "kW"})])
    other = Store(postgres_url(dbname))  # its own topic cache: t/shared is stored but unknown to it
    try:
        other.write([Point("t/shared", T0 + timedelta(seconds=1), 2.0, {"units": "W"}),
                     Point("t/fresh", T0, 3.0, {"units": "V"})])
        cached = {k: (e.topic_id, e.meta) for k in ("t/shared", "t/fresh") if (e := other.topics.get(k))}
    finally:
        other.dispose()
    stored = _sql(dbname, "SELECT topic_key, topic_id, topic_name, metadata FROM topics ORDER BY topic_id")
    assert [(key, name, meta) for key, _, name, meta in stored] == [("t/shared", "t/Shared", '{"units": "W"}'),
                                                                    ("t/fresh", "t/fresh", '{"units": "V"}')]
    ids = {key: topic_id for key, topic_id, _, _ in stored}
    assert cached == {"t/shared": (ids["t/shared"], {"units": "W"}), "t/fresh": (ids["t/fresh"], {"units": "V"})}
    assert _sql(dbname, "SELECT topic_id, value_num FROM data ORDER BY topic_id, ts") == [
        (ids["t/shared"], 1.0), (ids["t/shared"], 2.0), (ids["t/fresh"], 3.0)]
