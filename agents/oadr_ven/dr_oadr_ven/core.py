"""The VEN side of the OpenADR agent, without the platform: VTN events in (from any link), dr.ven commands out,
dr.ven telemetry in, reports out. Runs in the agent's gevent loop only (one greenlet at a time); the links hand
their findings over through `handoff.Handoff` as the tuples `oadr31.py` lists.

Only events of enrolled programs are acted on (`programs`, by id or name; empty: all). Refused events
(malformed, beyond the limits) get one log line per modification, a count by field, and no command; an event
this VEN was following that turns bad is restored. State is saved after every change (`state.StateFile`):
a command is published before its plan is saved, so a crash in between repeats it with the same correlationId
and payload, which dr.ven recognises as a repeat.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from dr_common.payloads import PayloadError, Telemetry
from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_common.timeutil import parse_time, utcnow
from dr_oadr_ven.config import OadrVenConfig
from dr_oadr_ven.mapping import ACTIVE, CommandPlanner, Refusal
from dr_oadr_ven.reports import ReportBuilder
from dr_oadr_ven.state import StateFile
from dr_oadr_ven.vtnevent import VtnEvent

_log = logging.getLogger(__name__)

BASELINE_STALE_S = 120.0
REPORT_GIVE_UP = 5


class Link(Protocol):
    def send_report(self, event_id: str, body: dict[str, Any], report_id: str | None, seq: int) -> None: ...

    def status(self) -> dict[str, Any]: ...


class VenCore:
    def __init__(self, config: OadrVenConfig, state: StateFile, publish: Callable[[dict[str, Any]], None],
                 link: Link, clock: Callable[[], datetime] = utcnow, rng: random.Random | None = None,
                 reports: bool = True) -> None:
        self.config = config
        self._reports_on = reports
        self.state = state
        self._publish = publish
        self.link = link
        self._clock = clock
        self._log = RateLimitedLog(_log)
        self.rejects = RejectCounter()
        self.enrolment = state.section("enrolment")
        self.report_ids = state.section("reportIds")
        self.pending = state.section("pending")
        for entry in self.pending.values():
            entry["inFlight"] = False
        self.planner = CommandPlanner(config, state.section("plans"), self._refused, rng)
        self.builder = ReportBuilder(config, state.section("reports"))
        self.link_up = False
        self.link_error: str | None = None
        self.telemetry: dict[str, Any] | None = None
        self.telemetry_at: datetime | None = None
        self.counts = {"commands": 0, "restores": 0, "events": 0, "acks": 0, "acksRefused": 0,
                       "reportsSent": 0, "reportsGivenUp": 0, "ignoredPrograms": 0, "saveErrors": 0}
        self.last_ack: dict[str, Any] | None = None

    # --- inputs -----------------------------------------------------------------------------------------
    def on_item(self, item: tuple) -> None:
        """One finding of a link (see `oadr31.py` for the kinds)."""
        kind, now = item[0], self._clock()
        if kind == "events":
            events, refused, complete = item[1:4]
            listed_at = item[4] if len(item) > 4 else None
            for event in events:
                self._accept(event, now)
            for event_id, modification, field, reason in refused:
                self._refuse_raw(event_id, modification, field, reason, now)
            if complete:
                seen = {e.event_id for e in events} | {r[0] for r in refused}
                self._send(self.planner.reconcile(seen, now, listed_at), now)
        elif kind == "event":
            self._accept(item[1], now)
        elif kind == "refused":
            self._refuse_raw(*item[1:], now)
        elif kind == "deleted":
            self._send(self.planner.cancel(item[1], now), now)
            self.builder.stop(item[1], now)
        elif kind == "enrolled":
            self.enrolment.clear()
            self.enrolment.update(item[1])
        elif kind == "programs":
            self.enrolment["programs"] = dict(item[1])
        elif kind == "report_sent":
            self._report_sent(*item[1:])
        elif kind == "report_failed":
            self._report_failed(*item[1:])
        elif kind == "link":
            self.link_up, self.link_error = bool(item[1]["up"]), item[1].get("error")
        self._save()

    def on_telemetry(self, payload: Any) -> bool:
        """One dr.ven telemetry message; True when dr.ven's opt-out changed with it."""
        before = bool(self.telemetry and self.telemetry.get("optOut"))
        try:
            telemetry = Telemetry.from_payload(payload)
        except PayloadError as exc:
            self.rejects.count(f"telemetry.{exc.field}")
            self._log.warning("telemetry", "telemetry refused: %s", exc)
            return False
        if telemetry.ven_id != self.config.ven_id:
            self.rejects.count("telemetry.venId")
            self._log.warning("telemetry.venId", "telemetry for VEN %s on this VEN's topic refused",
                              telemetry.ven_id)
            return False
        self.telemetry = telemetry.to_payload() | ({"loads": payload.get("loads")} if isinstance(payload, Mapping)
                                                   and isinstance(payload.get("loads"), Mapping) else {})
        self.telemetry_at = telemetry.ts
        self.builder.add(self.telemetry, telemetry.ts)
        return before != telemetry.opt_out

    def on_ack(self, payload: Any) -> None:
        if not isinstance(payload, Mapping):
            self.rejects.count("ack")
            return
        self.counts["acks"] += 1
        self.last_ack = {k: payload.get(k) for k in ("correlationId", "ok", "eventId", "error", "data")}
        if str(payload.get("correlationId", "")).startswith("oadr:") and payload.get("ok") is False:
            self.counts["acksRefused"] += 1
            self._log.warning("ack", "dr.ven refused command %s: %s", str(payload.get("correlationId"))[:100],
                              str(payload.get("error"))[:300])

    def tick(self) -> None:
        """Interval steps, capacity re-evaluation, report intervals and owed reports (call about once a second)."""
        now = self._clock()
        self._send(self.planner.tick(now, self.baseline_kw(now)), now)
        for event_id in self.builder.due(now):
            entry = self.pending.setdefault(event_id, {"seq": 0, "failures": 0, "inFlight": False})
            entry["seq"] += 1
            entry["inFlight"] = False
        self.builder.prune(self.config.limits.max_events)
        self._flush_reports()
        self._save()

    # --- figures ------------------------------------------------------------------------------------------
    def baseline_kw(self, now: datetime) -> float | None:
        """dr.ven's baseline (else used + shed) from its last telemetry, None when older than 2 minutes."""
        if self.telemetry is None or self.telemetry_at is None or \
                (now - self.telemetry_at).total_seconds() > BASELINE_STALE_S:
            return None
        base = self.telemetry.get("baselinePowerKw")
        if base is None:
            base = float(self.telemetry["usedPowerKw"]) + float(self.telemetry.get("shedPowerKw") or 0.0)
        return float(base)

    def status(self) -> dict[str, Any]:
        return {"venId": self.config.ven_id, "linkUp": self.link_up, "linkError": self.link_error,
                "enrolment": {k: v for k, v in self.enrolment.items() if k != "callbackToken"},
                "activeEvents": self.planner.active(), "counts": dict(self.counts),
                "rejects": self.rejects.snapshot(), "pendingReports": len(self.pending),
                "lastAck": self.last_ack, "link": self.link.status(),
                "plans": {k: {f: p.get(f) for f in ("state", "revision", "sentKw", "startTime", "until", "refusal")}
                          for k, p in list(self.planner.plans.items())[-20:]}}

    # --- internals ----------------------------------------------------------------------------------------
    def _enrolled(self, event: VtnEvent) -> bool:
        wanted = set(self.config.programs)
        if not wanted:
            return True
        names = self.enrolment.get("programs") or {}
        return event.program_id is not None and (event.program_id in wanted or names.get(event.program_id) in wanted)

    def _accept(self, event: VtnEvent, now: datetime) -> None:
        if not self._enrolled(event):
            self.counts["ignoredPrograms"] += 1
            return
        known = self.planner.plans.get(event.event_id)
        changed = known is None or event.modification > known["modification"]
        self.counts["events"] += int(changed)
        out = self.planner.accept(event, now, self.baseline_kw(now))
        plan = self.planner.plans.get(event.event_id)
        if changed and self._reports_on and plan is not None and plan["state"] == ACTIVE:
            self.builder.track(event, parse_time(plan["startTime"]), parse_time(plan["until"]))
        self._send(out, now)

    def _refused(self, event_id: str, refusal: Refusal) -> None:
        self.rejects.count(f"event.{refusal.field}")
        _log.warning("event %s refused, no command: %s", event_id[:128], refusal)

    def _refuse_raw(self, event_id: str, modification: int, field: str, reason: str, now: datetime) -> None:
        plan = self.planner.plans.get(event_id)
        if plan is not None and modification <= plan["modification"]:
            return
        if plan is not None and plan["state"] == ACTIVE:
            self._send(self.planner.cancel(event_id, now), now)
        self.planner.plans[event_id] = {**(plan or {"eventId": event_id, "revision": 0, "offsetS": 0.0,
                                                    "until": now.isoformat(), "startTime": now.isoformat(),
                                                    "cmdEventId": event_id[:64], "sentIndex": None,
                                                    "sentKw": None}),
                                        "modification": modification, "state": "refused",
                                        "refusal": f"{field}: {reason}"[:300]}
        self._refused(event_id, Refusal(field, reason))

    def _send(self, commands: list[dict[str, Any]], now: datetime) -> None:
        for command in commands:
            self._publish(command)
            self.counts["restores" if command["op"] == "restore" else "commands"] += 1
            if command["op"] == "restore":
                self.builder.stop(_vtn_id(self.planner.plans, command["eventId"]), now)
            _log.info("command %s for event %s: %s kW until %s", command["correlationId"], command.get("eventId"),
                      command.get("requestedReductionKw", "-"), command.get("until", "-"))
        if commands:
            self._save()

    def _flush_reports(self) -> None:
        for event_id, entry in self.pending.items():
            if entry["inFlight"] or event_id not in self.builder.reports:
                continue
            entry["inFlight"] = True
            self.link.send_report(event_id, self.builder.body(event_id, event_id), self.report_ids.get(event_id),
                                  entry["seq"])

    def _report_sent(self, event_id: str, report_id: str, seq: int) -> None:
        self.report_ids[event_id] = report_id
        self.counts["reportsSent"] += 1
        entry = self.pending.get(event_id)
        if entry is not None and entry["seq"] <= seq:
            del self.pending[event_id]
        elif entry is not None:
            entry["inFlight"] = False
        while len(self.report_ids) > self.config.limits.max_events:
            self.report_ids.pop(next(iter(self.report_ids)))

    def _report_failed(self, event_id: str, seq: int, reason: str) -> None:
        entry = self.pending.get(event_id)
        if entry is None:
            return
        entry["inFlight"] = False
        if not self.link_up:  # an outage is not the report's fault: it is sent again once the VTN is back
            return
        entry["failures"] = entry.get("failures", 0) + 1
        if entry["failures"] >= REPORT_GIVE_UP:
            del self.pending[event_id]
            self.counts["reportsGivenUp"] += 1
            self._log.error("report", "report of event %s given up after %d failures: %s", event_id[:128],
                            REPORT_GIVE_UP, reason[:300])

    def _save(self) -> None:
        try:
            self.state.save()
        except OSError as exc:
            self.counts["saveErrors"] += 1
            self._log.error("save", "state file %s could not be written: %s", self.state.path, exc)


def _vtn_id(plans: Mapping[str, Mapping[str, Any]], cmd_event_id: str) -> str:
    for event_id, plan in plans.items():
        if plan.get("cmdEventId") == cmd_event_id:
            return event_id
    return cmd_event_id

