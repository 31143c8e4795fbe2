"""OpenADR 3 reports as dr.vtn telemetry: a report from a VEN whose venName is a registered venId feeds the same
VEN state and event metrics as seed telemetry, and for an OpenADR VEN (transport `oadr`) is published on the bus
as its telemetry (`report_publisher`).

The report's `AGGREGATED_REPORT` resource is used when there is one, else the sum over its resources; of each,
the last interval. Payload types: `DEMAND` (kW) -> usedPowerKw; `USAGE` (kWh over the interval) -> usedPowerKw
when no DEMAND is given; `BASELINE` (kW) -> baselinePowerKw; `DELTA_USAGE` (kWh saved over the interval) ->
shedPowerKw, else baseline - used when both are known. An interval's length comes from its own or the
resource's intervalPeriod; kWh values without one are not used. The time is the interval's end (else now).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from dr_common.payloads import TRANSPORT_OADR, Telemetry
from dr_common.timeutil import UTC
from dr_vtn_dispatcher.dispatch import Sender
from dr_vtn_dispatcher.errors import ApiError
from dr_vtn_dispatcher.oadr_models import duration_seconds
from dr_vtn_dispatcher.registry import Registry

_log = logging.getLogger(__name__)

AGGREGATED = "AGGREGATED_REPORT"
KW_TYPES = ("DEMAND", "BASELINE")
KWH_TYPES = ("USAGE", "DELTA_USAGE")


def _number(values: list[Any]) -> float | None:
    value = values[0] if values else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _last_interval(resource: Mapping[str, Any]) -> tuple[dict[str, float], datetime | None]:
    """The kW figures of a resource's last interval, and that interval's end."""
    intervals = resource.get("intervals") or []
    if not intervals:
        return {}, None
    last = intervals[-1]
    period = {**(resource.get("intervalPeriod") or {}), **(last.get("intervalPeriod") or {})}
    hours = None
    if period.get("duration"):
        try:
            seconds = duration_seconds(period["duration"], "intervalPeriod.duration")
        except ApiError:  # months, years: no fixed length, so no kW from kWh
            seconds = None
        hours = seconds / 3600 if seconds else None
    end = None
    if period.get("start") and not str(period["start"]).startswith("0001-01-01"):
        start = datetime.fromisoformat(str(period["start"]).replace("Z", "+00:00"))
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        end = start + timedelta(hours=hours or 0)
    out: dict[str, float] = {}
    for payload in last.get("payloads") or []:
        kind, value = payload.get("type"), _number(payload.get("values") or [])
        if value is None:
            continue
        if kind in KW_TYPES:
            out[kind] = value
        elif kind in KWH_TYPES and hours:
            out[kind] = value / hours
    return out, end


def report_telemetry(ven_id: str, report: Mapping[str, Any], now: datetime) -> Telemetry | None:
    """The telemetry a report stands for, or None when it carries no usable power figure."""
    resources = list(report.get("resources") or [])
    aggregated = [r for r in resources if r.get("resourceName") == AGGREGATED]
    totals: dict[str, float] = {}
    ends = []
    for resource in aggregated or resources:
        figures, end = _last_interval(resource)
        for kind, value in figures.items():
            totals[kind] = totals.get(kind, 0.0) + value
        if end is not None:
            ends.append(end)
    used = totals.get("DEMAND", totals.get("USAGE"))
    if used is None:
        return None
    baseline = totals.get("BASELINE")
    shed = totals.get("DELTA_USAGE")
    if shed is None and baseline is not None:
        shed = max(0.0, baseline - used)
    ts = min(max(ends), now) if ends else now
    return Telemetry(ven_id=ven_id, used_power_kw=used, ts=ts, shed_power_kw=shed or 0.0,
                     event_id=report.get("eventID"), baseline_power_kw=baseline)


def report_publisher(apply: Callable[[list[Telemetry]], None], registry: Registry, sender: Sender,
                     counters: Counter[str]) -> Callable[[list[Telemetry]], None]:
    """What a report accepted from a VEN client does: `apply` it as that VEN's telemetry (VEN state, event
    metrics, store), then, for a VEN of transport `oadr`, publish it on the bus as that VEN's telemetry
    (`dr/telemetry/<venId>`, sender dr.vtn), where dr.web's live state and the historian read telemetry. A seed VEN
    publishes its own telemetry, so its reports are not published again. A failed publish is counted and logged;
    the report stays accepted."""
    def on_reports(items: list[Telemetry]) -> None:
        apply(items)
        for item in items:
            ven = registry.get(item.ven_id)
            if ven is None or ven.transport != TRANSPORT_OADR:
                continue
            try:
                sender.publish_telemetry(item.ven_id, item.to_payload())
                counters["oadrReportsPublished"] += 1
            except Exception:  # the report is applied and kept; only its bus copy is lost
                counters["publishErrors"] += 1
                _log.exception("publishing the OpenADR report of VEN %s failed", item.ven_id)
    return on_reports
