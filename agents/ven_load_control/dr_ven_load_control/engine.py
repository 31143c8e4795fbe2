"""The VEN's logic without the platform: the event life cycle, in front of three rooms.

The agent feeds it device readings, commands, timer ticks and the results of the point writes it asked for;
the engine answers with acks, telemetry and `Op`s (set_point / revert_point) to send to platform.driver in
order. Time comes from an injected clock (epoch seconds), so tests drive it with a fake one.

Rooms (imports go one way: engine -> intake -> control; engine -> report -> control; engine -> persistence):
- `intake.CommandIntake`: parse, check (venId, limits), dedupe, ack;
- `control.ShedControl`: shed actions, the closed loop, staggered restores, results of the writes;
- `persistence.Journal`: the state saved before any point is written, read back on start.

Event life cycle: a command for the future is pending until its start; an active event sheds toward
`baseline - requestedReductionKw` and is corrected after every meter reading; at `until` (by the engine's own
deadline, whatever the VTN does), on `restore`, on opt-out, on stop or on a config change every shed point goes
back to its pre-event value, staggered by `restoreStaggerS` when the event ends normally.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dr_common.payloads import OP_PING, OP_RESTORE, Ack, Command, Telemetry
from dr_common.rejects import RateLimitedLog
from dr_ven_load_control import report
from dr_ven_load_control.config import VenConfig
from dr_ven_load_control.control import ShedControl
from dr_ven_load_control.controller import StepResult
from dr_ven_load_control.intake import CommandIntake, Refused, event_times, raw_correlation, raw_op
from dr_ven_load_control.loads import Action, LoadModel, as_float
from dr_ven_load_control.persistence import Journal
from dr_ven_load_control.siteview import SiteView
from dr_ven_load_control.state import REVERT, SHED, EventState, Op, dt, iso
from dr_ven_load_control.store import StateStore

_log = logging.getLogger(__name__)

__all__ = ["VenEngine", "CommandOutcome", "Op", "EventState", "REVERT", "raw_correlation", "raw_op"]


@dataclass
class CommandOutcome:
    """The ack of a command and the ops it asks for."""

    ack: Ack
    ops: list[Op] = field(default_factory=list)


class VenEngine:
    """The event life cycle of one VEN, and the front of its rooms."""

    def __init__(self, cfg: VenConfig, store: StateStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.problems: list[str] = []
        self.site = SiteView(cfg.settle_s, cfg.history_s)
        self.control = ShedControl(cfg, self.site, self.counters, self.problem)
        self.intake = CommandIntake(cfg, self.control, self.counters, clock)
        self.journal = Journal(store, self.counters, self.problem)
        self.event: EventState | None = None
        self.last_event_summary: dict[str, Any] | None = None
        self.live_report_at: float | None = None  # when to read the meter live and report, after shed writes
        self._live_report_wanted = False  # an event command or activation: report its first shed writes live
        self._problem_log = RateLimitedLog(_log, 60.0, clock)

    @property
    def store(self) -> StateStore | None:
        """The state file's store (None: nothing is saved)."""
        return self.journal.store

    @property
    def models(self) -> dict[str, LoadModel]:
        """Every load's model by load id."""
        return self.control.models

    @property
    def actions(self) -> dict[str, Action]:
        """The VEN's current action on each shed load."""
        return self.control.actions

    # --- inputs -------------------------------------------------------------------------------------------
    def on_device(self, path: str, values: Mapping[str, Any], now: float | None = None,
                  live: bool = False) -> list[Op]:
        """A device's point values: the driver's `/all` publish, which shows the device as it was `settleS`
        earlier, or (`live`) values read just now."""
        now = self.clock() if now is None else now
        path = path.strip("/")
        if not isinstance(values, Mapping):
            self.problem(f"device {path}: expected a point mapping, got {type(values).__name__}")
            return []
        shows = self.site.device(path, dict(values), now, live)
        self.control.note_reading(path, values, shows)
        corrections = self.control.checks.reading(path, values, shows, now)
        return corrections + self._on_reading(path, values, shows, now, live)

    def _on_reading(self, path: str, values: Mapping[str, Any], shows: float, now: float, live: bool) -> list[Op]:
        if path == self.cfg.meter_path:
            kw = as_float(values, self.cfg.meter_point)
            if kw is None:
                self.problem(f"meter {path}: point {self.cfg.meter_point} missing or not a number")
                return []
            self.site.meter_reading(kw, shows, now, live)
            self.counters["meter_readings"] += 1
            if not self.site.shows_last_write(shows):
                return []  # may not show our last writes yet: act on the next one
            if self._active():
                if self.event is not None and self.event.baseline_kw is None:
                    self._set_baseline(now)
                return self._control(now)
            return []
        if self._active() and self.control.violates(self.event, path, now):
            return self._control(now)
        return []

    def on_command(self, raw: object, now: float | None = None) -> CommandOutcome:
        """Parse and carry out one command; never raises on bad input (the ack says what is wrong)."""
        now = self.clock() if now is None else now
        self.counters["commands"] += 1
        try:
            cmd, payload = self.intake.admit(raw, now)
        except Refused as refused:
            return CommandOutcome(refused.ack)
        cached = self.intake.cached(cmd, payload)
        if cached is not None:
            return CommandOutcome(cached)
        if cmd.op == OP_PING:
            outcome = CommandOutcome(self.intake.state_ack(cmd, self.event, self._delivered(), now))
        elif cmd.op == OP_RESTORE:
            outcome = self._restore_command(cmd, now)
        else:
            outcome = self._event_command(cmd, now)
        self.intake.remember(cmd, payload, outcome.ack)
        return outcome

    def command_failed(self, raw: object, exc: Exception, now: float | None = None) -> Ack:
        """The ack for a command whose handling raised (a defect): counted, never fatal."""
        self.counters["command_errors"] += 1
        return self.intake.internal_error(raw, exc, self.clock() if now is None else now)

    def on_timer(self, now: float | None = None) -> list[Op]:
        """Start due events, end expired ones, send due staggered restores and retries."""
        now = self.clock() if now is None else now
        ops: list[Op] = []
        event = self.event
        if event is not None and now >= event.until:
            _log.info("event %s reached its end (until); restoring", event.event_id)
            self.counters["events_completed"] += 1
            self._end_event(now, "completed")
            ops += self.control.restore_all(now, staggered=True)
        elif event is not None and not event.started and now >= event.start:
            ops += self._activate(now)
        ops += self.control.due_restores(now)
        if ops:
            self._save()
        return ops

    def ops_done(self, results: list[tuple[Op, str | None]], now: float | None = None) -> list[Op]:
        """Results of the ops the agent sent: (op, None) on success, (op, error text) on failure. Returns the
        follow-up ops (other loads making up for a failed shed) to send in turn."""
        now = self.clock() if now is None else now
        shed_failed = self.control.book(results, now)
        delay = self.cfg.live_read_after_shed_s
        if self._live_report_wanted and delay > 0 and any(op.purpose == SHED and error is None
                                                          for op, error in results):
            self._live_report_wanted = False
            self.live_report_at = now + delay if self.live_report_at is None else self.live_report_at
        self._save()
        if shed_failed and self._active():
            return self._control(now)
        return []

    def meter_uncertain(self) -> bool:
        """True when a write went out so close to the instant the last meter publish shows that it may or may
        not show it; the agent then reads the meter live (`on_meter_live`) before a command."""
        return self.site.meter_uncertain()

    def live_report_due(self, now: float | None = None) -> bool:
        """True (once) when the meter should be read live and reported: `liveReadAfterShedS` after shed writes,
        so the reported shed shows what the devices do, not the driver's previous scrape."""
        now = self.clock() if now is None else now
        if self.live_report_at is None or now < self.live_report_at:
            return False
        self.live_report_at = None
        return True

    def on_meter_live(self, kw: float, now: float | None = None) -> None:
        """A meter value read just now (not a publish): it shows the site as it is."""
        self.site.meter_live_read(kw, self.clock() if now is None else now)
        self.counters["meter_live_reads"] += 1

    # --- operator controls ----------------------------------------------------------------------------------
    def set_opt_out(self, value: bool, event_id: str | None = None, now: float | None = None) -> tuple[dict, list[Op]]:
        """Opt out of (or back into) the current event."""
        now = self.clock() if now is None else now
        event = self.event
        if event is None:
            raise ValueError("no event is active or pending")
        if event_id is not None and event_id != event.event_id:
            raise ValueError(f"event {event_id!r} is not the current event ({event.event_id!r})")
        event.opted_out = bool(value)
        self.counters["opt_outs" if value else "opt_ins"] += 1
        if value:
            ops = self.control.restore_all(now, staggered=True)
        else:
            self.control.restore_queue = []
            ops = self._control(now) if self._active() else []
        self._save()
        return self.status(now), ops

    def set_override(self, load_id: str, active: bool, now: float | None = None) -> tuple[dict, list[Op]]:
        """Take one load out of shedding (active=True) or give it back (False)."""
        now = self.clock() if now is None else now
        if load_id not in self.models:
            raise ValueError(f"unknown load {load_id!r}; loads: {', '.join(self.models)}")
        if active:
            self.control.overrides.add(load_id)
        else:
            self.control.overrides.discard(load_id)
        self.counters["overrides"] += 1
        ops = self._control(now) if self._active() else []
        self._save()
        return self.status(now), ops

    def apply_config_overrides(self, opt_out: bool, loads: list[str], now: float | None = None) -> list[Op]:
        """The config-store flags: opt out of every event, and loads never to shed."""
        now = self.clock() if now is None else now
        unknown = [lid for lid in loads if lid not in self.models]
        if unknown:
            raise ValueError(f"unknown load(s) {', '.join(unknown)}; loads: {', '.join(self.models)}")
        control = self.control
        was_out = control.config_opt_out
        control.config_opt_out = bool(opt_out)
        control.config_overrides = set(loads)
        if control.config_opt_out:
            ops = control.restore_all(now, staggered=True) if not was_out else []
        else:
            if was_out:
                control.restore_queue = []
            ops = self._control(now) if self._active() else []
        self._save()
        return ops

    def restore_all(self, reason: str, staggered: bool = False, now: float | None = None) -> list[Op]:
        """Give every load back (agent stop, config change); the event itself stays stored."""
        now = self.clock() if now is None else now
        _log.info("restoring every shed load (%s)", reason)
        ops = self.control.restore_all(now, staggered=staggered)
        self._save()
        return ops

    # --- restart ----------------------------------------------------------------------------------------------
    def resume(self, now: float | None = None) -> list[Op]:
        """Load the stored state: adopt the shed actions, then resume the event or restore an expired one."""
        now = self.clock() if now is None else now
        stored = self.journal.load()
        if stored is None:
            return []
        try:
            self.site.load_state(stored.raw, shedding=bool(stored.actions), now=now)
        except (KeyError, TypeError, ValueError) as exc:
            self.problem(f"stored state unusable ({exc!r}); nothing resumed")
            return []
        self.control.overrides = {lid for lid in stored.overrides if lid in self.models}
        ops: list[Op] = []
        for lid, action in stored.actions.items():
            if lid not in self.models:
                self.problem(f"stored action on {lid!r} which is no longer configured; restoring it by its path")
            action.restoring = False
            self.actions[lid] = action
        event = self.event = stored.event
        if event is not None and now >= event.until:
            _log.info("stored event %s expired while the agent was down; restoring", event.event_id)
            self.counters["events_expired_on_resume"] += 1
            self._end_event(now, "expired")
            ops += self.control.restore_all(now, staggered=True)
        elif event is not None:
            _log.info("resuming event %s (until %s) with %d shed loads", event.event_id, dt(event.until),
                      len(self.actions))
            self.counters["events_resumed"] += 1
            if not event.started and now >= event.start:
                ops += self._activate(now)
            elif event.started and self.site.meter_live:
                ops += self._control(now)  # the agent read every device just before: shed again at once
        elif self.actions:
            ops += self.control.restore_all(now, staggered=True)
        self._save()
        return ops

    # --- outputs ------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest instant `on_timer` has something to do."""
        times = self.control.deadlines()
        if self.live_report_at is not None:
            times.append(self.live_report_at)
        if self.event is not None:
            times.append(self.event.until if self.event.started else self.event.start)
        return min(times) if times else None

    def telemetry(self, now: float | None = None) -> Telemetry | None:
        """The 5-second report, or None before the first meter reading."""
        return report.telemetry(self.cfg, self.control, self.event, self.clock() if now is None else now)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Event, shed actions, restore queue, overrides, counters, refusals, recent problems."""
        return {**report.status(self.cfg, self.control, self.event), "counters": dict(self.counters),
                "rejects": self.intake.rejects.snapshot(), "problems": list(self.problems[-10:]),
                "lastEvent": self.last_event_summary}

    def state(self) -> dict[str, Any]:
        """What is saved: event, actions, overrides and the site view's picture."""
        return {"venId": self.cfg.ven_id, "event": self.event.to_dict() if self.event else None,
                "actions": {lid: a.to_dict() for lid, a in self.actions.items()},
                "overrides": sorted(self.control.overrides),
                **self.site.to_state()}

    def problem(self, text: str) -> None:
        """Log (once a minute per kind of problem) and keep (the last 50) a problem the operator should see."""
        self._problem_log.error(text[:48], "%s", text)
        self.counters["problems"] += 1
        self.problems.append(text)
        del self.problems[:-50]

    # --- commands -----------------------------------------------------------------------------------------------
    def _event_command(self, cmd: Command, now: float) -> CommandOutcome:
        until, start = event_times(cmd, now)
        if until is None:
            return CommandOutcome(self.intake.error(cmd, now, "until", "is required"))
        if until <= now:
            return CommandOutcome(self.intake.error(cmd, now, "until", f"{iso(until)} is already past"))
        allowed = None
        if cmd.circuits:
            try:
                allowed = self.intake.match_loads(cmd.circuits)
            except ValueError as exc:
                return CommandOutcome(self.intake.error(cmd, now, "circuits", str(exc)))
        previous = self.event
        same_event = previous is not None and cmd.event_id is not None and previous.event_id == cmd.event_id
        if same_event and previous is not None and cmd.modification_number < previous.modification:
            return CommandOutcome(self.intake.error(cmd, now, "modificationNumber",
                                                    f"{cmd.modification_number} is older than the current "
                                                    f"{previous.modification}"))
        event = EventState(event_id=cmd.event_id, correlation_id=cmd.correlation_id, op=cmd.op,
                           requested_kw=cmd.requested_reduction_kw, start=start, until=until,
                           modification=cmd.modification_number, allowed=allowed, cap_kw=cmd.cap_kw)
        ops: list[Op] = []
        self.control.restore_queue = []
        if same_event and previous is not None:
            if previous.started:
                event.baseline_kw, event.baseline_samples = previous.baseline_kw, previous.baseline_samples
                event.started = True
            event.opted_out = previous.opted_out
            self.counters["events_modified"] += 1
        elif previous is not None:
            self.counters["events_superseded"] += 1
            self._end_event(now, "superseded")
            if start > now:
                ops += self.control.restore_all(now, staggered=True)
            elif previous.started:
                # the meter history since the previous start is shed: keep its uncurtailed baseline
                event.baseline_kw, event.baseline_samples = previous.baseline_kw, previous.baseline_samples
        self.event = event
        self.counters["events_received"] += 1
        self._live_report_wanted = True
        result: StepResult | None = None
        if event.started:
            ops += self._control(now, save=False)
            result = self.control.last_step
        elif start <= now:
            ops += self._activate(now, save=False)
            result = self.control.last_step
        self._save()
        return CommandOutcome(self.intake.event_ack(cmd, event, result, now), ops)

    def _restore_command(self, cmd: Command, now: float) -> CommandOutcome:
        event = self.event
        if cmd.event_id is not None and event is not None and event.event_id != cmd.event_id:
            return CommandOutcome(self.intake.error(cmd, now, "eventId",
                                                    f"event {cmd.event_id!r} is not the current event "
                                                    f"({event.event_id!r}); nothing restored"))
        if event is not None:
            self.counters["events_restored"] += 1
            self._end_event(now, "restored")
        ops = self.control.restore_all(now, staggered=True)
        self._save()
        return CommandOutcome(self.intake.restore_ack(cmd, cmd.event_id or (event.event_id if event else None), now),
                              ops)

    def _delivered(self) -> float:
        event = self.event
        if self._active() and event is not None and event.baseline_kw is not None and self.site.meter is not None:
            return max(0.0, event.baseline_kw - self.site.meter[1])
        return 0.0

    # --- event life cycle ---------------------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.event is not None and self.event.started

    def _activate(self, now: float, save: bool = True) -> list[Op]:
        event = self.event
        if event is None:
            return []
        event.started = True
        self.counters["events_started"] += 1
        self._live_report_wanted = True
        if event.baseline_kw is None:
            self._set_baseline(now)
        _log.info("event %s active: %.3f kW below a baseline of %s kW until %s", event.event_id,
                  event.requested_kw, event.baseline_kw, iso(event.until))
        return self._control(now, save=save)

    def _set_baseline(self, now: float) -> None:
        event = self.event
        if event is None:
            return
        base = self.site.baseline(event.start if event.start <= now else now, self.cfg.baseline_window_s)
        meter_now = self.site.meter_now()
        if base is not None:
            event.baseline_kw, event.baseline_samples = round(base.kw, 4), base.samples
        elif meter_now is not None:
            # no uncurtailed history: the site now, shed added back
            event.baseline_kw, event.baseline_samples = round(meter_now + self.control.shed_total(), 4), 1

    def _end_event(self, now: float, how: str) -> None:
        event = self.event
        if event is None:
            return
        self.last_event_summary = {"eventId": event.event_id, "how": how, "at": iso(now),
                                   "requestedKw": event.requested_kw, "baselineKw": event.baseline_kw}
        self.event = None

    def _control(self, now: float, save: bool = True) -> list[Op]:
        """One closed-loop step; saves the state before returning ops unless the caller saves it."""
        event = self.event
        if event is None or not event.started:
            return []
        ops = self.control.step(event, now)
        if ops and save:
            self._save()
        return ops

    def _save(self) -> None:
        self.journal.save(self.state())
