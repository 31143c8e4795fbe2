"""Time-series storage on SQLAlchemy 2, one code path for SQLite and PostgreSQL (psycopg2).

Schema (created automatically):

    topics     (topic_id PK, topic_name, topic_key UNIQUE = lower(topic_name), metadata JSON text)
    data       (topic_id, ts, value_num, value_json)  PRIMARY KEY (topic_id, ts)
    dr_events  (event_id, ven_id, start_ts, end_ts, restored_ts, requested_kw, modification_number, op,
                issued_ts)  PRIMARY KEY (event_id, ven_id)
    schema_info(name PK, value)

`ts` is `TIMESTAMP WITH TIME ZONE` on PostgreSQL and integer microseconds since the epoch (UTC) on SQLite, where
`data` is a WITHOUT ROWID table clustered on (topic_id, ts). A write is one transaction: new topics, metadata
changes, readings (an existing (topic, ts) is replaced, so a replay after an ambiguous commit stores each reading
once) and the DR event index.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    event,
    func,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from dr_historian.values import UTC, as_utc, decode_value, encode_value, format_timestamp, from_micros, to_micros

_log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
ORDER_FIRST_TO_LAST = "FIRST_TO_LAST"
ORDER_LAST_TO_FIRST = "LAST_TO_FIRST"
AGG_TYPES = ("avg", "min", "max", "sum", "count")
_PERIOD_RE = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|hr|d|day|w|week)s?\s*$", re.IGNORECASE)
_PERIOD_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400,
                 "w": 604800, "week": 604800}
_INSERT_CHUNK = 2000


class StoreError(RuntimeError):
    """The database cannot be reached or refused the operation (the message names the cause)."""


class QueryError(ValueError):
    """A query argument that cannot be used (the message names it)."""


class UtcTimestamp(TypeDecorator):
    """Aware UTC datetimes: timestamptz on PostgreSQL, integer microseconds on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):  # type: ignore[no-untyped-def]
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if dialect.name == "sqlite":
            return value if isinstance(value, int) else to_micros(value)
        return as_utc(value)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if dialect.name == "sqlite":
            return from_micros(value)
        return as_utc(value)


metadata = MetaData()
topics_table = Table(
    "topics", metadata,
    Column("topic_id", Integer, primary_key=True, autoincrement=True),
    Column("topic_name", String(512), nullable=False),
    Column("topic_key", String(512), nullable=False, unique=True),
    Column("metadata", Text, nullable=True),
)
data_table = Table(
    "data", metadata,
    Column("topic_id", Integer, primary_key=True, autoincrement=False),
    Column("ts", UtcTimestamp(), primary_key=True),
    Column("value_num", Float(precision=53), nullable=True),
    Column("value_json", Text, nullable=True),
    sqlite_with_rowid=False,
)
events_table = Table(
    "dr_events", metadata,
    Column("event_id", String(256), primary_key=True),
    Column("ven_id", String(64), primary_key=True),
    Column("start_ts", UtcTimestamp(), nullable=True),
    Column("end_ts", UtcTimestamp(), nullable=True),
    Column("restored_ts", UtcTimestamp(), nullable=True),
    Column("requested_kw", Float(precision=53), nullable=True),
    Column("modification_number", Integer, nullable=False, default=0),
    Column("op", String(32), nullable=True),
    Column("issued_ts", UtcTimestamp(), nullable=True),
)
schema_info_table = Table(
    "schema_info", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)


@dataclass(slots=True)
class Point:
    """One reading to store."""

    topic: str
    ts: datetime
    value: Any
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EventEntry:
    """What one command says about an event for one VEN (see dr_records)."""

    event_id: str
    ven_id: str
    op: str
    issued: datetime
    start: datetime | None = None
    end: datetime | None = None
    requested_kw: float | None = None
    modification_number: int = 0


@dataclass(frozen=True)
class EventWindow:
    """The stored view of an event for one VEN."""

    event_id: str
    ven_id: str
    start: datetime | None
    end: datetime | None
    restored: datetime | None
    requested_kw: float | None
    modification_number: int

    @property
    def effective_end(self) -> datetime | None:
        """The end, or the restore time when the VEN was restored early."""
        if self.restored is not None and self.start is not None and self.restored > self.start:
            return min(self.restored, self.end) if self.end else self.restored
        return self.end


