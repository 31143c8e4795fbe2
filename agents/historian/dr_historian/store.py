"""Time-series storage on SQLAlchemy 2, one code path for SQLite and PostgreSQL (psycopg2).

The schema is in `schema.py` (created automatically), the read side in `reads.py`. A write is one transaction:
new topics, metadata changes, readings (an existing (topic, ts) is replaced, so a replay after an ambiguous
commit stores each reading once) and the DR event index. Topic ids are cached in a bounded `TopicCache`.
Readings go to SQLite by an executemany upsert, to PostgreSQL by binary COPY (`pg_ingest.py`), with the upsert
only for a batch holding a reading that is stored already.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, create_engine, event, select, text
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from dr_historian import pg_ingest
from dr_historian.reads import (
    AGG_TYPES,
    ORDER_FIRST_TO_LAST,
    ORDER_LAST_TO_FIRST,
    Reader,
    non_negative,
    parse_agg_period,
)
from dr_historian.schema import (
    SCHEMA_VERSION,
    EventEntry,
    EventWindow,
    Point,
    QueryError,
    StoreError,
    data_table,
    events_table,
    load_meta,
    metadata,
    reason,
    schema_info_table,
    topics_table,
)
from dr_historian.topic_cache import DEFAULT_MAX_TOPICS, TopicCache, TopicEntry
from dr_historian.values import as_utc, encode_value, from_micros, to_micros

_log = logging.getLogger(__name__)

__all__ = ["AGG_TYPES", "ORDER_FIRST_TO_LAST", "ORDER_LAST_TO_FIRST", "EventEntry", "EventWindow", "Point",
           "QueryError", "Store", "StoreError", "data_table", "events_table", "parse_agg_period", "topics_table"]

_INSERT_CHUNK = 2000
_KEY_CHUNK = 500


class Store:
    """A historian database. Safe to share between the writer thread and query callers."""

    def __init__(self, url: str, connect_timeout_s: float = 5.0, application_name: str = "platform.historian",
                 max_cached_topics: int = DEFAULT_MAX_TOPICS) -> None:
        self.url = url
        self.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._engine = self._make_engine(url, connect_timeout_s, application_name)
        upsert = sqlite_dialect.insert(data_table)
        upsert = upsert.on_conflict_do_update(index_elements=["topic_id", "ts"],
                                              set_={c: upsert.excluded[c] for c in ("value_num", "value_json")})
        self._sqlite_upsert_sql = str(upsert.compile(dialect=sqlite_dialect.dialect()))
        self.topics = TopicCache(max_cached_topics)
        self._reader = Reader(self._engine, self.backend, self._topic_id)
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
        """Create the schema when missing (idempotent)."""
        try:
            with self._engine.begin() as conn:
                self._check_foreign_schema(conn)
                metadata.create_all(conn, checkfirst=True)
                self._upsert(conn, schema_info_table, [{"name": "schema_version", "value": SCHEMA_VERSION}],
                             ["name"], ["value"])
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot set up {self.backend} historian database: {reason(exc)}") from exc
        self._ready = True

    @staticmethod
    def _check_foreign_schema(conn: Connection) -> None:
        names = set(conn.dialect.get_table_names(conn))
        if "data" in names:
            columns = {c["name"] for c in conn.dialect.get_columns(conn, "data")}
            if "value_num" not in columns:
                raise StoreError("the database already has a 'data' table of another historian schema "
                                 f"(columns {sorted(columns)}); point this historian at its own database")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @property
    def ready(self) -> bool:
        """True once the schema is set up."""
        return self._ready

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (benchmarks and tests)."""
        return self._engine

    # --- writing -------------------------------------------------------------------------------------
    def write(self, points: Sequence[Point], events: Sequence[EventEntry] = ()) -> int:
        """Store readings (and DR event index entries) in one transaction; returns the number of readings.

        Raises StoreError when the database is unreachable or refuses; nothing is stored then.
        """
        if not self._ready:
            self.setup()
        latest: dict[tuple[str, int], Any] = {}
        topics: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        for point in points:
            key = point.topic.lower()
            latest[(key, to_micros(point.ts))] = point.value
            topics[key] = (point.topic, point.meta or topics.get(key, (None, None))[1])
        try:
            with self._engine.begin() as conn:
                ids, resolved = self._resolve_topics(conn, topics)
                # plain tuples, not Core parameter dicts: the per-row parameter processing of Core costs more
                # than the database's insert itself
                tuples = [(ids[key], micros, *encode_value(value)) for (key, micros), value in latest.items()]
                if self.backend == "sqlite":
                    for start in range(0, len(tuples), _INSERT_CHUNK):
                        conn.exec_driver_sql(self._sqlite_upsert_sql, tuples[start:start + _INSERT_CHUNK])
                elif not self._copy(conn, tuples):  # a reading of the batch is stored already: upsert them all
                    rows = [{"topic_id": topic_id, "ts": from_micros(micros), "value_num": num, "value_json": js}
                            for topic_id, micros, num, js in tuples]
                    for start in range(0, len(rows), _INSERT_CHUNK):
                        self._upsert(conn, data_table, rows[start:start + _INSERT_CHUNK], ["topic_id", "ts"],
                                     ["value_num", "value_json"])
                if events:
                    self._write_events(conn, events)
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} write of {len(latest)} readings failed: {reason(exc)}") from exc
        for key, entry in resolved.items():  # only once committed
            self.topics.put(key, entry)
        return len(latest)

    def _copy(self, conn: Connection, rows: list[tuple[Any, ...]]) -> bool:
        """pg_ingest's COPY on the connection's DBAPI cursor (False: a reading was stored already, nothing
        copied), its errors raised as SQLAlchemy's (a lost connection invalidated, as SQLAlchemy does for the
        statements it runs itself)."""
        dialect = self._engine.dialect
        dbapi_conn = conn.connection.dbapi_connection
        cursor = dbapi_conn.cursor()
        try:
            return pg_ingest.copy_rows(cursor, rows, dialect.loaded_dbapi.Error)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, cursor):
                conn.invalidate(exc)
            raise DBAPIError.instance(pg_ingest.COPY_SQL, None, exc, dialect.loaded_dbapi.Error) from exc
        finally:
            if not cursor.closed:
                cursor.close()

    def _resolve_topics(self, conn: Connection, topics: Mapping[str, tuple[str, Mapping[str, Any] | None]],
                        ) -> tuple[dict[str, int], dict[str, TopicEntry]]:
        """Topic ids of the batch (new topics inserted, changed metadata updated) and the cache entries to keep."""
        ids: dict[str, int] = {}
        resolved: dict[str, TopicEntry] = {}
        wanted: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, (name, meta) in topics.items():
            entry = self.topics.get(key)
            if entry is None:
                wanted[key] = (name, dict(meta or {}))
                continue
            ids[key] = entry.topic_id
            if meta and meta != entry.meta:
                self._update_meta(conn, entry.topic_id, meta)
                resolved[key] = TopicEntry(entry.topic_id, entry.name, dict(meta))
        if not wanted:
            return ids, resolved
        rows = [{"topic_name": name, "topic_key": key, "metadata": json.dumps(meta, default=str)}
                for key, (name, meta) in wanted.items()]
        inserted = self._insert_topics(conn, rows)
        for row in rows:
            key = row["topic_key"]
            if key in inserted:  # inserted now (PostgreSQL says which): no need to read them back
                ids[key] = inserted[key]
                resolved[key] = TopicEntry(inserted[key], row["topic_name"], load_meta(row["metadata"]))
        keys = [key for key in wanted if key not in ids]
        for start in range(0, len(keys), _KEY_CHUNK):
            found = conn.execute(select(topics_table.c.topic_key, topics_table.c.topic_id,
                                        topics_table.c.topic_name, topics_table.c.metadata)
                                 .where(topics_table.c.topic_key.in_(keys[start:start + _KEY_CHUNK]))).all()
            for key, topic_id, name, stored in found:
                ids[key] = topic_id
                meta = load_meta(stored)
                given = wanted[key][1]
                if given and given != meta:  # a known topic that was not cached, with new metadata
                    self._update_meta(conn, topic_id, given)
                    meta = given
                resolved[key] = TopicEntry(topic_id, name, meta)
        return ids, resolved

    @staticmethod
    def _update_meta(conn: Connection, topic_id: int, meta: Mapping[str, Any]) -> None:
        conn.execute(topics_table.update().where(topics_table.c.topic_id == topic_id)
                     .values(metadata=json.dumps(dict(meta), default=str)))

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

    def _insert_topics(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Insert the topics not stored yet (a stored topic_key is skipped); on PostgreSQL {topic_key: topic_id}
        of the rows inserted, on SQLite {}."""
        if self.backend == "sqlite":
            conn.execute(sqlite_dialect.insert(topics_table).on_conflict_do_nothing(index_elements=["topic_key"]),
                         rows)
            return {}
        # with RETURNING SQLAlchemy sends multi-row INSERTs (see _upsert)
        stmt = pg_dialect.insert(topics_table).on_conflict_do_nothing(index_elements=["topic_key"])
        return dict(conn.execute(stmt.returning(topics_table.c.topic_key, topics_table.c.topic_id), rows).all())

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
    def _topic_id(self, name: str) -> int | None:
        """The id of a topic name (any case): the cache, else the topics table (written by another process)."""
        key = name.lower()
        entry = self.topics.get(key)
        if entry is not None:
            return entry.topic_id
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(topics_table.c.topic_id, topics_table.c.topic_name,
                                          topics_table.c.metadata).where(topics_table.c.topic_key == key)).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read topics from {self.backend}: {reason(exc)}") from exc
        if row is None:
            return None
        self.topics.put(key, TopicEntry(row[0], row[1], load_meta(row[2])))
        return int(row[0])

    def topic_list(self, limit: int = 100_000) -> list[str]:
        """At most `limit` topic names, sorted case-insensitively."""
        return self._reader.topic_names(limit)

    def topics_by_pattern(self, pattern: object, limit: int = 100_000) -> dict[str, int]:
        """{topic_name: topic_id} of at most `limit` topics matching a glob pattern (see reads.py)."""
        return self._reader.topics_matching(pattern, limit)

    def topics_metadata(self, topics: str | Sequence[str]) -> dict[str, dict[str, Any]]:
        """{topic: metadata} of the known topics among `topics`."""
        names = [topics] if isinstance(topics, str) else list(topics)
        out = {}
        for name in names:
            if self._topic_id(name) is not None:
                entry = self.topics.get(name.lower())
                out[name] = dict(entry.meta) if entry else {}
        return out

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
            raise QueryError("topic", "must be a topic name or a non-empty list of topic names")
        if order not in (ORDER_FIRST_TO_LAST, ORDER_LAST_TO_FIRST):
            raise QueryError("order", f"must be {ORDER_FIRST_TO_LAST} or {ORDER_LAST_TO_FIRST}")
        skip = non_negative(skip, "skip")
        if count is not None:
            count = non_negative(count, "count")
        period_s = None
        if agg_type is not None or agg_period is not None:
            if not agg_type or agg_period is None:
                raise QueryError("agg_type" if not agg_type else "agg_period",
                                 "give both agg_type and agg_period to query aggregated data")
            if not isinstance(agg_type, str) or agg_type.lower() not in AGG_TYPES:
                raise QueryError("agg_type", f"must be one of {', '.join(AGG_TYPES)}")
            agg_type = agg_type.lower()
            period_s = parse_agg_period(agg_period)
        values = self._reader.query(names, start, end, skip, count, order, agg_type, period_s)
        if multi:
            return {"values": values, "metadata": {}}
        name = names[0]
        entry = self.topics.get(name.lower()) if name in values else None
        return {"values": values.get(name, []), "metadata": dict(entry.meta) if entry else {}}

    def interval_sums(self, topic: str, start: datetime, end: datetime, period_s: int,
                      windows: Sequence[tuple[datetime, datetime]] | None = None) -> list[tuple[int, float, int]]:
        """(period start in epoch seconds, sum, count) of a topic's numeric readings (see Reader.interval_sums)."""
        return self._reader.interval_sums(topic, start, end, period_s, windows)

    def readings(self, topic: str, start: datetime, end: datetime) -> list[tuple[datetime, Any]]:
        """Every reading of a topic in [start, end), oldest first, decoded."""
        return self._reader.readings(topic, start, end)

    def event_windows(self, event_id: str) -> list[EventWindow]:
        """Every VEN's window of one event."""
        return self._reader.events(events_table.c.event_id == event_id)

    def events_between(self, start: datetime, end: datetime) -> list[EventWindow]:
        """Event windows (any VEN) that overlap [start, end)."""
        return self._reader.events(and_(events_table.c.start_ts < as_utc(end), events_table.c.end_ts > as_utc(start)))

    def count_rows(self) -> int:
        """Readings stored in all."""
        return self._reader.count_rows()

    def ping(self) -> None:
        """Raise StoreError when the database cannot be reached."""
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.backend} unreachable: {reason(exc)}") from exc
