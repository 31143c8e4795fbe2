"""The VEN's logic without the platform: commands, the event state machine, closed-loop shedding, restores.

The agent feeds it device readings, commands, timer ticks and the results of the point writes it asked for;
the engine answers with acks, telemetry and `Op`s (set_point / revert_point) to send to platform.driver in
order. Time comes from an injected clock (epoch seconds), so tests drive it with a fake one.

Event life cycle: a command for the future is pending until its start; an active event sheds toward
`baseline - requestedReductionKw` and is corrected after every meter reading; at `until` (by the engine's own
deadline, whatever the VTN does), on `restore`, on opt-out, on stop or on a config change every shed point goes
back to its pre-event value, staggered by `restoreStaggerS` when the event ends normally. The state (event,
baseline, every shed point's pre-event value) is saved before any point is written, so that a restarted engine
resumes the event or restores what an expired one left shed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dr_common.payloads import COMMAND_FIELDS, OP_PING, OP_RESTORE, Ack, Command, Telemetry
from dr_common.schema import PayloadError, decode_json, normalize_key
from dr_common.timeutil import UTC
from dr_ven_load_control.config import RESTORE_REVERT, VenConfig
from dr_ven_load_control.controller import StepResult, step
from dr_ven_load_control.loads import Action, LoadModel, LoadView, as_float, build_model
from dr_ven_load_control.siteview import SiteView
from dr_ven_load_control.store import StateError, StateStore

_log = logging.getLogger(__name__)

EPS_KW = 1e-4
SHED = "shed"
RESTORE = "restore"
SET = "set"
REVERT = "revert"
RECENT_ACKS = 64
HOURS_WITHOUT_EVENT = 1.0  # horizon of the energy constraints when reporting capacity outside events
FAULT_HOLD_S = 60.0  # a load whose shed write failed is left out of planning this long
START_NOW_S = 1.0  # an event starting less than this ahead starts at once


@dataclass(frozen=True)
class Op:
    """One platform.driver call: set_point(path, point, value) or revert_point(path, point)."""

    kind: str
    path: str
    point: str
    value: Any
    load_id: str
    purpose: str


@dataclass
class EventState:
    event_id: str | None
    correlation_id: str
    op: str
    requested_kw: float
    start: float
    until: float
    modification: int = 0
    allowed: list[str] | None = None
    baseline_kw: float | None = None
    baseline_samples: int = 0
    started: bool = False
    opted_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"eventId": self.event_id, "correlationId": self.correlation_id, "op": self.op,
                "requestedKw": self.requested_kw, "start": self.start, "until": self.until,
                "modification": self.modification, "allowed": self.allowed, "baselineKw": self.baseline_kw,
                "baselineSamples": self.baseline_samples, "started": self.started, "optedOut": self.opted_out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventState:
        return cls(event_id=data.get("eventId"), correlation_id=str(data["correlationId"]), op=str(data["op"]),
                   requested_kw=float(data["requestedKw"]), start=float(data["start"]), until=float(data["until"]),
                   modification=int(data.get("modification", 0)), allowed=data.get("allowed"),
                   baseline_kw=data.get("baselineKw"), baseline_samples=int(data.get("baselineSamples", 0)),
                   started=bool(data.get("started")), opted_out=bool(data.get("optedOut")))


@dataclass
class CommandOutcome:
    ack: Ack
    ops: list[Op] = field(default_factory=list)


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class VenEngine:
    def __init__(self, cfg: VenConfig, store: StateStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.models: dict[str, LoadModel] = {load.name: build_model(load) for load in cfg.loads}
        self.site = SiteView(cfg.settle_s, cfg.history_s)
        self.event: EventState | None = None
        self.actions: dict[str, Action] = {}
        self.restore_queue: list[tuple[float, str]] = []
        self.overrides: set[str] = set()
        self.config_overrides: set[str] = set()
        self.config_opt_out = False
        self.faulted: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self.problems: list[str] = []
        self.last_step: StepResult | None = None
        self.last_event_summary: dict[str, Any] | None = None
        self._recent_acks: OrderedDict[str, tuple[dict[str, Any], Ack]] = OrderedDict()

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
        ops: list[Op] = []
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
                ops = self._control(now)
        elif self._active() and self._violates(path, now):
            ops = self._control(now)
        return ops

    def on_command(self, raw: object, now: float | None = None) -> CommandOutcome:
        """Parse and carry out one command; never raises on bad input (the ack says what is wrong)."""
        now = self.clock() if now is None else now
        self.counters["commands"] += 1
        try:
            payload = decode_json(raw) if isinstance(raw, (str, bytes, bytearray)) else raw
            cmd = Command.from_payload(_start_now_if_relative(payload, now))
        except PayloadError as exc:
            self.counters["bad_commands"] += 1
            _log.warning("bad command rejected: %s", exc)
            return CommandOutcome(Ack(correlation_id=raw_correlation(raw), ok=False, op=raw_op(raw),
                                      ven_id=self.cfg.ven_id, error=str(exc), ts=_dt(now)))
        if cmd.ven_id is not None and cmd.ven_id != self.cfg.ven_id:
            self.counters["bad_commands"] += 1
            return self._error(cmd, now, f"field 'venId': this VEN is {self.cfg.ven_id!r}, not {cmd.ven_id!r}")
        cached = self._recent_acks.get(cmd.correlation_id)
        if cached is not None and cached[0] == _identity_of(payload):
            self.counters["duplicate_commands"] += 1
            return CommandOutcome(cached[1])
        if cmd.op == OP_PING:
            outcome = CommandOutcome(self._state_ack(cmd, now))
        elif cmd.op == OP_RESTORE:
            outcome = self._restore_command(cmd, now)
        else:
            outcome = self._event_command(cmd, now)
        if outcome.ack.ok:
            self._recent_acks[cmd.correlation_id] = (_identity_of(payload), outcome.ack)
            while len(self._recent_acks) > RECENT_ACKS:
                self._recent_acks.popitem(last=False)
        return outcome

    def on_timer(self, now: float | None = None) -> list[Op]:
        """Start due events, end expired ones, send due staggered restores and retries."""
        now = self.clock() if now is None else now
        ops: list[Op] = []
        event = self.event
        if event is not None and now >= event.until:
            _log.info("event %s reached its end (until); restoring", event.event_id)
            self.counters["events_completed"] += 1
            self._end_event(now, "completed")
            ops += self._restore_all(now, staggered=True)
        elif event is not None and not event.started and now >= event.start:
            ops += self._activate(now)
        due = [lid for t, lid in self.restore_queue if t <= now]
        if due:
            self.restore_queue = [(t, lid) for t, lid in self.restore_queue if t > now]
            for lid in due:
                action = self.actions.get(lid)
                if action is not None:
                    ops += self._restore_ops(action, now)
        for action in list(self.actions.values()):
            if action.retry_at is not None and now >= action.retry_at:
                action.retry_at = None
                ops += self._restore_ops(action, now)
        if ops:
            self._save()
        return ops

    def ops_done(self, results: list[tuple[Op, str | None]], now: float | None = None) -> list[Op]:
        """Results of the ops the agent sent: (op, None) on success, (op, error text) on failure. Returns the
        follow-up ops (other loads making up for a failed shed) to send in turn."""
        now = self.clock() if now is None else now
        restored: dict[str, bool] = {}
        shed_failed = False
        written: set[str] = set()
        for op, error in results:
            action = self.actions.get(op.load_id)
            if error is None:  # a revert goes back to the value recorded before the event
                self.site.wrote(op.path, op.point, op.value, now)
                written.add(op.load_id)
            if op.purpose == RESTORE:
                ok = restored.get(op.load_id, True) and error is None
                restored[op.load_id] = ok
                if error is not None:
                    self.counters["restore_failures"] += 1
                    self.problem(f"restore of {op.load_id} ({op.path}/{op.point}) failed: {error}")
                continue
            if error is None:
                self.counters["writes"] += 1
                if action is not None:
                    action.commanded[op.point] = op.value
                continue
            self.counters["write_failures"] += 1
            shed_failed = True
            self.problem(f"shed of {op.load_id} ({op.path}/{op.point} = {op.value!r}) failed: {error}; "
                         f"not used again for {FAULT_HOLD_S:g} s")
            self.faulted[op.load_id] = now + FAULT_HOLD_S
            if action is not None and not action.commanded:
                del self.actions[op.load_id]
                self.site.effect(now, action.shed_kw)
        for lid in written:
            # until a reading shows it, the load draws what the write makes it draw
            action, model = self.actions.get(lid), self.models.get(lid)
            if action is not None and model is not None:
                power = action.free_kw if restored.get(lid) else action.free_kw - action.shed_kw
                self.site.wrote(action.path, model.power_point, round(power, 4), now)
        for lid, ok in restored.items():
            action = self.actions.get(lid)
            if action is None:
                continue
            if ok:
                del self.actions[lid]
                self.counters["restores"] += 1
            else:
                action.failures += 1
                action.retry_at = now + min(60.0, self.cfg.retry_s * action.failures)
        if not self.actions:
            self.site.shed_ended(now)
        self._save()
        if shed_failed and self._active():
            return self._control(now)
        return []

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
            ops = self._restore_all(now, staggered=True)
        else:
            self.restore_queue = []
            ops = self._control(now) if self._active() else []
        self._save()
        return self.status(now), ops

    def set_override(self, load_id: str, active: bool, now: float | None = None) -> tuple[dict, list[Op]]:
        """Take one load out of shedding (active=True) or give it back (False)."""
        now = self.clock() if now is None else now
        if load_id not in self.models:
            raise ValueError(f"unknown load {load_id!r}; loads: {', '.join(self.models)}")
        if active:
            self.overrides.add(load_id)
        else:
            self.overrides.discard(load_id)
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
        was_out = self.config_opt_out
        self.config_opt_out = bool(opt_out)
        self.config_overrides = set(loads)
        if self.config_opt_out:
            ops = self._restore_all(now, staggered=True) if not was_out else []
        else:
            if was_out:
                self.restore_queue = []
            ops = self._control(now) if self._active() else []
        self._save()
        return ops

    def restore_all(self, reason: str, staggered: bool = False, now: float | None = None) -> list[Op]:
        """Give every load back (agent stop, config change); the event itself stays stored."""
        now = self.clock() if now is None else now
        _log.info("restoring every shed load (%s)", reason)
        ops = self._restore_all(now, staggered=staggered)
        self._save()
        return ops

    # --- restart ----------------------------------------------------------------------------------------------
    def resume(self, now: float | None = None) -> list[Op]:
        """Load the stored state: adopt the shed actions, then resume the event or restore an expired one."""
        now = self.clock() if now is None else now
        if self.store is None:
            return []
        try:
            state = self.store.load()
        except StateError as exc:
            self.problem(str(exc))
            return []
        if not state:
            return []
        try:
            actions = {lid: Action.from_dict(data) for lid, data in (state.get("actions") or {}).items()}
            event = EventState.from_dict(state["event"]) if state.get("event") else None
            overrides = set(state.get("overrides") or [])
            self.site.load_state(state, shedding=bool(actions), now=now)
        except (KeyError, TypeError, ValueError) as exc:
            self.problem(f"stored state unusable ({exc!r}); nothing resumed")
            return []
        self.overrides = {lid for lid in overrides if lid in self.models}
        ops: list[Op] = []
        for lid, action in actions.items():
            if lid not in self.models:
                self.problem(f"stored action on {lid!r} which is no longer configured; restoring it by its path")
            action.restoring = False
            self.actions[lid] = action
        self.event = event
        if event is not None and now >= event.until:
            _log.info("stored event %s expired while the agent was down; restoring", event.event_id)
            self.counters["events_expired_on_resume"] += 1
            self._end_event(now, "expired")
            ops += self._restore_all(now, staggered=True)
        elif event is not None:
            _log.info("resuming event %s (until %s) with %d shed loads", event.event_id, _dt(event.until),
                      len(self.actions))
            self.counters["events_resumed"] += 1
            if not event.started and now >= event.start:
                ops += self._activate(now)
            elif event.started and self.site.meter_live:
                ops += self._control(now)  # the agent read every device just before: shed again at once
        elif self.actions:
            ops += self._restore_all(now, staggered=True)
        self._save()
        return ops

    # --- outputs ------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times: list[float] = [t for t, _ in self.restore_queue]
        times += [a.retry_at for a in self.actions.values() if a.retry_at is not None]
        if self.event is not None:
            times.append(self.event.until if self.event.started else self.event.start)
        return min(times) if times else None

    def telemetry(self, now: float | None = None) -> Telemetry | None:
        """The 5-second report, or None before the first meter reading."""
        now = self.clock() if now is None else now
        if self.site.meter is None:
            return None
        used = self.site.meter[1]
        views = self._views(now)
        loads: dict[str, Any] = {}
        for lid, view in views.items():
            action = self.actions.get(lid)
            entry: dict[str, Any] = {"kind": view.kind, "priority": view.priority, "powerKw": view.power_kw,
                                     "shedKw": round(action.shed_kw, 3) if action else 0.0,
                                     "capacityKw": round(view.capacity_kw, 3)}
            if action is not None:
                entry["setPoints"] = dict(action.commanded)
            if view.blocked:
                entry["blocked"] = view.blocked
            if lid in self._excluded_overrides():
                entry["override"] = True
            if view.critical:
                entry["critical"] = True
            loads[lid] = entry
        event = self.event if self._active() else None
        if event is not None:
            baseline = event.baseline_kw
            shed = (baseline - used) if baseline is not None else 0.0
            requested = event.requested_kw
        else:
            rolling = self.site.baseline(now + 1e-6, self.cfg.baseline_window_s)
            baseline = rolling.kw if rolling else None
            shed = 0.0
            requested = 0.0
        return Telemetry(ven_id=self.cfg.ven_id, used_power_kw=round(used, 4), ts=_dt(now) or datetime.now(UTC),
                         shed_power_kw=round(shed, 4), requested_reduction_kw=requested,
                         event_id=event.event_id if event else None,
                         baseline_power_kw=round(baseline, 4) if baseline is not None else None,
                         available_shed_kw=round(self._available_kw(views), 3), loads=loads,
                         opt_out=bool(self.config_opt_out or (self.event is not None and self.event.opted_out)))

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        event = self.event
        return {
            "venId": self.cfg.ven_id,
            "event": None if event is None else {**event.to_dict(), "startTime": _iso(event.start),
                                                 "untilTime": _iso(event.until), "active": self._active()},
            "actions": {lid: a.to_dict() for lid, a in self.actions.items()},
            "restoreQueue": [[t, lid] for t, lid in self.restore_queue],
            "overrides": sorted(self._excluded_overrides()),
            "optOut": bool(self.config_opt_out or (event is not None and event.opted_out)),
            "meterKw": self.site.meter[1] if self.site.meter else None,
            "historySamples": len(self.site.history),
            "counters": dict(self.counters),
            "problems": list(self.problems[-10:]),
            "lastEvent": self.last_event_summary,
        }

    # --- commands -----------------------------------------------------------------------------------------------
    def _event_command(self, cmd: Command, now: float) -> CommandOutcome:
        until = cmd.until.timestamp() if cmd.until else None
        if until is None:
            return self._error(cmd, now, "field 'until': is required")
        if until <= now:
            return self._error(cmd, now, f"field 'until': {_iso(until)} is already past")
        start = cmd.start_time.timestamp() if cmd.start_time else now
        if start - now <= START_NOW_S:
            start = min(start, now)  # a start this close is now (clock skew, time-format rounding)
        allowed = None
        if cmd.circuits:
            try:
                allowed = self._match_loads(cmd.circuits)
            except ValueError as exc:
                return self._error(cmd, now, f"field 'circuits': {exc}")
        previous = self.event
        same_event = (previous is not None and cmd.event_id is not None and previous.event_id == cmd.event_id)
        if same_event and previous is not None and cmd.modification_number < previous.modification:
            return self._error(cmd, now, f"field 'modificationNumber': {cmd.modification_number} is older than "
                                         f"the current {previous.modification}")
        event = EventState(event_id=cmd.event_id, correlation_id=cmd.correlation_id, op=cmd.op,
                           requested_kw=cmd.requested_reduction_kw, start=start, until=until,
                           modification=cmd.modification_number, allowed=allowed)
        ops: list[Op] = []
        self.restore_queue = []
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
                ops += self._restore_all(now, staggered=True)
            elif previous.started:
                # the meter history since the previous start is shed: keep its uncurtailed baseline
                event.baseline_kw, event.baseline_samples = previous.baseline_kw, previous.baseline_samples
        self.event = event
        self.counters["events_received"] += 1
        result: StepResult | None = None
        if event.started:
            ops += self._control(now, save=False)
            result = self.last_step
        elif start <= now:
            ops += self._activate(now, save=False)
            result = self.last_step
        self._save()
        return CommandOutcome(self._event_ack(cmd, event, result, now), ops)

    def _restore_command(self, cmd: Command, now: float) -> CommandOutcome:
        event = self.event
        if cmd.event_id is not None and event is not None and event.event_id != cmd.event_id:
            return self._error(cmd, now, f"field 'eventId': event {cmd.event_id!r} is not the current event "
                                         f"({event.event_id!r}); nothing restored")
        if event is not None:
            self.counters["events_restored"] += 1
            self._end_event(now, "restored")
        ops = self._restore_all(now, staggered=True)
        self._save()
        ack = Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id,
                  event_id=cmd.event_id or (event.event_id if event else None), target_kw=0.0,
                  accepted_reduce_kw=0.0, until=None, ts=_dt(now))
        return CommandOutcome(ack, ops)

    def _event_ack(self, cmd: Command, event: EventState, result: StepResult | None, now: float) -> Ack:
        margin = self.cfg.margin_kw(event.requested_kw)
        notes: list[str] = []
        opted_out = event.opted_out or self.config_opt_out
        if opted_out:
            accepted = 0.0
            notes.append("opted out")
        elif result is not None:
            accepted = min(event.requested_kw + margin, max(0.0, event.requested_kw - max(0.0, result.residual_kw)))
        else:
            views = self._views(now, hours_left=(event.until - event.start) / 3600.0, fresh=True)
            excluded = self._excluded(event)
            capacity = sum(v.capacity_kw for lid, v in views.items()
                           if lid not in excluded and not v.blocked and not v.critical)
            accepted = min(event.requested_kw, capacity)
            notes.append(f"starts at {_iso(event.start)}; figure from the loads' present capacity")
        if not opted_out and accepted < event.requested_kw - self.cfg.deadband_for(event.requested_kw):
            notes.append(f"can shed {accepted:.3f} of {event.requested_kw:.3f} kW")
            if result is not None:
                for lid, why in list(result.skipped.items())[:4]:
                    notes.append(f"{lid}: {why}")
            blocked = [f"{v.load_id}: {v.blocked}" for v in self._views(now).values() if v.blocked and not v.critical]
            notes.extend(blocked[:4])
        return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id,
                   event_id=event.event_id, target_kw=event.requested_kw, accepted_reduce_kw=round(accepted, 3),
                   until=_dt(event.until), ts=_dt(now), opt_out=opted_out,
                   overrides=sorted(self._excluded_overrides()), detail="; ".join(notes) or None)

    def _state_ack(self, cmd: Command, now: float) -> Ack:
        event = self.event
        if event is None:
            return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id, target_kw=0.0,
                       accepted_reduce_kw=0.0, until=None, ts=_dt(now), opt_out=self.config_opt_out,
                       overrides=sorted(self._excluded_overrides()))
        delivered = 0.0
        if self._active() and event.baseline_kw is not None and self.site.meter is not None:
            delivered = max(0.0, event.baseline_kw - self.site.meter[1])
        return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id,
                   event_id=event.event_id, target_kw=event.requested_kw, accepted_reduce_kw=round(delivered, 3),
                   until=_dt(event.until), ts=_dt(now), opt_out=event.opted_out or self.config_opt_out,
                   overrides=sorted(self._excluded_overrides()))

    def _error(self, cmd: Command, now: float, message: str) -> CommandOutcome:
        _log.warning("command %s (%s) refused: %s", cmd.correlation_id, cmd.op, message)
        self.counters["refused_commands"] += 1
        return CommandOutcome(Ack(correlation_id=cmd.correlation_id, ok=False, op=cmd.op, ven_id=self.cfg.ven_id,
                                  event_id=cmd.event_id, error=message, ts=_dt(now)))

    def _match_loads(self, names: list[str]) -> list[str]:
        index: dict[str, str] = {}
        for lid, model in self.models.items():
            index[normalize_key(lid)] = lid
            if model.cfg.circuit:
                index.setdefault(normalize_key(model.cfg.circuit), lid)
            index.setdefault(normalize_key(model.cfg.kind), lid)
        out: list[str] = []
        unknown = []
        for name in names:
            lid = index.get(normalize_key(name))
            if lid is None:
                unknown.append(name)
            elif lid not in out:
                out.append(lid)
        if unknown:
            raise ValueError(f"unknown load(s) {', '.join(map(repr, unknown))}; loads: {', '.join(self.models)}")
        return out

    # --- event life cycle ---------------------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.event is not None and self.event.started

    def _activate(self, now: float, save: bool = True) -> list[Op]:
        event = self.event
        if event is None:
            return []
        event.started = True
        self.counters["events_started"] += 1
        if event.baseline_kw is None:
            self._set_baseline(now)
        _log.info("event %s active: %.3f kW below a baseline of %s kW until %s", event.event_id,
                  event.requested_kw, event.baseline_kw, _iso(event.until))
        return self._control(now, save=save)

    def _set_baseline(self, now: float, fallback: float | None = None) -> None:
        event = self.event
        if event is None:
            return
        base = self.site.baseline(event.start if event.start <= now else now, self.cfg.baseline_window_s)
        meter_now = self.site.meter_now()
        if base is None and meter_now is not None and fallback is None:
            fallback = meter_now + self._shed_total()  # no uncurtailed history: the site now, shed added back
        if base is not None:
            event.baseline_kw, event.baseline_samples = round(base.kw, 4), base.samples
        elif fallback is not None:
            event.baseline_kw, event.baseline_samples = round(fallback, 4), 1

    def _end_event(self, now: float, how: str) -> None:
        event = self.event
        if event is None:
            return
        self.last_event_summary = {"eventId": event.event_id, "how": how, "at": _iso(now),
                                   "requestedKw": event.requested_kw, "baselineKw": event.baseline_kw}
        self.event = None

    # --- closed loop ----------------------------------------------------------------------------------------------
    def _hours_left(self, now: float) -> float:
        if self.event is None:
            return HOURS_WITHOUT_EVENT
        return max(1.0 / 3600.0, (self.event.until - max(now, self.event.start)) / 3600.0)

    def _views(self, now: float, hours_left: float | None = None, fresh: bool = False) -> dict[str, LoadView]:
        hours = self._hours_left(now) if hours_left is None else hours_left
        out = {}
        for lid, model in self.models.items():
            action = None if fresh else self.actions.get(lid)
            out[lid] = model.view(self.site.reading(model.cfg.path), action, hours)
        return out

    def _excluded_overrides(self) -> set[str]:
        return self.overrides | self.config_overrides

    def _excluded(self, event: EventState | None, now: float | None = None) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for lid in self.models:
            if lid in self._excluded_overrides():
                reasons[lid] = "override"
            elif event is not None and event.allowed is not None and lid not in event.allowed:
                reasons[lid] = "not named by the command"
            elif now is not None and self.faulted.get(lid, float("-inf")) > now:
                reasons[lid] = "its last write failed"
        if event is not None and (event.opted_out or self.config_opt_out):
            reasons = {lid: "opted out" for lid in self.models}
        return reasons

    def meter_uncertain(self) -> bool:
        """True when a write went out so close to the instant the last meter publish shows that it may or may
        not show it; the agent then reads the meter live (`on_meter_live`) before a command."""
        return self.site.meter_uncertain()

    def on_meter_live(self, kw: float, now: float | None = None) -> None:
        """A meter value read just now (not a publish): it shows the site as it is."""
        self.site.meter_live_read(kw, self.clock() if now is None else now)
        self.counters["meter_live_reads"] += 1

    def _shed_total(self) -> float:
        return sum(a.shed_kw for a in self.actions.values() if not a.restoring)

    def _violates(self, path: str, now: float) -> bool:
        """Does a fresh reading of `path` force a release (blocked load, capacity below its shed)?"""
        hours = self._hours_left(now)
        for lid, action in self.actions.items():
            model = self.models.get(lid)
            if model is None or model.cfg.path != path or action.restoring:
                continue
            view = model.view(self.site.reading(path), action, hours)
            if view.known and (view.blocked or (view.continuous and action.shed_kw > view.capacity_kw + EPS_KW)):
                return True
        return False

    def _control(self, now: float, save: bool = True) -> list[Op]:
        """One closed-loop step; saves the state before returning ops unless the caller saves it."""
        event = self.event
        if event is None or not event.started:
            return []
        meter_kw = self.site.meter_now()
        if event.baseline_kw is None or meter_kw is None:
            error = event.requested_kw - self._shed_total()
        else:
            error = event.requested_kw - (event.baseline_kw - meter_kw)
        views = self._views(now)
        queued = {lid for _, lid in self.restore_queue}
        excluded = self._excluded(event, now)
        current: dict[str, float] = {}
        idle: list[str] = []
        for lid, action in self.actions.items():
            if action.restoring or lid in queued:
                excluded[lid] = "being restored"
                continue
            view, model = views.get(lid), self.models.get(lid)
            if view is not None and model is not None and view.known:
                action.shed_kw = model.effective_shed(action, view)
                if model.idle(view):
                    idle.append(lid)
            current[lid] = action.shed_kw
        result = step(views, current, error, self.cfg.margin_kw(event.requested_kw),
                      self.cfg.deadband_for(event.requested_kw), excluded)
        self.last_step = result
        for lid, why in result.forced.items():
            _log.info("load %s released or trimmed: %s", lid, why)
            self.counters["forced_releases"] += 1
        targets = dict(result.targets)
        for lid in idle:
            targets.setdefault(lid, 0.0)
        ops = self._apply(targets, views, now)
        if ops and save:
            self._save()
        return ops

    def _apply(self, targets: Mapping[str, float], views: Mapping[str, LoadView], now: float) -> list[Op]:
        sheds: list[Op] = []
        releases: list[Op] = []
        order = sorted(targets, key=lambda lid: (views[lid].priority if lid in views else 0, lid))
        for lid in order:
            kw = targets[lid]
            action = self.actions.get(lid)
            model = self.models.get(lid)
            if kw <= EPS_KW or model is None:
                if action is not None and not action.restoring:
                    releases += self._restore_ops(action, now)
                continue
            view = views[lid]
            values = self.site.reading(model.cfg.path)
            expected, points = model.command(kw, view, action, values)
            if not points:
                continue
            if action is None:
                originals = {}
                for point in points:
                    if values is None or point not in values:
                        self.problem(f"cannot shed {lid}: no reading of {model.cfg.path}/{point} to restore to")
                        break
                    originals[point] = values[point]
                else:
                    action = Action(load_id=lid, path=model.cfg.path, shed_kw=0.0, free_kw=view.free_kw, commanded={},
                                    originals=originals, since=now)
                    self.actions[lid] = action
                    self.site.shed_started(now)
                if action is None:
                    continue
            before = action.shed_kw
            action.shed_kw = expected
            self.site.effect(now, before - expected)
            for point, value in points.items():
                if action.commanded.get(point) != value:
                    sheds.append(Op(SET, model.cfg.path, point, value, lid, SHED))
        if sheds or releases:
            self.site.sent(now)
        return sheds + releases

    # --- restores ---------------------------------------------------------------------------------------------------
    def _restore_all(self, now: float, staggered: bool) -> list[Op]:
        self.restore_queue = []
        pending = [a for a in self.actions.values() if not a.restoring]
        pending.sort(key=lambda a: (self.models[a.load_id].cfg.priority if a.load_id in self.models else 0,
                                    a.load_id), reverse=True)
        ops: list[Op] = []
        stagger = self.cfg.restore_stagger_s if staggered else 0.0
        for index, action in enumerate(pending):
            if index == 0 or stagger <= 0:
                ops += self._restore_ops(action, now)
            else:
                self.restore_queue.append((now + index * stagger, action.load_id))
        return ops

    def _restore_ops(self, action: Action, now: float) -> list[Op]:
        path = action.path
        action.restoring = True
        action.retry_at = None
        self.site.effect(now, action.shed_kw)
        self.site.sent(now)
        ops = []
        for point, original in action.originals.items():
            if self.cfg.restore_method == RESTORE_REVERT:
                ops.append(Op(REVERT, path, point, original, action.load_id, RESTORE))
            else:
                ops.append(Op(SET, path, point, original, action.load_id, RESTORE))
        if not ops:
            del self.actions[action.load_id]
        return ops

    # --- persistence ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"venId": self.cfg.ven_id, "event": self.event.to_dict() if self.event else None,
                "actions": {lid: a.to_dict() for lid, a in self.actions.items()},
                "overrides": sorted(self.overrides),
                **self.site.to_state()}

    def _save(self) -> None:
        if self.store is None:
            return
        try:
            self.store.save(self.state())
        except OSError as exc:
            self.counters["state_save_failures"] += 1
            self.problem(f"cannot save state to {self.store.path}: {exc}")

    def _available_kw(self, views: Mapping[str, LoadView]) -> float:
        excluded = self._excluded(self.event)
        total = 0.0
        for lid, view in views.items():
            if lid in excluded or view.blocked or view.critical or not view.known:
                continue
            action = self.actions.get(lid)
            if action is None:
                total += view.capacity_kw
            elif view.continuous and not action.restoring:
                total += max(0.0, view.capacity_kw - action.shed_kw)
        return total

    def problem(self, text: str) -> None:
        _log.error("%s", text)
        self.counters["problems"] += 1
        self.problems.append(text)
        del self.problems[:-50]


def _iso(ts: float) -> str:
    from dr_common.timeutil import to_iso

    return to_iso(datetime.fromtimestamp(ts, UTC))


_START_KEYS = next(f for f in COMMAND_FIELDS if f.name == "startTime").keys()
_DURATION_KEYS = next(f for f in COMMAND_FIELDS if f.name == "durationS").keys()


def _start_now_if_relative(payload: object, now: float) -> object:
    """A command with a duration and no start time starts now by this engine's clock."""
    if not isinstance(payload, Mapping):
        return payload
    keys = {normalize_key(k) for k in payload if isinstance(k, str)}
    if keys & _DURATION_KEYS and not keys & _START_KEYS:
        return {**payload, "startTime": now}
    return payload


def _identity_of(payload: object) -> object:
    """What makes two deliveries of a command the same command (ignores the send time)."""
    if isinstance(payload, Mapping):
        return {k: v for k, v in payload.items() if normalize_key(str(k)) not in ("issuedat", "ts", "timestamp",
                                                                                 "sentat")}
    return payload


def _raw_field(raw: object, *names: str) -> str | None:
    if isinstance(raw, (bytes, bytearray, str)):
        try:
            raw = decode_json(raw)
        except PayloadError:
            return None
    if not isinstance(raw, Mapping):
        return None
    wanted = {normalize_key(n) for n in names}
    for key, value in raw.items():
        if isinstance(key, str) and normalize_key(key) in wanted and isinstance(value, (str, int)) \
                and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:256]
    return None


def raw_correlation(raw: object) -> str:
    return _raw_field(raw, "correlationId", "correlation", "cid", "requestId", "msgId", "commandId") or "unknown"


def raw_op(raw: object) -> str | None:
    return _raw_field(raw, "op", "operation", "command", "cmd", "type", "action")
