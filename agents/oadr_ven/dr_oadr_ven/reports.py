"""OpenADR 3.1 reports from dr.ven's telemetry.

For each event this VEN acts on, telemetry samples (dr/telemetry/<venId>) are averaged over report intervals
of the length the event asks for (its `reportDescriptors`, else `reports.intervalS`, never shorter than
`reports.minIntervalS`). A closed interval becomes one report interval of the event's report:
`USAGE` kWh (mean used kW x hours), `DEMAND` kW, `BASELINE` kW, `DELTA_USAGE` kWh (mean shed kW x hours) and
`OPERATING_STATE` (`RUNNING_CURTAILED` while shedding, `RUNNING_OPTED_OUT` when dr.ven is opted out of the
event, `NORMAL` otherwise; a site owner's override of one load adds `OVERRIDE` with its load names in the
interval's second value). One report object per event holds its intervals (the last `MAX_INTERVALS`), so
the link creates it once and then updates it; the newest body per event is what is owed to the VTN.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from datetime import datetime, timedelta
from typing import Any

from dr_common.timeutil import parse_time, to_iso
from dr_oadr_ven.config import OadrVenConfig
from dr_oadr_ven.vtnevent import VtnEvent

MAX_INTERVALS = 288
GRACE_S = 2.0  # an interval closes this long after its end even without a later sample
KNOWN = ("USAGE", "DEMAND", "BASELINE", "DELTA_USAGE", "OPERATING_STATE")


def _seconds(text: float) -> str:
    return f"PT{int(text)}S" if float(text).is_integer() else f"PT{text:g}S"


class ReportBuilder:
    """`reports` is the persisted map eventId -> {types, intervalS, start, until, bucket, intervals, reportName}."""

    def __init__(self, config: OadrVenConfig, reports: MutableMapping[str, dict[str, Any]]) -> None:
        self._config = config
        self.reports = reports

    def track(self, event: VtnEvent, start: datetime, until: datetime) -> None:
        """Report on this event from `start` to `until` (called again on each modification)."""
        defaults = self._config.reports
        requests = [r for r in event.report_requests if r.payload_type in KNOWN]
        types = list(dict.fromkeys(r.payload_type for r in requests)) or list(defaults.types)
        interval_s = min((r.interval_s for r in requests), default=defaults.interval_s)
        interval_s = max(interval_s, defaults.min_interval_s)
        entry = self.reports.get(event.event_id)
        if entry is None:
            entry = {"intervals": [], "bucket": None, "reportName": f"{self._config.ven_name}:{event.event_id}"[:128]}
            self.reports[event.event_id] = entry
        entry.update(types=types, intervalS=interval_s, start=to_iso(start), until=to_iso(until), done=False)

    def stop(self, event_id: str, now: datetime) -> None:
        """The event was cancelled: report up to now."""
        entry = self.reports.get(event_id)
        if entry is not None and parse_time(entry["until"]) > now:
            entry["until"] = to_iso(now)

    def add(self, telemetry: Mapping[str, Any], ts: datetime) -> None:
        """One dr.ven telemetry sample (its camelCase payload) at `ts`."""
        for entry in self.reports.values():
            if entry.get("done"):
                continue
            start, until = parse_time(entry["start"]), parse_time(entry["until"])
            if not start <= ts < until:
                continue
            index = int((ts - start).total_seconds() // entry["intervalS"])
            bucket = entry.get("bucket")
            if bucket is not None and bucket["index"] != index:
                self._close(entry)
                bucket = None
            if bucket is None:
                bucket = entry["bucket"] = {"index": index, "n": 0, "used": 0.0, "base": 0.0, "nBase": 0,
                                            "shed": 0.0, "optOut": False, "shedding": False, "overrides": []}
            used = float(telemetry.get("usedPowerKw") or 0.0)
            bucket["n"] += 1
            bucket["used"] += used
            base = telemetry.get("baselinePowerKw")
            if isinstance(base, (int, float)) and not isinstance(base, bool):
                bucket["base"] += float(base)
                bucket["nBase"] += 1
            bucket["shed"] += float(telemetry.get("shedPowerKw") or 0.0)
            bucket["optOut"] = bucket["optOut"] or bool(telemetry.get("optOut"))
            bucket["shedding"] = bucket["shedding"] or float(telemetry.get("requestedReductionKw") or 0.0) > 0
            loads = telemetry.get("loads") if isinstance(telemetry.get("loads"), Mapping) else {}
            names = sorted(str(k)[:64] for k, v in loads.items() if isinstance(v, Mapping) and v.get("override"))
            bucket["overrides"] = sorted(set(bucket["overrides"]) | set(names))[:32]

    def due(self, now: datetime) -> list[str]:
        """Close the intervals that have ended; the events whose report has new intervals."""
        changed = []
        for event_id, entry in self.reports.items():
            if entry.get("done"):
                continue
            bucket = entry.get("bucket")
            start = parse_time(entry["start"])
            if bucket is not None:
                end = start + timedelta(seconds=(bucket["index"] + 1) * entry["intervalS"])
                end = min(end, parse_time(entry["until"]))
                if now >= end + timedelta(seconds=GRACE_S):
                    self._close(entry)
            if entry.get("changed"):
                entry["changed"] = False
                changed.append(event_id)
            if now >= parse_time(entry["until"]) + timedelta(seconds=GRACE_S) and entry.get("bucket") is None:
                entry["done"] = True
        return changed

    def body(self, event_id: str, vtn_event_id: str) -> dict[str, Any]:
        """The OpenADR reportRequest body of an event's report as it stands."""
        entry = self.reports[event_id]
        return {"eventID": vtn_event_id, "clientName": self._config.ven_name, "reportName": entry["reportName"],
                "resources": [{"resourceName": self._config.reports.resource_name,
                               "intervals": list(entry["intervals"])}]}

    def prune(self, keep: int) -> None:
        """Forget the oldest finished reports beyond `keep`."""
        done = [k for k, v in self.reports.items() if v.get("done")]
        for event_id in done[:max(0, len(self.reports) - keep)]:
            del self.reports[event_id]

    def _close(self, entry: dict[str, Any]) -> None:
        bucket = entry.pop("bucket", None)
        entry["bucket"] = None
        if not bucket or not bucket["n"]:
            return
        start = parse_time(entry["start"]) + timedelta(seconds=bucket["index"] * entry["intervalS"])
        end = min(start + timedelta(seconds=entry["intervalS"]), parse_time(entry["until"]))
        seconds = max((end - start).total_seconds(), 1e-3)
        hours = seconds / 3600.0
        used = bucket["used"] / bucket["n"]
        shed = bucket["shed"] / bucket["n"]
        payloads = []
        for kind in entry["types"]:
            if kind == "USAGE":
                payloads.append({"type": kind, "values": [round(used * hours, 6)]})
            elif kind == "DEMAND":
                payloads.append({"type": kind, "values": [round(used, 4)]})
            elif kind == "BASELINE" and bucket["nBase"]:
                payloads.append({"type": kind, "values": [round(bucket["base"] / bucket["nBase"], 4)]})
            elif kind == "DELTA_USAGE":
                payloads.append({"type": kind, "values": [round(shed * hours, 6)]})
            elif kind == "OPERATING_STATE":
                state = "RUNNING_OPTED_OUT" if bucket["optOut"] else \
                    "RUNNING_CURTAILED" if bucket["shedding"] else "NORMAL"
                values: list[Any] = [state] + (["OVERRIDE"] + bucket["overrides"] if bucket["overrides"] else [])
                payloads.append({"type": kind, "values": values})
        entry["intervals"] = (entry["intervals"] + [{
            "id": bucket["index"], "intervalPeriod": {"start": to_iso(start), "duration": _seconds(round(seconds, 3))},
            "payloads": payloads}])[-MAX_INTERVALS:]
        entry["changed"] = True
