"""Building commands and keeping the book of what was sent, acked and is due for a retry.

Commands are idempotent by correlationId: the id is derived from (event, modification, revision, op, VEN),
so a retry or a resend after a restart carries the same id and a VEN applies it once. It ends with a MAC
(keyed BLAKE2b, 64 bits) of that derivation under the VTN's secret (kept in its store), so no VEN can derive
another VEN's id from its own. A command is sent again only while it is pending (active and not acked), at its backoff instant.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from dr_common.payloads import TRANSPORT_BUS, Command
from dr_common.timeutil import UTC
from dr_vtn_dispatcher.model import OP_EVENT, CommandRecord, Event, correlation_id

_log = logging.getLogger(__name__)

TAG_BYTES = 8  # the MAC part of a correlationId: 64 bits, 16 hex digits


class Sender(Protocol):
    """Where commands and event notices go. The agent implements it on the VOLTTRON bus."""

    def send_local(self, ven_id: str, payload: dict[str, Any]) -> None:
        """One command to a VEN on this platform (bus topic dr/cmd/<venId>)."""

    def send_batch(self, payloads: list[dict[str, Any]]) -> None:
        """Many commands for VENs reached over MQTT, in one hand-off to the bridge."""

    def publish_event(self, event: dict[str, Any]) -> None:
        """An event's new status (bus topic dr/event/<eventId>)."""

    def publish_telemetry(self, ven_id: str, payload: dict[str, Any]) -> None:
        """An OpenADR VEN's report as its telemetry (bus topic dr/telemetry/<venId>, published by dr.vtn)."""


def publish_event(sender: Sender, event: Event, counters: Counter[str]) -> None:
    """Publish an event's status; a notice that fails to go out never stops the lifecycle (counted, logged)."""
    try:
        sender.publish_event(event.to_dict())
    except Exception:  # the lifecycle goes on; the failure is counted and logged
        counters["publishErrors"] += 1
        _log.exception("publishing the status of event %s failed", event.event_id)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class PayloadFactory:
    """Renders CommandRecords to their canonical payload. Commands of one round that differ only in VEN,
    correlationId and kW share one `Command.to_payload()` template, so a round of thousands costs
    a dict copy per VEN."""

    def __init__(self) -> None:
        self._templates: dict[tuple[Any, ...], dict[str, Any]] = {}

    def render(self, record: CommandRecord, issued_at: float, cap_kw: float | None = None) -> dict[str, Any]:
        """The command's canonical payload as issued at `issued_at` (with `capKw` for a capped event's command)."""
        key = (record.event_id, record.op, record.modification_number, record.start, record.until,
               record.priority, record.test, issued_at, cap_kw)
        template = self._templates.get(key)
        if template is None:
            template = Command(op=record.op, correlation_id="", ven_id="", event_id=record.event_id,
                               requested_reduction_kw=0.0, start_time=_dt(record.start), until=_dt(record.until),
                               modification_number=record.modification_number, priority=record.priority,
                               test=record.test, issued_at=_dt(issued_at),
                               cap_kw=cap_kw if record.op == OP_EVENT else None).to_payload()
            self._templates[key] = template
        payload = dict(template)
        payload["correlationId"] = record.correlation_id
        payload["venId"] = record.ven_id
        if "requestedReductionKw" in payload:
            payload["requestedReductionKw"] = round(record.requested_kw, 4)
        return payload

    def clear(self) -> None:
        """Forget the templates of the round."""
        self._templates.clear()


