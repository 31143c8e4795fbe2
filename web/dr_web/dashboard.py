"""The dashboard's one poll: every VEN with its state and last telemetry, the open events, the site series.

Only VENs registered with dr.vtn are listed (their list also refreshes the live state's registry). Degrades
instead of failing: when dr.vtn does not answer, the VENs the live state holds are listed and `notes` says
what is missing.
"""

from __future__ import annotations

from typing import Any

from dr_web.livestate import LiveState
from dr_web.problems import UNAVAILABLE, ApiProblem
from dr_web.shapes import DASHBOARD_TELEMETRY
from dr_web.upstream import Upstream
from dr_web.validation import OPEN_EVENT_STATUSES

_TELEMETRY_KEYS = tuple(DASHBOARD_TELEMETRY)


def build(upstream: Upstream, live: LiveState, now: float, window_s: float, timeout: float) -> dict[str, Any]:
    """The dashboard's document (see the `Dashboard` schema)."""
    notes: list[str] = []
    registered: list[dict[str, Any]] | None = None
    events: list[dict[str, Any]] = []
    try:
        asked_at = live.clock()
        registered = upstream.list_vens(timeout=timeout)
        live.set_registered((v["venId"] for v in registered if isinstance(v, dict) and isinstance(v.get("venId"), str)),
                            asked_at)
        for status in OPEN_EVENT_STATUSES:
            events.extend(upstream.list_events(status=status, limit=1000, timeout=timeout))
    except ApiProblem as exc:
        notes.append(f"{upstream.vtn_identity} did not answer ({exc.message}): registered VENs and events are "
                     "not shown" if exc.code == UNAVAILABLE else f"{upstream.vtn_identity}: {exc.message}")
    vens = []
    seen = set()
    for ven in registered or []:
        ven_id = ven.get("venId")
        seen.add(ven_id)
        vens.append(_row(ven, live, ven_id, registered=True))
    for ven_id in sorted(set(live.latest) - seen) if registered is None else ():
        status = "online" if live.is_fresh(ven_id, now) else "offline"
        vens.append(_row({"venId": ven_id, "status": status, "online": status == "online"}, live, ven_id,
                         registered=False))
    events.sort(key=lambda e: (e.get("startTime") or "", e.get("eventId") or ""))
    series = live.site_series(since=now - window_s)
    return {"vens": vens, "events": events, "site": {"series": series, "latest": series[-1] if series else None},
            "counts": {"vens": len(vens), "online": sum(1 for v in vens if v.get("online")),
                       "activeEvents": sum(1 for e in events if e.get("status") == "active")},
            "notes": notes}


def _row(ven: dict[str, Any], live: LiveState, ven_id: Any, registered: bool) -> dict[str, Any]:
    latest = live.latest.get(ven_id) if isinstance(ven_id, str) else None
    row = dict(ven)
    row["registered"] = registered
    row["telemetry"] = {key: latest.get(key) for key in _TELEMETRY_KEYS} if latest else None
    return row
