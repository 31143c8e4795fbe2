"""Store-and-forward queue for outbound MQTT messages: a bounded, ordered SQLite table.

Messages wait here while the broker is unreachable and are sent in order after reconnect; a row is deleted
only once the broker has acknowledged it (PUBACK), so a crash resends rather than loses. Row ids only grow
(AUTOINCREMENT), which keeps the send order and lets the sender keep a cursor.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

_log = logging.getLogger(__name__)


class OutboxError(RuntimeError):
    """The queue's database cannot be opened or written."""


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class SqliteOutbox:
    def __init__(self, path: str, max_messages: int) -> None:
        self.path = path
        self.max_messages = max_messages
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, queued_at REAL NOT NULL)")
            (self._depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc

    @property
    def depth(self) -> int:
        """Messages waiting or sent but not yet acknowledged by the broker."""
        return self._depth

    @property
    def free(self) -> int:
        return max(0, self.max_messages - self._depth)

    def put_many(self, rows: Iterable[tuple[str, bytes, int, bool]]) -> int:
        """Append messages in order, as many as the bound allows; returns how many were stored."""
        batch = list(rows)[: self.free]
        if not batch:
            return 0
        now = time.time()
        try:
            with self._tx():
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, retain, queued_at) VALUES (?, ?, ?, ?, ?)",
                    [(t, sqlite3.Binary(p), q, int(r), now) for t, p, q, r in batch])
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write to the outbox {self.path}: {exc}") from exc
        self._depth += len(batch)
        return len(batch)

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
        try:
            return self._db.execute("SELECT 1 FROM outbox WHERE id > ? LIMIT 1", (after_id,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc

    def delete(self, ids: Iterable[int]) -> int:
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
        row = self._db.execute("SELECT MIN(queued_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else max(0.0, time.time() - row[0])

    def close(self) -> None:
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
