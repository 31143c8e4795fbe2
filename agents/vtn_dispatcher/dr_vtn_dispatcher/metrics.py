"""Per-event metrics (the seed's `GET /api/events/<id>/metrics`, plus per-VEN detail).

  currentReductionKw  sum of the latest `shedPowerKw` reported during the event by the VENs serving it
  vensResponding      VENs that acked one of the event's commands with ok=true
  avgResponseMs       mean command -> ack time over the event's acked commands (null before any ack)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dr_vtn_dispatcher.model import (
    OP_EVENT,
    P_DROPPED,
    P_PLANNED,
    P_REJECTED,
    P_SUPERSEDED,
    CommandRecord,
    Event,
    Participant,
    Ven,
    iso,
)


def event_metrics(event: Event, participants: Iterable[Participant], commands: Iterable[CommandRecord],
                  vens: Mapping[str, Ven], now: float, offline_timeout_s: float) -> dict[str, Any]:
    """The metrics of one event with per-VEN detail (see the module docstring)."""
    by_ven: dict[str, list[CommandRecord]] = {}
    response_times: list[float] = []
    responding: set[str] = set()
    for command in commands:
        if command.op != OP_EVENT:
            continue
        by_ven.setdefault(command.ven_id, []).append(command)
        if command.response_ms is not None:
            response_times.append(command.response_ms)
        if command.ack_ok:
            responding.add(command.ven_id)

    detail = []
    current = 0.0
    allocated = accepted = 0.0
    dispatched = rejected = 0
    for p in sorted(participants, key=lambda item: item.ven_id):
        counts = p.state not in (P_SUPERSEDED, P_DROPPED)
        if counts:
            allocated += p.allocated_kw
            accepted += p.accepted_kw or 0.0
            if p.delivered_kw is not None:
                current += p.delivered_kw
        if p.state != P_PLANNED and p.state != P_SUPERSEDED:
            dispatched += 1
        if p.state == P_REJECTED:
            rejected += 1
        sent = sorted(by_ven.get(p.ven_id, []), key=lambda c: (c.modification_number, c.created_at))
        latest = sent[-1] if sent else None
        ven = vens.get(p.ven_id)
        detail.append({
            "venId": p.ven_id, "state": p.state, "allocatedKw": round(p.allocated_kw, 4),
            "acceptedKw": p.accepted_kw, "deliveredKw": p.delivered_kw, "deliveredAt": iso(p.delivered_at),
            "startOffsetS": p.offset_s, "lastSeen": iso(ven.last_seen) if ven else None,
            "online": (ven.online_state(now, offline_timeout_s) == "online") if ven else None,
            "correlationId": latest.correlation_id if latest else None,
            "attempts": sum(c.attempts for c in sent), "responseMs": latest.response_ms if latest else None,
            "ok": latest.ack_ok if latest else None, "error": latest.error if latest else None,
        })
    return {
        "eventId": event.event_id, "status": event.status, "modificationNumber": event.modification_number,
        "requestedReductionKw": event.reduction_kw, "allocatedKw": round(allocated, 4),
        "acceptedKw": round(accepted, 4), "currentReductionKw": round(current, 4),
        "vensTargeted": len(detail), "vensDispatched": dispatched, "vensResponding": len(responding),
        "vensRejected": rejected,
        "avgResponseMs": round(sum(response_times) / len(response_times), 3) if response_times else None,
        "maxResponseMs": round(max(response_times), 3) if response_times else None,
        "vens": detail,
    }