def parse_agg_period(period: object) -> int:
    """Seconds of an aggregation period like '15m', '1h', '1d', '300s' (or a number of seconds)."""
    if isinstance(period, (int, float)) and not isinstance(period, bool):
        seconds = int(period)
    elif isinstance(period, str) and (match := _PERIOD_RE.match(period)):
        seconds = int(match.group(1)) * _PERIOD_UNITS[match.group(2).lower()]
    else:
        raise QueryError(f"agg_period must look like '15m', '1h' or '1d', got {period!r}")
    if seconds <= 0:
        raise QueryError(f"agg_period must be positive, got {period!r}")
    return seconds


class Store:
    """A historian database. Safe to share between the writer thread and query callers."""

    def __init__(self, url: str, connect_timeout_s: float = 5.0, application_name: str = "platform.historian") -> None:
        self.url = url
        self.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._engine = self._make_engine(url, connect_timeout_s, application_name)
        upsert = sqlite_dialect.insert(data_table)
        upsert = upsert.on_conflict_do_update(index_elements=["topic_id", "ts"],
                                              set_={c: upsert.excluded[c] for c in ("value_num", "value_json")})
        self._sqlite_upsert_sql = str(upsert.compile(dialect=sqlite_dialect.dialect()))
        self._lock = threading.Lock()
        self._topic_ids: dict[str, int] = {}
        self._topic_names: dict[int, str] = {}
        self._topic_meta: dict[int, dict[str, Any]] = {}
        self._ready = False

    # --- lifecycle -----------------------------------------------------------------------------------
    @staticmethod
    def _make_engine(url: str, connect_timeout_s: float, application_name: str) -> Engine:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1]
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            return engine
        timeout = max(1, int(math.ceil(connect_timeout_s)))
        return create_engine(
            url, pool_pre_ping=True, pool_size=3, max_overflow=4, pool_recycle=1800,
            connect_args={"connect_timeout": timeout, "application_name": application_name,
                          "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3,
                          "tcp_user_timeout": timeout * 2000})

    def setup(self) -> None:
        """Create the schema when missing (idempotent) and load the topic cache."""
        try:
            with self._engine.begin() as conn:
                self._check_foreign_schema(conn)
                metadata.create_all(conn, checkfirst=True)
                self._upsert(conn, schema_info_table, [{"name": "schema_version", "value": SCHEMA_VERSION}],
                             ["name"], ["value"])
            self._load_topics()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot set up {self.backend} historian database: {_reason(exc)}") from exc
        self._ready = True

    def _check_foreign_schema(self, conn: Connection) -> None:
        names = set(conn.dialect.get_table_names(conn))
        if "data" in names:
            columns = {c["name"] for c in conn.dialect.get_columns(conn, "data")}
            if "value_num" not in columns:
                raise StoreError("the database already has a 'data' table of another historian schema "
                                 f"(columns {sorted(columns)}); point this historian at its own database")

    def dispose(self) -> None:
        self._engine.dispose()

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def engine(self) -> Engine:
        return self._engine

    def _load_topics(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(select(topics_table.c.topic_id, topics_table.c.topic_name,
                                       topics_table.c.metadata)).all()
        with self._lock:
            for topic_id, name, meta in rows:
                self._topic_ids[name.lower()] = topic_id
                self._topic_names[topic_id] = name
                self._topic_meta[topic_id] = _load_meta(meta)

    # --- writing -------------------------------------------------------------------------------------
    def write(self, points: Sequence[Point], events: Sequence[EventEntry] = ()) -> int:
        """Store readings (and DR event index entries) in one transaction; returns the number of readings.

        Raises StoreError when the database is unreachable or refuses; nothing is stored then.
        """
        if not self._ready:
            self.setup()
        latest: dict[tuple[str, int], tuple[Any, datetime]] = {}
        topics: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        for point in points:
            key = point.topic.lower()
            latest[(key, to_micros(point.ts))] = (point.value, point.ts)
            topics[key] = (point.topic, point.meta or topics.get(key, (None, None))[1])
        try:
            with self._engine.begin() as conn:
                ids, new_topics, meta_updates = self._resolve_topics(conn, topics)
                if self.backend == "sqlite":
                    # the statement SQLAlchemy compiles from `data_table`, executed with plain tuples: the
                    # per-row parameter processing of Core costs more than SQLite's insert itself
                    tuples = [(ids[key], micros, *encode_value(value)) for (key, micros), (value, _) in latest.items()]
                    for start in range(0, len(tuples), _INSERT_CHUNK):
                        conn.exec_driver_sql(self._sqlite_upsert_sql, tuples[start:start + _INSERT_CHUNK])
                else:
                    rows = [dict(zip(("value_num", "value_json"), encode_value(value), strict=True),
                                 topic_id=ids[key],
                                 ts=as_utc(ts)) for (key, _), (value, ts) in latest.items()]
                    for start in range(0, len(rows), _INSERT_CHUNK):
                        self._upsert(conn, data_table, rows[start:start + _INSERT_CHUNK], ["topic_id", "ts"],
                                     ["value_num", "value_json"])
                if events:
                    self._write_events(conn, events)
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} write of {len(latest)} readings failed: {_reason(exc)}") from exc
        with self._lock:
            for key, (topic_id, name, meta) in new_topics.items():
                self._topic_ids[key] = topic_id
                self._topic_names[topic_id] = name
                self._topic_meta[topic_id] = meta
            for topic_id, meta in meta_updates.items():
                self._topic_meta[topic_id] = meta
        return len(latest)

    def _resolve_topics(self, conn: Connection,
                        topics: Mapping[str, tuple[str, Mapping[str, Any] | None]]):  # type: ignore[no-untyped-def]
        ids: dict[str, int] = {}
        wanted: dict[str, tuple[str, dict[str, Any]]] = {}
        meta_updates: dict[int, dict[str, Any]] = {}
        with self._lock:
            for key, (name, meta) in topics.items():
                topic_id = self._topic_ids.get(key)
                if topic_id is None:
                    wanted[key] = (name, dict(meta or {}))
                    continue
                ids[key] = topic_id
                if meta and meta != self._topic_meta.get(topic_id):
                    meta_updates[topic_id] = dict(meta)
        for topic_id, meta in meta_updates.items():
            conn.execute(topics_table.update().where(topics_table.c.topic_id == topic_id)
                         .values(metadata=json.dumps(meta, default=str)))
        new_topics: dict[str, tuple[int, str, dict[str, Any]]] = {}
        if wanted:
            rows = [{"topic_name": name, "topic_key": key, "metadata": json.dumps(meta, default=str)}
                    for key, (name, meta) in wanted.items()]
            self._insert_ignore(conn, topics_table, rows, ["topic_key"])
            keys = list(wanted)
            for start in range(0, len(keys), 500):
                found = conn.execute(select(topics_table.c.topic_key, topics_table.c.topic_id,
                                            topics_table.c.topic_name, topics_table.c.metadata)
                                     .where(topics_table.c.topic_key.in_(keys[start:start + 500]))).all()
                for key, topic_id, name, meta in found:
                    ids[key] = topic_id
                    new_topics[key] = (topic_id, name, _load_meta(meta))
        return ids, new_topics, meta_updates

    def _upsert(self, conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str],
                update: list[str]) -> None:
        if not rows:
            return
        dialect = sqlite_dialect if self.backend == "sqlite" else pg_dialect
        stmt = dialect.insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
        if self.backend == "postgresql":
            # SQLAlchemy batches an executemany into multi-row INSERTs ("insertmanyvalues") for ON CONFLICT only
            # with RETURNING; without it psycopg2 sends one statement per row (5x slower).
            conn.execute(stmt.returning(*(table.c[k] for k in keys)), rows).all()
        else:
            conn.execute(stmt, rows)

    def _insert_ignore(self, conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
        dialect = sqlite_dialect if self.backend == "sqlite" else pg_dialect
        conn.execute(dialect.insert(table).on_conflict_do_nothing(index_elements=keys), rows)

    def _write_events(self, conn: Connection, entries: Sequence[EventEntry]) -> None:
        keys = {(e.event_id, e.ven_id) for e in entries}
        existing: dict[tuple[str, str], dict[str, Any]] = {}
        for event_id in {k[0] for k in keys}:
            for row in conn.execute(select(events_table).where(events_table.c.event_id == event_id)).mappings():
                existing[(row["event_id"], row["ven_id"])] = dict(row)
        for entry in sorted(entries, key=lambda e: e.issued):
            key = (entry.event_id, entry.ven_id)
            row = existing.get(key) or {"event_id": entry.event_id, "ven_id": entry.ven_id, "start_ts": None,
                                        "end_ts": None, "restored_ts": None, "requested_kw": None,
                                        "modification_number": -1, "op": None, "issued_ts": None}
            if entry.op == "restore":
                if row["restored_ts"] is None or entry.issued < row["restored_ts"]:
                    row["restored_ts"] = entry.issued
                if row["modification_number"] < 0:
                    row["modification_number"] = 0
            elif entry.modification_number >= row["modification_number"]:
                row.update(start_ts=entry.start or entry.issued, end_ts=entry.end, requested_kw=entry.requested_kw,
                           modification_number=entry.modification_number, op=entry.op, issued_ts=entry.issued)
                if row["restored_ts"] is not None and row["restored_ts"] < entry.issued:
                    row["restored_ts"] = None  # a newer command re-armed the VEN after an earlier restore
            existing[key] = row
        rows = [existing[k] for k in keys]
        self._upsert(conn, events_table, rows, ["event_id", "ven_id"],
                     ["start_ts", "end_ts", "restored_ts", "requested_kw", "modification_number", "op", "issued_ts"])

    # --- reading -------------------------------------------------------------------------------------
    def topic_list(self) -> list[str]:
        self._refresh_if_empty()
        with self._lock:
            return sorted(self._topic_names.values())

    def topics_by_pattern(self, pattern: str) -> dict[str, int]:
        """{topic_name: topic_id} for topics matching a regular expression (case-insensitive, like VOLTTRON)."""
        try:
            rex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise QueryError(f"topic_pattern is not a regular expression: {exc}") from None
        self._refresh_if_empty()
        with self._lock:
            return {name: tid for tid, name in self._topic_names.items() if rex.search(name)}

    def topics_metadata(self, topics: str | Sequence[str]) -> dict[str, dict[str, Any]]:
        names = [topics] if isinstance(topics, str) else list(topics)
        out = {}
        for name in names:
            topic_id = self._topic_id(name)
            if topic_id is not None:
                out[name] = dict(self._topic_meta.get(topic_id, {}))
        return out

    def _refresh_if_empty(self) -> None:
        if not self._topic_names:
            self._load_topics_safe()

    def _load_topics_safe(self) -> None:
        try:
            self._load_topics()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read topics from {self.backend}: {_reason(exc)}") from exc

    def _topic_id(self, name: str) -> int | None:
        with self._lock:
            topic_id = self._topic_ids.get(name.lower())
        if topic_id is None:
            # written by another process (a script, another historian on the same database)
            try:
                with self._engine.connect() as conn:
                    row = conn.execute(select(topics_table.c.topic_id, topics_table.c.topic_name,
                                              topics_table.c.metadata)
                                       .where(topics_table.c.topic_key == name.lower())).first()
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot read topics from {self.backend}: {_reason(exc)}") from exc
            if row is None:
                return None
            topic_id = row[0]
            with self._lock:
                self._topic_ids[name.lower()] = topic_id
                self._topic_names[topic_id] = row[1]
                self._topic_meta[topic_id] = _load_meta(row[2])
        return topic_id

    def query(self, topic: str | Sequence[str], start: datetime | None = None, end: datetime | None = None,
              skip: int = 0, count: int | None = None, order: str = ORDER_FIRST_TO_LAST,
              agg_type: str | None = None, agg_period: object = None) -> dict[str, Any]:
        """VOLTTRON's historian query.

        One topic: {"values": [[ts, value], ...], "metadata": {...}}; a list of topics:
        {"values": {topic: [[ts, value], ...]}, "metadata": {}} with every known topic present. `start` is
        inclusive and `end` exclusive (start == end selects that instant); `count` limits and `skip` offsets the
        rows of each topic in the requested order. With agg_type (avg, min, max, sum, count) and agg_period
        ('15m', '1h', ...) numeric readings are aggregated into periods aligned to the epoch, each row stamped
        with its period's start.
        """
        multi = not isinstance(topic, str)
        names = [topic] if isinstance(topic, str) else list(topic)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise QueryError("topic must be a topic name or a non-empty list of topic names")
        if order not in (ORDER_FIRST_TO_LAST, ORDER_LAST_TO_FIRST):
            raise QueryError(f"order must be {ORDER_FIRST_TO_LAST} or {ORDER_LAST_TO_FIRST}, got {order!r}")
        skip = _non_negative(skip, "skip")
        if count is not None:
            count = _non_negative(count, "count")
        period_s = None
        if agg_type is not None or agg_period is not None:
            if not agg_type or agg_period is None:
                raise QueryError("give both agg_type and agg_period to query aggregated data")
            if str(agg_type).lower() not in AGG_TYPES:
                raise QueryError(f"agg_type must be one of {', '.join(AGG_TYPES)}, got {agg_type!r}")
            agg_type = str(agg_type).lower()
            period_s = parse_agg_period(agg_period)
        found: dict[str, int] = {}
        for name in names:
            topic_id = self._topic_id(name)
            if topic_id is not None:
                found[name] = topic_id
        values: dict[str, list[list[Any]]] = {}
        try:
            with self._engine.connect() as conn:
                for name, topic_id in found.items():
                    if period_s is None:
                        values[name] = self._query_raw(conn, topic_id, start, end, skip, count, order)
                    else:
                        values[name] = self._query_agg(conn, topic_id, start, end, skip, count, order,
                                                       str(agg_type), period_s)
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} query failed: {_reason(exc)}") from exc
        if multi:
            return {"values": values, "metadata": {}}
        name = names[0]
        meta = dict(self._topic_meta.get(found[name], {})) if name in found else {}
        return {"values": values.get(name, []), "metadata": meta}

    def _time_filter(self, topic_id: int, start: datetime | None, end: datetime | None) -> list[Any]:
        clauses = [data_table.c.topic_id == topic_id]
        if start is not None and end is not None and as_utc(start) == as_utc(end):
            clauses.append(data_table.c.ts == as_utc(start))
            return clauses
        if start is not None:
            clauses.append(data_table.c.ts >= as_utc(start))
        if end is not None:
            clauses.append(data_table.c.ts < as_utc(end))
        return clauses

    def _query_raw(self, conn: Connection, topic_id: int, start: datetime | None, end: datetime | None, skip: int,
                   count: int | None, order: str) -> list[list[Any]]:
        ts_col = data_table.c.ts
        stmt = (select(ts_col, data_table.c.value_num, data_table.c.value_json)
                .where(and_(*self._time_filter(topic_id, start, end)))
                .order_by(ts_col.desc() if order == ORDER_LAST_TO_FIRST else ts_col.asc()))
        if count is not None:
            stmt = stmt.limit(count)
        if skip:
            stmt = stmt.offset(skip)
        return [[format_timestamp(ts), decode_value(num, js)] for ts, num, js in conn.execute(stmt)]

    def _bucket_expr(self, period_s: int, column: Any = None):  # type: ignore[no-untyped-def]
        """SQL for the index of a reading's period (epoch seconds // period)."""
        column = data_table.c.ts if column is None else column
        if self.backend == "sqlite":
            return type_coerce(column, BigInteger) // (period_s * 1_000_000)
        return func.floor(func.extract("epoch", column) / period_s)

    def _query_agg(self, conn: Connection, topic_id: int, start: datetime | None, end: datetime | None, skip: int,
                   count: int | None, order: str, agg_type: str, period_s: int) -> list[list[Any]]:
        bucket = self._bucket_expr(period_s).label("bucket")
        value = data_table.c.value_num
        agg = {"avg": func.avg(value), "min": func.min(value), "max": func.max(value), "sum": func.sum(value),
               "count": func.count(value)}[agg_type]
        stmt = (select(bucket, agg).where(and_(*self._time_filter(topic_id, start, end)), value.isnot(None))
                .group_by(bucket).order_by(bucket.desc() if order == ORDER_LAST_TO_FIRST else bucket.asc()))
        if count is not None:
            stmt = stmt.limit(count)
        if skip:
            stmt = stmt.offset(skip)
        out = []
        for index, result in conn.execute(stmt):
            ts = datetime.fromtimestamp(int(index) * period_s, UTC)
            out.append([format_timestamp(ts), int(result) if agg_type == "count" else float(result)])
        return out

    def interval_sums(self, topic: str, start: datetime, end: datetime, period_s: int,
                      windows: Sequence[tuple[datetime, datetime]] | None = None) -> list[tuple[int, float, int]]:
        """(period start in epoch seconds, sum, count) of the numeric readings of a topic in [start, end), or only
        in the given [start, end) windows (M&V reads a few hours of each of 45 days, not the whole days)."""
        topic_id = self._topic_id(topic)
        if topic_id is None:
            return []
        value = data_table.c.value_num
        if windows:
            # one index range scan per window (an OR of ranges makes SQLite scan the whole topic)
            ranges = union_all(*(select(data_table.c.ts, value).where(
                data_table.c.topic_id == topic_id, data_table.c.ts >= as_utc(a), data_table.c.ts < as_utc(b),
                value.isnot(None)) for a, b in windows)).subquery()
            bucket = self._bucket_expr(period_s, ranges.c.ts).label("bucket")
            stmt = select(bucket, func.sum(ranges.c.value_num), func.count(ranges.c.value_num)) \
                .group_by(bucket).order_by(bucket)
        else:
            bucket = self._bucket_expr(period_s).label("bucket")
            stmt = select(bucket, func.sum(value), func.count(value)) \
                .where(*self._time_filter(topic_id, start, end), value.isnot(None)).group_by(bucket).order_by(bucket)
        try:
            with self._engine.connect() as conn:
                return [(int(index) * period_s, float(total), int(n)) for index, total, n in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} query failed: {_reason(exc)}") from exc

    def readings(self, topic: str, start: datetime, end: datetime) -> list[tuple[datetime, Any]]:
        """Every reading of a topic in [start, end), oldest first, decoded."""
        topic_id = self._topic_id(topic)
        if topic_id is None:
            return []
        stmt = (select(data_table.c.ts, data_table.c.value_num, data_table.c.value_json)
                .where(and_(*self._time_filter(topic_id, start, end))).order_by(data_table.c.ts))
        try:
            with self._engine.connect() as conn:
                return [(ts, decode_value(num, js)) for ts, num, js in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} query failed: {_reason(exc)}") from exc

    def event_windows(self, event_id: str) -> list[EventWindow]:
        return self._events(events_table.c.event_id == event_id)

    def events_between(self, start: datetime, end: datetime) -> list[EventWindow]:
        """Event windows (any VEN) that overlap [start, end)."""
        return self._events(and_(events_table.c.start_ts < as_utc(end),
                                 events_table.c.end_ts > as_utc(start)))

    def _events(self, where: Any) -> list[EventWindow]:
        stmt = select(events_table).where(where).order_by(events_table.c.ven_id)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(stmt).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} query failed: {_reason(exc)}") from exc
        return [EventWindow(event_id=r["event_id"], ven_id=r["ven_id"], start=r["start_ts"], end=r["end_ts"],
                            restored=r["restored_ts"], requested_kw=r["requested_kw"],
                            modification_number=r["modification_number"]) for r in rows]

    def count_rows(self) -> int:
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(data_table)).scalar_one())
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} query failed: {_reason(exc)}") from exc

    def ping(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} unreachable: {_reason(exc)}") from exc


def _non_negative(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _load_meta(text_value: str | None) -> dict[str, Any]:
    if not text_value:
        return {}
    try:
        value = json.loads(text_value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reason(exc: SQLAlchemyError) -> str:
    """A one-line cause of a database error (the DBAPI message without SQL and parameters)."""
    if isinstance(exc, (DBAPIError, OperationalError)) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ''}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
