"""The VTN's durable state on SQLAlchemy 2 (Core): SQLite by default, PostgreSQL when given a URL.

One code path for both; the schema is created on open. Times are float epoch seconds (UTC). Writes of one
logical change (an event with its participants and commands, an ack batch) happen in one transaction.

Tables: meta (the correlationId secret), vens, events, participants (one VEN in one event), commands (every
command with its send and ack bookkeeping), acks (every ack received, with its response time), telemetry (every telemetry summary).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text, create_engine, select
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from dr_vtn_dispatcher.model import OPEN_STATUSES, CommandRecord, Event, Participant, Ven

_log = logging.getLogger(__name__)

metadata = MetaData()

vens_table = Table(
    "vtn_vens", metadata,
    Column("ven_id", String(64), primary_key=True),
    Column("name", String(200)), Column("site", String(200)), Column("group_name", String(200)),
    Column("max_shed_kw", Float), Column("transport", String(16), nullable=False),
    Column("registered_at", Float, nullable=False), Column("updated_at", Float, nullable=False),
    Column("last_seen", Float), Column("reported_online", Boolean), Column("available_kw", Float),
    Column("used_kw", Float), Column("shed_kw", Float), Column("telemetry_ts", Float),
    Column("telemetry_event_id", String(128)),
)

events_table = Table(
    "vtn_events", metadata,
    Column("event_id", String(128), primary_key=True),
    Column("program_id", String(256)), Column("name", String(200)),
    Column("signal", String(32), nullable=False), Column("level", Integer),
    Column("requested_kw", Float, nullable=False),
    Column("start_ts", Float, nullable=False), Column("end_ts", Float, nullable=False),
    Column("ramp_up_s", Float, nullable=False), Column("randomize_s", Float, nullable=False),
    Column("priority", Integer, nullable=False), Column("test", Boolean, nullable=False),
    Column("ven_ids", Text, nullable=False), Column("groups", Text, nullable=False),
    Column("status", String(16), nullable=False), Column("modification_number", Integer, nullable=False),
    Column("created_at", Float, nullable=False), Column("updated_at", Float, nullable=False),
    Column("ended_at", Float),
    Index("ix_vtn_events_status", "status"), Index("ix_vtn_events_start", "start_ts"),
)

participants_table = Table(
    "vtn_participants", metadata,
    Column("event_id", String(128), primary_key=True), Column("ven_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False), Column("allocated_kw", Float, nullable=False),
    Column("accepted_kw", Float), Column("capped", Boolean, nullable=False), Column("offset_s", Float, nullable=False),
    Column("revision", Integer, nullable=False), Column("delivered_kw", Float), Column("delivered_at", Float),
    Column("restore_sent", Boolean, nullable=False),
)

commands_table = Table(
    "vtn_commands", metadata,
    Column("correlation_id", String(300), primary_key=True),
    Column("event_id", String(128), nullable=False), Column("ven_id", String(64), nullable=False),
    Column("op", String(16), nullable=False), Column("modification_number", Integer, nullable=False),
    Column("requested_kw", Float, nullable=False), Column("start_ts", Float), Column("until_ts", Float),
    Column("priority", Integer, nullable=False), Column("test", Boolean, nullable=False),
    Column("created_at", Float, nullable=False), Column("first_sent_at", Float), Column("last_sent_at", Float),
    Column("attempts", Integer, nullable=False), Column("next_retry_at", Float), Column("acked_at", Float),
    Column("ack_ok", Boolean), Column("accepted_kw", Float), Column("error", Text), Column("response_ms", Float),
    Column("active", Boolean, nullable=False),
    Index("ix_vtn_commands_event", "event_id"),
)

acks_table = Table(
    "vtn_acks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False), Column("correlation_id", String(300), nullable=False),
    Column("ven_id", String(64)), Column("event_id", String(128)), Column("op", String(16)),
    Column("ok", Boolean, nullable=False), Column("target_kw", Float), Column("accepted_kw", Float),
    Column("error", Text), Column("ack_ts", Float), Column("response_ms", Float),
    Column("outcome", String(16), nullable=False),  # recorded | duplicate | unknown | mismatch
    Index("ix_vtn_acks_event", "event_id"),
)

telemetry_table = Table(
    "vtn_telemetry", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ven_id", String(64), nullable=False), Column("ts", Float, nullable=False),
    Column("received_at", Float, nullable=False), Column("event_id", String(128)),
    Column("used_kw", Float), Column("shed_kw", Float), Column("requested_kw", Float),
    Column("baseline_kw", Float), Column("available_kw", Float),
    Index("ix_vtn_telemetry_ven_ts", "ven_id", "ts"), Index("ix_vtn_telemetry_event", "event_id"),
)

oadr_objects_table = Table(
    "vtn_oadr_objects", metadata,   # OpenADR 3 programs, VENs, resources, and the OpenADR side of events
    Column("object_type", String(16), primary_key=True), Column("object_id", String(128), primary_key=True),
    Column("body", Text, nullable=False), Column("created_at", Float, nullable=False),
    Column("modified_at", Float, nullable=False),
)

meta_table = Table(
    "vtn_meta", metadata,
    Column("name", String(64), primary_key=True), Column("value", Text, nullable=False),
)


@dataclass(frozen=True)
class AckRow:
    """One ack received, as written to vtn_acks."""
    received_at: float
    correlation_id: str
    ven_id: str | None
    event_id: str | None
    op: str | None
    ok: bool
    target_kw: float | None
    accepted_kw: float | None
    error: str | None
    ack_ts: float | None
    response_ms: float | None
    outcome: str


@dataclass(frozen=True)
class TelemetryRow:
    """One telemetry summary, as written to vtn_telemetry."""
    ven_id: str
    ts: float
    received_at: float
    event_id: str | None
    used_kw: float | None
    shed_kw: float | None
    requested_kw: float | None
    baseline_kw: float | None
    available_kw: float | None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


@dataclass(frozen=True)
class Write:
    """One prepared INSERT and the parameter tuples of its rows."""

    sql: str
    values: list[tuple[Any, ...]]


def _driver_error(dialect: str) -> type[Exception]:
    """The DB-API driver's base error class."""
    if dialect == "postgresql":
        import psycopg2

        return psycopg2.Error
    import sqlite3

    return sqlite3.Error


