"""The read side of the store: VOLTTRON's query semantics, topic listing and matching, M&V sums, the DR event index.

Topic patterns are globs, not regular expressions: a user-supplied regex could backtrack for seconds on one
topic name and stall every caller. `*` matches any run of characters (`/` included), `?` one character, `[AB]`
one of a set; a pattern without any of these matches the topics that contain it. Matching ignores case.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, and_, func, select, type_coerce, union_all
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from dr_historian.schema import (
    EventWindow,
    QueryError,
    StoreError,
    data_table,
    events_table,
    reason,
    topics_table,
)
from dr_historian.values import UTC, as_utc, decode_value, format_timestamp

ORDER_FIRST_TO_LAST = "FIRST_TO_LAST"
ORDER_LAST_TO_FIRST = "LAST_TO_FIRST"
AGG_TYPES = ("avg", "min", "max", "sum", "count")
PATTERN_MAX_CHARS = 256
_GLOB_CHARS = frozenset("*?[")
_PERIOD_RE = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|hr|d|day|w|week)s?\s*$", re.IGNORECASE)
_PERIOD_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400,
                 "w": 604800, "week": 604800}


def parse_agg_period(period: object) -> int:
    """Seconds of an aggregation period like '15m', '1h', '1d', '300s' (or a number of seconds)."""
    if isinstance(period, (int, float)) and not isinstance(period, bool) and abs(period) < 10 ** 9:
        seconds = int(period)
    elif isinstance(period, str) and len(period) <= 32 and (match := _PERIOD_RE.match(period)):
        seconds = int(match.group(1)) * _PERIOD_UNITS[match.group(2).lower()]
    else:
        raise QueryError("agg_period", "must look like '15m', '1h' or '1d'")
    if not 0 < seconds <= 366 * 86400:
        raise QueryError("agg_period", "must be between 1 second and 366 days")
    return seconds


def topic_matcher(pattern: object) -> tuple[str, Callable[[str], bool]]:
    """(SQL LIKE prefilter on the lower-case topic key, exact test of a lower-case name) for a glob pattern."""
    if not isinstance(pattern, str) or not pattern:
        raise QueryError("topic_pattern", "must be a non-empty string")
    if len(pattern) > PATTERN_MAX_CHARS:
        raise QueryError("topic_pattern", f"must be at most {PATTERN_MAX_CHARS} characters")
    if any(ord(c) < 32 for c in pattern):
        raise QueryError("topic_pattern", "must not contain control characters")
    lowered = pattern.lower()
    escaped = lowered.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if not _GLOB_CHARS.intersection(lowered):
        return f"%{escaped}%", lambda name: lowered in name
    like = re.sub(r"\[[^\]]*\]", "_", escaped).replace("*", "%").replace("?", "_")
    rex = re.compile(fnmatch.translate(lowered), re.DOTALL)
    return like, lambda name: rex.match(name) is not None


def non_negative(value: object, name: str) -> int:
    """An int >= 0, or QueryError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(name, "must be a non-negative integer")
    return value


class Reader:
    """Queries of one database; `topic_id` resolves a topic name (cache, then the topics table)."""

    def __init__(self, engine: Engine, backend: str, topic_id: Callable[[str], int | None]) -> None:
        self._engine = engine
        self.backend = backend
        self._topic_id = topic_id

    def _failed(self, exc: SQLAlchemyError) -> StoreError:
        return StoreError(f"{self.backend} query failed: {reason(exc)}")

    # --- topics ---------------------------------------------------------------------------------------
    def topic_names(self, limit: int) -> list[str]:
        """At most `limit` topic names, sorted."""
        stmt = select(topics_table.c.topic_name).order_by(topics_table.c.topic_name).limit(limit)
        try:
            with self._engine.connect() as conn:
                return sorted(name for (name,) in conn.execute(stmt))
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc

    def topics_matching(self, pattern: object, limit: int) -> dict[str, int]:
        """{topic_name: topic_id} of at most `limit` topics matching a glob pattern (see the module docstring)."""
        like, test = topic_matcher(pattern)
        stmt = (select(topics_table.c.topic_key, topics_table.c.topic_name, topics_table.c.topic_id)
                .where(topics_table.c.topic_key.like(like, escape="\\")).order_by(topics_table.c.topic_key))
        out: dict[str, int] = {}
        try:
            with self._engine.connect() as conn:
                for key, name, topic_id in conn.execution_options(stream_results=True).execute(stmt):
                    if test(key):
                        out[name] = topic_id
                        if len(out) >= limit:
                            break
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        return out

    # --- readings -------------------------------------------------------------------------------------
    def query(self, names: Sequence[str], start: datetime | None, end: datetime | None, skip: int,
              count: int | None, order: str, agg_type: str | None, period_s: int | None) -> dict[str, list]:
        """{name: [[ts, value], ...]} of every known topic of `names` (see Store.query)."""
        found: dict[str, int] = {}
        for name in names:
            topic_id = self._topic_id(name)
            if topic_id is not None:
                found[name] = topic_id
        values: dict[str, list[list[Any]]] = {}
        try:
            with self._engine.connect() as conn:
                for name, topic_id in found.items():
                    if period_s is None or agg_type is None:
                        values[name] = self._query_raw(conn, topic_id, start, end, skip, count, order)
                    else:
                        values[name] = self._query_agg(conn, topic_id, start, end, skip, count, order, agg_type,
                                                       period_s)
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        return values

    @staticmethod
    def _time_filter(topic_id: int, start: datetime | None, end: datetime | None) -> list[Any]:
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
            raise self._failed(exc) from exc

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
            raise self._failed(exc) from exc

    # --- the DR event index -----------------------------------------------------------------------------
    def events(self, where: Any) -> list[EventWindow]:
        """Event windows matching a SQL condition on dr_events, by VEN."""
        stmt = select(events_table).where(where).order_by(events_table.c.ven_id)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(stmt).mappings().all()
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        return [EventWindow(event_id=r["event_id"], ven_id=r["ven_id"], start=r["start_ts"], end=r["end_ts"],
                            restored=r["restored_ts"], requested_kw=r["requested_kw"],
                            modification_number=r["modification_number"]) for r in rows]

    def count_rows(self) -> int:
        """Readings stored in all."""
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(data_table)).scalar_one())
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
