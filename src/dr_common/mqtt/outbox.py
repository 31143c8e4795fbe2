"""Store-and-forward queue for outbound MQTT messages: a bounded, ordered SQLite table.

Messages wait here while the broker is unreachable and are sent in order after reconnect; a row is deleted
only once the broker has acknowledged it (PUBACK), so a crash resends rather than loses. Row ids only grow
(AUTOINCREMENT), which keeps the send order and lets the sender keep a cursor.

Every row has a class (PRIO_TELEMETRY < PRIO_NORMAL < PRIO_HIGH). When the queue is full, a new message
pushes out the oldest message of a lower class (telemetry first); a high message (a restore, an ack) that
finds nothing lower to push out may use a reserve of HIGH_RESERVE beyond the bound; only then is it refused.
Telemetry older than `telemetry_ttl_s` expires: stale readings are worth less than the room they take.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_log = logging.getLogger(__name__)


PRIO_TELEMETRY = 0
PRIO_NORMAL = 1
PRIO_HIGH = 2


def high_reserve(max_messages: int) -> int:
    """Rows high-priority messages may hold beyond `max_messages` (a tenth, at least 1)."""
    return max(1, max_messages // 10)


@dataclass(frozen=True)
class PutResult:
    """What `put_many` did: stored (in order), shed (older lower-class rows pushed out), refused."""

    stored: int
    shed: int
    refused: int


class OutboxError(RuntimeError):
    """The queue's database cannot be opened or written."""


@dataclass(frozen=True)
class OutboxRow:
    """One queued message."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class SqliteOutbox:
    """The queue; `clock` gives wall-clock seconds (queued_at, telemetry expiry)."""

    def __init__(self, path: str, max_messages: int, telemetry_ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.max_messages = max_messages
        self.telemetry_ttl_s = telemetry_ttl_s
        self._clock = clock
        self.expired = 0  # telemetry rows expired since opened
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, queued_at REAL NOT NULL, "
                f"priority INTEGER NOT NULL DEFAULT {PRIO_NORMAL})")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            if "priority" not in columns:  # a queue written before classes existed
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT {PRIO_NORMAL}")
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_priority ON outbox (priority, id)")
            (self._depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc

    @property
    def depth(self) -> int:
        """Messages waiting or sent but not yet acknowledged by the broker."""
        return self._depth

    @property
    def free(self) -> int:
        """Rows left under `max_messages` (the high reserve not counted)."""
        return max(0, self.max_messages - self._depth)

    def put_many(self, rows: Iterable[tuple[str, bytes, int, bool, int]]) -> PutResult:
        """Append (topic, payload, qos, retain, priority) messages in order. Beyond the bound, each pushes out
        the oldest row of a lower class; a high one may then use the reserve; the rest are refused."""
        incoming = list(rows)
        if not incoming:
            return PutResult(0, 0, 0)
        if len(incoming) > self.free:
            self.expire()
        free = self.free
        accepted = incoming[:free]
        evict = {PRIO_TELEMETRY: 0, PRIO_NORMAL: 0}
        refused = 0
        if len(incoming) > free:
            counts = self._counts()
            reserve = self.max_messages + high_reserve(self.max_messages) - max(self._depth, self.max_messages)
            for row in incoming[free:]:  # in order: accepted rows keep the order they came in
                prio = row[4]
                victim = next((k for k in (PRIO_TELEMETRY, PRIO_NORMAL)
                               if k < prio and counts.get(k, 0) - evict[k] > 0), None)
                if victim is not None:
                    evict[victim] += 1
                    accepted.append(row)
                elif prio >= PRIO_HIGH and reserve > 0:
                    reserve -= 1
                    accepted.append(row)
                else:
                    refused += 1
        now = self._clock()
        shed = 0
        try:
            with self._tx():
                for prio, n in evict.items():
                    if n:
                        cur = self._db.execute(
                            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE priority = ? "
                            "ORDER BY id LIMIT ?)", (prio, n))
                        shed += cur.rowcount
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, retain, queued_at, priority) VALUES (?, ?, ?, ?, ?, ?)",
                    [(t, sqlite3.Binary(p), q, int(r), now, pr) for t, p, q, r, pr in accepted])
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write to the outbox {self.path}: {exc}") from exc
        self._depth += len(accepted) - shed
        return PutResult(len(accepted), shed, refused)

    def expire(self) -> int:
        """Delete telemetry queued longer than `telemetry_ttl_s` ago (0: never); returns how many."""
        if self.telemetry_ttl_s <= 0 or self._depth == 0:
            return 0
        try:
            with self._tx():
                cur = self._db.execute("DELETE FROM outbox WHERE priority = ? AND queued_at < ?",
                                       (PRIO_TELEMETRY, self._clock() - self.telemetry_ttl_s))
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot expire rows of the outbox {self.path}: {exc}") from exc
        self._depth -= cur.rowcount
        self.expired += cur.rowcount
        return cur.rowcount

    def _counts(self) -> dict[int, int]:
        try:
            return dict(self._db.execute("SELECT priority, COUNT(*) FROM outbox GROUP BY priority").fetchall())
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc

    def recount(self) -> int:
        """Re-read the depth from the table (another handle may have deleted rows); returns it."""
        try:
            (self._depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc
        return self._depth

    def read_after(self, after_id: int, limit: int) -> list[OutboxRow]:
        """The next `limit` messages with an id above `after_id`, oldest first."""
        try:
            cur = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit))
            return [OutboxRow(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in cur.fetchall()]
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc

    def has_after(self, after_id: int) -> bool:
        """True when a row with an id above `after_id` waits."""
        try:
            return self._db.execute("SELECT 1 FROM outbox WHERE id > ? LIMIT 1", (after_id,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc

    def delete(self, ids: Iterable[int]) -> int:
        """Delete acknowledged rows; returns how many existed."""
        id_list = list(ids)
        if not id_list:
            return 0
        try:
            with self._tx():
                deleted = 0
                for start in range(0, len(id_list), 500):
                    chunk = id_list[start:start + 500]
                    cur = self._db.execute(
                        f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                    deleted += cur.rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot delete from the outbox {self.path}: {exc}") from exc
        self._depth -= deleted
        return deleted

    def oldest_age_s(self) -> float | None:
        """Seconds the oldest row has waited (None when empty)."""
        row = self._db.execute("SELECT MIN(queued_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else max(0.0, self._clock() - row[0])

    def close(self) -> None:
        """Close the database (rows stay for the next start)."""
        try:
            self._db.close()
        except sqlite3.Error as exc:
            _log.warning("closing the outbox %s failed: %s", self.path, exc)

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