class CommandBook:
    """Every command of the live events, indexed by correlationId, with a retry heap."""

    def __init__(self, retry_delay: Callable[[int], float], secret: bytes = b"") -> None:
        self.records: dict[str, CommandRecord] = {}
        # the keyed state, copied per id (cheaper than keying a new hash each time)
        self._mac = hashlib.blake2b(key=secret, digest_size=TAG_BYTES) if secret else None
        self._retry_delay = retry_delay
        self._heap: list[tuple[float, str]] = []
        self.factory = PayloadFactory()

    def correlation_id(self, event_id: str, modification: int, op: str, ven_id: str, revision: int = 0) -> str:
        """The command's id: its derivation plus a MAC of it under the VTN's secret (stable across retries
        and restarts, not derivable by a VEN). Keyed BLAKE2b: a MAC by design, a sixth of HMAC-SHA256's cost."""
        base = correlation_id(event_id, modification, op, ven_id, revision)
        if self._mac is None:
            return base
        mac = self._mac.copy()
        mac.update(base.encode("utf-8"))
        return f"{base}:{mac.hexdigest()}"

    def __contains__(self, correlation_id: str) -> bool:
        return correlation_id in self.records

    def get(self, correlation_id: str) -> CommandRecord | None:
        """The command of a correlationId, or None."""
        return self.records.get(correlation_id)

    def add(self, record: CommandRecord) -> CommandRecord:
        """Register a command; an id already known returns the known record (never a second command)."""
        known = self.records.get(record.correlation_id)
        if known is not None:
            return known
        self.records[record.correlation_id] = record
        if record.pending and record.next_retry_at is not None:
            heapq.heappush(self._heap, (record.next_retry_at, record.correlation_id))
        return record

    def forget_event(self, event_id: str) -> None:
        """Drop a finished event's commands from memory."""
        for cid in [cid for cid, rec in self.records.items() if rec.event_id == event_id]:
            del self.records[cid]

    def for_event(self, event_id: str) -> list[CommandRecord]:
        """The commands of one event."""
        return [rec for rec in self.records.values() if rec.event_id == event_id]

    def render_round(self, records: Iterable[CommandRecord], now: float,
                     transport_of: Callable[[str], str],
                     cap_of: Callable[[str], float | None] = lambda event_id: None) -> \
            tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
        """Mark `records` as sent at `now` and render them: (local [(venId, payload)], remote [payload]).
        Acked or inactive records are skipped, so nothing acked is ever sent twice."""
        local: list[tuple[str, dict[str, Any]]] = []
        remote: list[dict[str, Any]] = []
        for record in records:
            if not record.pending:
                continue
            record.attempts += 1
            if record.first_sent_at is None:
                record.first_sent_at = now
            record.last_sent_at = now
            record.next_retry_at = now + self._retry_delay(record.attempts)
            heapq.heappush(self._heap, (record.next_retry_at, record.correlation_id))
            payload = self.factory.render(record, now, cap_of(record.event_id))
            if transport_of(record.ven_id) == TRANSPORT_BUS:
                local.append((record.ven_id, payload))
            else:
                remote.append(payload)
        self.factory.clear()
        return local, remote

    def due(self, now: float) -> list[CommandRecord]:
        """Pending commands whose retry instant has come (each once)."""
        out: list[CommandRecord] = []
        seen: set[str] = set()
        while self._heap and self._heap[0][0] <= now + 1e-6:
            when, cid = heapq.heappop(self._heap)
            record = self.records.get(cid)
            if record is None or not record.pending or cid in seen:
                continue
            if record.next_retry_at is None or abs(record.next_retry_at - when) > 1e-6:
                continue  # a stale heap entry: the record was re-sent since
            seen.add(cid)
            out.append(record)
        return out

    def next_retry(self) -> float | None:
        """The earliest pending retry instant, or None."""
        while self._heap:
            when, cid = self._heap[0]
            record = self.records.get(cid)
            if record is not None and record.pending and record.next_retry_at is not None \
                    and abs(record.next_retry_at - when) <= 1e-6:
                return when
            heapq.heappop(self._heap)
        return None

    def pending_count(self) -> int:
        """Commands still waiting for an ack."""
        return sum(1 for rec in self.records.values() if rec.pending)


class MemorySender:
    """A Sender that keeps what it is given, with the clock reading of each hand-off (for tests, benches
    and dry runs)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self.local: list[tuple[float | None, str, dict[str, Any]]] = []
        self.batches: list[tuple[float | None, list[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self.telemetry: list[tuple[str, dict[str, Any]]] = []

    def _now(self) -> float | None:
        return self._clock() if self._clock is not None else None

    def send_local(self, ven_id: str, payload: dict[str, Any]) -> None:
        """Keep one local command."""
        self.local.append((self._now(), ven_id, payload))

    def send_batch(self, payloads: list[dict[str, Any]]) -> None:
        """Keep one batch."""
        self.batches.append((self._now(), list(payloads)))

    def publish_event(self, event: dict[str, Any]) -> None:
        """Keep one event notice."""
        self.events.append(event)

    def publish_telemetry(self, ven_id: str, payload: dict[str, Any]) -> None:
        """Keep one telemetry payload."""
        self.telemetry.append((ven_id, payload))

    def commands(self) -> list[dict[str, Any]]:
        """Every command handed over, local and batched, in order of hand-off per kind."""
        return [payload for _, _, payload in self.local] + [p for _, batch in self.batches for p in batch]

    def clear(self) -> None:
        """Forget everything kept."""
        self.local.clear()
        self.batches.clear()
        self.events.clear()