def sqlite_url(path: str) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{os.path.abspath(path)}"


class Store:
    """The dr.vtn store. `url` is any SQLAlchemy URL; SQLite and PostgreSQL are the two supported."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False})
            sa_event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        metadata.create_all(self.engine)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    # --- writing ---------------------------------------------------------------------------------
    def _statement(self, table: Table, rows: Sequence[dict[str, Any]], upsert: bool) -> Write:
        """INSERT of `rows` (all with the same keys) into `table`, as upserts on its primary key when `upsert`,
        with the parameter tuples for the DB-API driver: SQLAlchemy's executemany builds the parameters of every
        row in Python and takes about four times as long (every column is a number, text or boolean, which both
        drivers store as SQLAlchemy does)."""
        columns = list(rows[0])
        names = ", ".join(f'"{name}"' for name in columns)
        pg = self.dialect == "postgresql"
        placeholders = "%s" if pg else "(" + ", ".join("?" * len(columns)) + ")"
        sql = f'INSERT INTO "{table.name}" ({names}) VALUES {placeholders}'
        if upsert:
            keys = [column.name for column in table.primary_key.columns]
            conflict = ", ".join(f'"{key}"' for key in keys)
            updates = ", ".join(f'"{name}" = excluded."{name}"' for name in columns if name not in keys)
            sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        return Write(sql, [tuple(row[name] for name in columns) for row in rows])

    def prepare(self, *, vens: Iterable[Ven] = (), events: Iterable[Event] = (),
                participants: Iterable[Participant] = (), commands: Iterable[CommandRecord] = (),
                acks: Iterable[AckRow] = (), telemetry: Iterable[TelemetryRow] = ()) -> list[Write]:
        """The statements that `write` runs for these records (upserts for records, inserts for the ack and
        telemetry logs): rows are taken from the records now, so the records may change afterwards."""
        out = []
        for table, rows, upsert in (
                (vens_table, [_ven_row(v) for v in vens], True),
                (events_table, [_event_row(e) for e in events], True),
                (participants_table, [_participant_row(p) for p in participants], True),
                (commands_table, [_command_row(c) for c in commands], True),
                (acks_table, [a.__dict__ for a in acks], False),
                (telemetry_table, [t.__dict__ for t in telemetry], False)):
            if rows:
                out.append(self._statement(table, rows, upsert))
        return out

    def write(self, writes: Sequence[Write]) -> None:
        """Run prepared statements in one transaction, straight through the DB-API driver (PostgreSQL:
        multi-row statements in pages through psycopg2's execute_values, whose executemany sends a statement per
        row; SQLite: the sqlite3 module's executemany). Errors are raised as SQLAlchemy raises them
        (IntegrityError, OperationalError ...). Safe to call from another thread than the caller of `prepare`."""
        if not writes:
            return
        pg = self.dialect == "postgresql"
        error_class = _driver_error(self.dialect)
        with self.engine.begin() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                for statement in writes:
                    try:
                        if pg:
                            from psycopg2.extras import execute_values

                            execute_values(cursor, statement.sql, statement.values, page_size=1000)
                        else:
                            cursor.executemany(statement.sql, statement.values)
                    except error_class as exc:
                        raise DBAPIError.instance(statement.sql, None, exc, error_class,
                                                  dialect=conn.dialect) from exc
            finally:
                cursor.close()

    def save(self, **records: Any) -> None:
        """Write the records given (as `prepare` takes them) in one transaction."""
        self.write(self.prepare(**records))

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the store under `name`, created on first use (when two VTNs on one
        database create it at once, both end up with the one that was written first)."""
        query = select(meta_table.c.value).where(meta_table.c.name == name)
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
            if row is not None:
                return bytes.fromhex(row[0])
        try:
            with self.engine.begin() as conn:
                conn.execute(meta_table.insert().values(name=name, value=secrets.token_bytes(32).hex()))
        except IntegrityError:
            _log.info("the %s secret was created by another VTN on this database; using it", name)
        with self.engine.connect() as conn:
            return bytes.fromhex(conn.execute(query).scalar_one())

    # --- reading ---------------------------------------------------------------------------------
    def load_vens(self) -> list[Ven]:
        """Every registered VEN."""
        with self.engine.connect() as conn:
            return [_ven_from(row) for row in conn.execute(select(vens_table)).mappings()]

    def load_live_events(self, ended_since: float) -> list[Event]:
        """Open events, and finished ones that ended at or after `ended_since` (restores may be pending)."""
        query = select(events_table).where(events_table.c.status.in_(OPEN_STATUSES)
                                           | (events_table.c.ended_at >= ended_since))
        with self.engine.connect() as conn:
            return [_event_from(row) for row in conn.execute(query).mappings()]

    def get_event(self, event_id: str) -> Event | None:
        """One event, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(events_table).where(events_table.c.event_id == event_id)).mappings().first()
        return _event_from(row) if row is not None else None

    def list_events(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Event]:
        """Events by status, latest start first, paged."""
        query = select(events_table)
        if status is not None:
            query = query.where(events_table.c.status == status)
        query = query.order_by(events_table.c.start_ts.desc(), events_table.c.event_id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_event_from(row) for row in conn.execute(query).mappings()]

    def load_participants(self, event_ids: Sequence[str]) -> list[Participant]:
        """The participants of these events."""
        if not event_ids:
            return []
        query = select(participants_table).where(participants_table.c.event_id.in_(list(event_ids)))
        with self.engine.connect() as conn:
            return [Participant(**dict(row)) for row in conn.execute(query).mappings()]

    def load_commands(self, event_ids: Sequence[str]) -> list[CommandRecord]:
        """The commands of these events."""
        if not event_ids:
            return []
        query = select(commands_table).where(commands_table.c.event_id.in_(list(event_ids)))
        with self.engine.connect() as conn:
            return [_command_from(row) for row in conn.execute(query).mappings()]

    def acks(self, event_id: str | None = None) -> list[dict[str, Any]]:
        """Acks received (of one event, or all)."""
        query = select(acks_table).order_by(acks_table.c.id)
        if event_id is not None:
            query = query.where(acks_table.c.event_id == event_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def telemetry(self, ven_id: str | None = None, event_id: str | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        """Telemetry rows, filtered by VEN and event."""
        query = select(telemetry_table).order_by(telemetry_table.c.ts.desc()).limit(limit)
        if ven_id is not None:
            query = query.where(telemetry_table.c.ven_id == ven_id)
        if event_id is not None:
            query = query.where(telemetry_table.c.event_id == event_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]


    def delete_ven(self, ven_id: str) -> None:
        """Remove a registered VEN (its acks and telemetry rows stay, as history)."""
        with self.engine.begin() as conn:
            conn.execute(vens_table.delete().where(vens_table.c.ven_id == ven_id))

    # --- OpenADR 3 objects (written at once: they change at the pace of an operator) ------------------
    def load_oadr_objects(self) -> list[dict[str, Any]]:
        """Every stored OpenADR object: `object_type, object_id, body` (JSON text), `created_at, modified_at`."""
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(select(oadr_objects_table)).mappings()]

    def save_oadr_object(self, object_type: str, object_id: str, body: str, created_at: float,
                         modified_at: float) -> None:
        """Insert or replace one OpenADR object."""
        row = {"object_type": object_type, "object_id": object_id, "body": body, "created_at": created_at,
               "modified_at": modified_at}
        self.write([self._statement(oadr_objects_table, [row], True)])

    def save_oadr_objects(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace many OpenADR objects (`object_type, object_id, body, created_at, modified_at`) in one
        transaction."""
        if rows:
            self.write([self._statement(oadr_objects_table, list(rows), True)])

    def delete_oadr_object(self, object_type: str, object_id: str) -> None:
        """Remove one OpenADR object (nothing when it is not there)."""
        table = oadr_objects_table
        with self.engine.begin() as conn:
            conn.execute(table.delete().where((table.c.object_type == object_type) & (table.c.object_id == object_id)))


def _ven_row(v: Ven) -> dict[str, Any]:
    return {"ven_id": v.ven_id, "name": v.name, "site": v.site, "group_name": v.group, "max_shed_kw": v.max_shed_kw,
            "transport": v.transport, "registered_at": v.registered_at, "updated_at": v.updated_at,
            "last_seen": v.last_seen, "reported_online": v.reported_online, "available_kw": v.available_kw,
            "used_kw": v.used_kw, "shed_kw": v.shed_kw, "telemetry_ts": v.telemetry_ts,
            "telemetry_event_id": v.telemetry_event_id}


def _ven_from(row: Any) -> Ven:
    data = dict(row)
    data["group"] = data.pop("group_name")
    return Ven(**data)


def _event_row(e: Event) -> dict[str, Any]:
    return {"event_id": e.event_id, "program_id": e.program_id, "name": e.name, "signal": e.signal, "level": e.level,
            "requested_kw": e.requested_kw, "start_ts": e.start, "end_ts": e.end, "ramp_up_s": e.ramp_up_s,
            "randomize_s": e.randomize_s, "priority": e.priority, "test": e.test,
            "ven_ids": json.dumps(e.ven_ids), "groups": json.dumps(e.groups), "status": e.status,
            "modification_number": e.modification_number, "created_at": e.created_at, "updated_at": e.updated_at,
            "ended_at": e.ended_at}


def _event_from(row: Any) -> Event:
    return Event(event_id=row["event_id"], start=row["start_ts"], end=row["end_ts"], requested_kw=row["requested_kw"],
                 signal=row["signal"], level=row["level"], program_id=row["program_id"], name=row["name"],
                 ven_ids=json.loads(row["ven_ids"]), groups=json.loads(row["groups"]), ramp_up_s=row["ramp_up_s"],
                 randomize_s=row["randomize_s"], priority=row["priority"], test=bool(row["test"]),
                 status=row["status"], modification_number=row["modification_number"],
                 created_at=row["created_at"], updated_at=row["updated_at"], ended_at=row["ended_at"])


def _participant_row(p: Participant) -> dict[str, Any]:
    return {"event_id": p.event_id, "ven_id": p.ven_id, "state": p.state, "allocated_kw": p.allocated_kw,
            "accepted_kw": p.accepted_kw, "capped": p.capped, "offset_s": p.offset_s, "revision": p.revision,
            "delivered_kw": p.delivered_kw, "delivered_at": p.delivered_at, "restore_sent": p.restore_sent}


def _command_row(c: CommandRecord) -> dict[str, Any]:
    return {"correlation_id": c.correlation_id, "event_id": c.event_id, "ven_id": c.ven_id, "op": c.op,
            "modification_number": c.modification_number, "requested_kw": c.requested_kw, "start_ts": c.start,
            "until_ts": c.until, "priority": c.priority, "test": c.test, "created_at": c.created_at,
            "first_sent_at": c.first_sent_at, "last_sent_at": c.last_sent_at, "attempts": c.attempts,
            "next_retry_at": c.next_retry_at, "acked_at": c.acked_at, "ack_ok": c.ack_ok,
            "accepted_kw": c.accepted_kw, "error": c.error, "response_ms": c.response_ms, "active": c.active}


def _command_from(row: Any) -> CommandRecord:
    data = dict(row)
    data["start"] = data.pop("start_ts")
    data["until"] = data.pop("until_ts")
    return CommandRecord(**data)
