"""PostgreSQL bulk writes of readings: binary COPY into a per-session staging table, then one upsert.

Every pooled connection gets a temporary table `pg_temp.dr_data_stage` when it opens (`create_stage`), whose
rows live until the end of the transaction (ON COMMIT DELETE ROWS; a rollback discards them too). A write
streams its rows into it with `COPY ... FROM STDIN (FORMAT binary)` in bounded chunks and moves them into
`data` with one `INSERT ... SELECT ... ON CONFLICT (topic_id, ts) DO UPDATE`, inside the caller's transaction:
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


def copy_upsert(cursor: DbapiCursor, rows: Sequence[Row], chunk: int | None = None) -> None:
    """Stage `rows` (no two with the same topic_id and ts) and upsert them into `data`, in the open transaction;
    `chunk` rows per COPY stream (default COPY_CHUNK)."""
    if not rows:
        return
    chunk = chunk or COPY_CHUNK
    for start in range(0, len(rows), chunk):
        stream = encode_rows(rows[start:start + chunk])
        cursor.copy_expert(COPY_SQL, io.BytesIO(stream), size=len(stream))
    cursor.execute(MERGE_SQL)
