"""PostgreSQL bulk writes of readings: binary COPY straight into `data`, else into a staging table and one upsert.

A write first streams its rows into `data` with `COPY ... FROM STDIN (FORMAT binary)` in bounded chunks, under a
savepoint: readings are new in the usual case, and then that is all the server does. When one of them is
already stored (a replay from the backup cache after an ambiguous commit, two writers of one topic), the COPY
fails with a unique violation, the savepoint is rolled back and the rows take the staged path: COPY into the
session's temporary table `pg_temp.dr_data_stage` (created by `create_stage` when a pooled connection opens;
its rows live until the end of the transaction, ON COMMIT DELETE ROWS, and a rollback discards them too), then
one `INSERT ... SELECT ... ON CONFLICT (topic_id, ts) DO UPDATE`. Both run inside the caller's transaction:
a reading with the same topic and time replaces the stored one, exactly as the executemany upsert did.

The binary format needs no escaping (any text goes into `value_json` as it is) and no timestamp parsing on the
server: `ts` is sent as PostgreSQL's own int8 microseconds since 2000-01-01 UTC.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

STAGE_TABLE = "pg_temp.dr_data_stage"
COPY_CHUNK = 5000  # rows per COPY stream (bounds the buffer, not the transaction)

CREATE_STAGE_SQL = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_TABLE.split('.', 1)[1]} ("
                    "topic_id integer NOT NULL, ts timestamptz NOT NULL, value_num double precision, "
                    "value_json text) ON COMMIT DELETE ROWS")
COPY_SQL = f"COPY {STAGE_TABLE} (topic_id, ts, value_num, value_json) FROM STDIN WITH (FORMAT binary)"
DIRECT_COPY_SQL = "COPY data (topic_id, ts, value_num, value_json) FROM STDIN WITH (FORMAT binary)"
UNIQUE_VIOLATION = "23505"  # SQLSTATE
DIRECT = "copy"
STAGED = "upsert"
MERGE_SQL = (f"INSERT INTO data (topic_id, ts, value_num, value_json) "
             f"SELECT topic_id, ts, value_num, value_json FROM {STAGE_TABLE} "
             "ON CONFLICT (topic_id, ts) DO UPDATE SET value_num = EXCLUDED.value_num, "
             "value_json = EXCLUDED.value_json")

_PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z in microseconds since the Unix epoch
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
# field count 4; topic_id int4; ts int8
_KEY = struct.Struct("!hiiiq")
_NUM = struct.Struct("!id")
_LEN = struct.Struct("!i")

Row = tuple[int, int, "float | None", "str | None"]  # (topic_id, ts as microseconds since the Unix epoch, num, json)


class DbapiCursor(Protocol):
    """The part of a psycopg2 cursor used here."""

    def execute(self, sql: str) -> Any: ...

    def copy_expert(self, sql: str, file: Any, size: int = ...) -> Any: ...

    def close(self) -> Any: ...


def encode_rows(rows: Iterable[Row]) -> bytes:
    """PostgreSQL's binary COPY stream (header, tuples, trailer) of staging rows."""
    key, num_pack, len_pack, offset = _KEY.pack, _NUM.pack, _LEN.pack, _PG_EPOCH_OFFSET_US
    parts = [_HEADER]
    append = parts.append
    for topic_id, micros, num, text in rows:
        append(key(4, 4, topic_id, 8, micros - offset))
        append(_NULL if num is None else num_pack(8, num))
        if text is None:
            append(_NULL)
        else:
            data = text.encode("utf-8")
            append(len_pack(len(data)))
            append(data)
    append(_TRAILER)
    return b"".join(parts)


def create_stage(cursor: DbapiCursor) -> None:
    """Create this session's staging table (run once per new connection; the caller commits)."""
    cursor.execute(CREATE_STAGE_SQL)


def copy_upsert(cursor: DbapiCursor, rows: Sequence[Row], driver_error: type[Exception],
                chunk: int | None = None) -> str | None:
    """Store `rows` (no two with the same topic_id and ts) in `data`, a stored (topic_id, ts) replaced, in the
    open transaction; `chunk` rows per COPY stream (default COPY_CHUNK). `driver_error` is the DBAPI's error
    class. Returns the path taken (DIRECT or STAGED), None for no rows."""
    if not rows:
        return None
    chunk = chunk or COPY_CHUNK
    try:
        # the savepoint rides in the first COPY's query string (libpq runs it, then enters the COPY): one round
        # trip less per batch; it is left to the transaction's end rather than released (another round trip)
        _copy(cursor, DIRECT_COPY_SQL, rows, chunk, first_prefix="SAVEPOINT dr_copy; ")
    except driver_error as exc:
        if getattr(exc, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        cursor.execute("ROLLBACK TO SAVEPOINT dr_copy")
        _copy(cursor, COPY_SQL, rows, chunk)
        cursor.execute(MERGE_SQL)
        return STAGED
    return DIRECT


def _copy(cursor: DbapiCursor, sql: str, rows: Sequence[Row], chunk: int, first_prefix: str = "") -> None:
    for start in range(0, len(rows), chunk):
        stream = encode_rows(rows[start:start + chunk])
        cursor.copy_expert(first_prefix + sql if start == 0 else sql, io.BytesIO(stream), size=len(stream))
