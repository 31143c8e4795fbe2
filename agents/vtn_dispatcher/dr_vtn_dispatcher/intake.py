"""What VENs send the VTN (acks, telemetry, status), bound to the VEN the transport authenticated.

A VEN acts only as itself. On a per-VEN bus topic (`dr/ack/<venId>`, `dr/telemetry/<venId>`) the bus sender
must be that VEN's agent (`dr.ven.<venId>`) or a trusted bridge (`trustedBridges`, default `dr.mqtt`), and a
venId in the payload must be the topic's. Batches (`dr/batch/ack`, `dr/batch/telemetry`, `dr/batch/status`)
are accepted only from a trusted bridge, which sets each item's venId from the MQTT topic it came on (and
refuses items whose payload disagrees); each item then speaks for its venId only. Items of unregistered VENs
are refused and counted, never stored. Every refusal is counted in `health.counters`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from dr_common import topics
from dr_common.payloads import Telemetry, VenStatus
from dr_common.schema import PayloadError, check_id
from dr_vtn_dispatcher import inbound
from dr_vtn_dispatcher.dispatcher import Dispatcher
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.lifecycle import Scheduler
from dr_vtn_dispatcher.participation import Participation
from dr_vtn_dispatcher.registry import Registry
from dr_vtn_dispatcher.store import TelemetryRow

KINDS = ("ack", "telemetry", "status")


class Intake:
    """Parses, authenticates and applies inbound messages."""

    def __init__(self, registry: Registry, participation: Participation, dispatcher: Dispatcher,
                 journal: Journal, scheduler: Scheduler, trusted_bridges: tuple[str, ...],
                 counters: Counter[str]) -> None:
        self.registry = registry
        self.parts = participation
        self.dispatcher = dispatcher
        self.journal = journal
        self.clock = scheduler
        self.trusted = frozenset(trusted_bridges)
        self.counters = counters

    def ingest(self, kind: str, message: object, ven_id: str | None, sender: str) -> list[str]:
        """Parse one bus message (`kind` ack / telemetry / status; `ven_id` from a per-VEN topic, None for a
        batch; `sender` the bus identity that published it) and apply what it may say. Returns the errors of
        the items that were refused."""
        parse: Callable[..., Any] = {"ack": inbound.parse_ack, "telemetry": inbound.parse_telemetry,
                                     "status": inbound.parse_status}[kind]
        if ven_id is not None:
            try:
                check_id(ven_id, "venId")
            except PayloadError as exc:
                self.counters["badMessages"] += 1
                return [str(exc)]
            if sender != topics.ven_identity(ven_id) and sender not in self.trusted:
                self.counters["senderMismatch"] += 1
                return [f"field 'venId': {sender!r} may not speak for VEN {ven_id!r}"]
            try:
                item = parse(message, ven_id)
                if item.ven_id != ven_id:
                    raise PayloadError("venId", f"{item.ven_id!r} disagrees with the topic's {ven_id!r}")
                parsed = inbound.Parsed(items=[item])
            except PayloadError as exc:
                parsed = inbound.Parsed(errors=[str(exc)])
        else:
            if sender not in self.trusted:
                self.counters["senderMismatch"] += 1
                return [f"<sender>: {sender!r} is not a trusted bridge; batches are refused"]
            parsed = inbound.parse_batch(message, parse)
            missing = [item for item in parsed.items if item.ven_id is None]
            if missing:
                parsed.items = [item for item in parsed.items if item.ven_id is not None]
                parsed.errors.extend("field 'venId': is required in a batch item" for _ in missing)
        if parsed.errors:
            self.counters["badMessages"] += len(parsed.errors)
        if parsed.items:
            if kind == "ack":
                self.dispatcher.on_acks(parsed.items)
            elif kind == "telemetry":
                self.on_telemetry(parsed.items)
            else:
                self.on_status(parsed.items)
        return parsed.errors

    def on_telemetry(self, items: list[Telemetry]) -> None:
        """Apply telemetry of registered VENs (latest summary, delivered kW of the event each serves) and keep
        it for the store; telemetry of unregistered VENs is refused and counted."""
        now = self.clock.now()
        for t in items:
            ven = self.registry.get(t.ven_id)
            if ven is None:
                self.counters["unknownVenTelemetry"] += 1
                continue
            self.counters["telemetry"] += 1
            ts = t.ts.timestamp()
            self.registry.seen(ven, now)
            ven.used_kw, ven.shed_kw, ven.telemetry_ts = t.used_power_kw, t.shed_power_kw, ts
            ven.telemetry_event_id = t.event_id
            if t.available_shed_kw is not None:
                ven.available_kw = t.available_shed_kw
            owner = self.parts.serving.get(t.ven_id)
            if owner is not None and t.event_id in (None, owner):
                p = self.parts.participants.get(owner, {}).get(t.ven_id)
                if p is not None:
                    p.delivered_kw, p.delivered_at = t.shed_power_kw, ts
                    self.journal.participant(p)
            self.journal.telemetry(TelemetryRow(
                ven_id=t.ven_id, ts=ts, received_at=now, event_id=t.event_id, used_kw=t.used_power_kw,
                shed_kw=t.shed_power_kw, requested_kw=t.requested_reduction_kw, baseline_kw=t.baseline_power_kw,
                available_kw=t.available_shed_kw))

    def on_status(self, items: list[VenStatus]) -> None:
        """Apply online/offline notices; VENs coming back online get their pending commands again."""
        back, unknown = self.registry.apply_status(items, self.clock.now())
        if unknown:
            self.counters["unknownVenStatus"] += unknown
        self.dispatcher.resend_on_online(back)
