"""The historian's database schema and the values that cross the store's boundary.

    topics     (topic_id PK, topic_name, topic_key UNIQUE = lower(topic_name), metadata JSON text)
    data       (topic_id, ts, value_num, value_json)  PRIMARY KEY (topic_id, ts)
    dr_events  (event_id, ven_id, start_ts, end_ts, restored_ts, requested_kw, modification_number, op,
                issued_ts)  PRIMARY KEY (event_id, ven_id)
    schema_info(name PK, value)

`ts` is `TIMESTAMP WITH TIME ZONE` on PostgreSQL and integer microseconds since the epoch (UTC) on SQLite, where
`data` is a WITHOUT ROWID table clustered on (topic_id, ts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from dr_common.schema import PayloadError
from dr_historian.values import as_utc, from_micros, to_micros

SCHEMA_VERSION = "1"


class StoreError(RuntimeError):
    """The database cannot be reached or refused the operation (the message names the cause, never SQL)."""


class QueryError(PayloadError):
    """A query argument that cannot be used; `field` names it."""


class UtcTimestamp(TypeDecorator):
    """Aware UTC datetimes: timestamptz on PostgreSQL, integer microseconds on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):  # type: ignore[no-untyped-def]
        """BIGINT microseconds on SQLite, timestamptz elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        """An aware datetime to the column's representation."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return value if isinstance(value, int) else to_micros(value)
        return as_utc(value)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        """The column's representation to an aware UTC datetime."""
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


def load_meta(text_value: str | None) -> dict[str, Any]:
    """A topic's stored metadata (JSON text) as a dict; anything else as {}."""
    if not text_value:
        return {}
    try:
        value = json.loads(text_value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def reason(exc: SQLAlchemyError) -> str:
    """A one-line cause of a database error (the DBAPI message without SQL and parameters)."""
    if isinstance(exc, (DBAPIError, OperationalError)) and exc.orig is not None:
        text = str(exc.orig).strip()
        return f"{type(exc.orig).__name__}: {text.splitlines()[0] if text else ''}"
    return type(exc).__name__
