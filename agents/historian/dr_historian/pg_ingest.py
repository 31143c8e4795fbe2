"""PostgreSQL bulk writes of readings: binary COPY straight into `data`, under a savepoint.

Readings are new in the usual case: then one `COPY ... FROM STDIN (FORMAT binary)` per bounded chunk is all the
server does (no per-row statement, no text parsing, `ts` sent as PostgreSQL's own int8 microseconds since
2000-01-01 UTC, any text in `value_json` as it is, without escaping). When one of them is already stored (a
replay from the backup cache after an ambiguous commit, two writers of one topic), the COPY fails with a unique
violation and `copy_rows` rolls back to its savepoint and says so: the caller then writes the batch with its
upsert (a stored reading replaced), in the same transaction. No session state is kept (no temporary table), so
a connection pooler in transaction mode and a role without the TEMP privilege work as well.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

COPY_CHUNK = 5000  # rows per COPY stream (bounds the buffer, not the transaction)
COPY_SQL = "COPY data (topic_id, ts, value_num, value_json) FROM STDIN WITH (FORMAT binary)"
SAVEPOINT = "dr_copy"
UNIQUE_VIOLATION = "23505"  # SQLSTATE

_PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z in microseconds since the Unix epoch
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
_KEY = struct.Struct("!hiiiq")  # field count 4; topic_id int4; ts int8
_NUM = struct.Struct("!id")
_LEN = struct.Struct("!i")

Row = tuple[int, int, "float | None", "str | None"]  # (topic_id, ts as microseconds since the Unix epoch, num, json)


class DbapiCursor(Protocol):
    """The part of a psycopg2 cursor used here."""

    def execute(self, sql: str) -> Any: ...

    def copy_expert(self, sql: str, file: Any, size: int = ...) -> Any: ...


def encode_rows(rows: Iterable[Row]) -> bytes:
    """PostgreSQL's binary COPY stream (header, tuples, trailer) of `data` rows."""
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


def copy_rows(cursor: DbapiCursor, rows: Sequence[Row], driver_error: type[Exception],
              chunk: int | None = None) -> bool:
    """COPY `rows` into `data` in the open transaction, `chunk` rows per stream (default COPY_CHUNK); True when
    they are in. False when one of them was already stored: nothing of them is then (rolled back to the
    savepoint) and the transaction goes on. Any other error of the driver (`driver_error`) is raised."""
    if not rows:
        return True
    chunk = chunk or COPY_CHUNK
    try:
        for start in range(0, len(rows), chunk):
            stream = encode_rows(rows[start:start + chunk])
            # the savepoint rides in the first COPY's query string (libpq runs it, then enters the COPY): one
            # round trip less per batch; it is left to the transaction's end rather than released
            sql = f"SAVEPOINT {SAVEPOINT}; {COPY_SQL}" if start == 0 else COPY_SQL
            cursor.copy_expert(sql, io.BytesIO(stream), size=len(stream))
    except driver_error as exc:
        if getattr(exc, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        return False
    return True
