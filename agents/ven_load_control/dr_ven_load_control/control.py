"""Shed-control room of the VEN core: the shed actions, the closed loop, and the staggered restores.

`ShedControl` holds every load's model, the VEN's current action on each load, the restore queue and the
site owner's overrides. Given the event (owned by the engine) it runs one closed-loop step (`step`), turns
allocations into point writes, gives loads back (at once or `restoreStaggerS` apart) and books the results of
the writes the agent sent. It never parses commands and never touches the state file: the engine saves.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from dr_ven_load_control.config import RESTORE_REVERT, VenConfig
from dr_ven_load_control.controller import StepResult, step
from dr_ven_load_control.loads import Action, LoadModel, LoadView, build_model
from dr_ven_load_control.siteview import SiteView
from dr_ven_load_control.state import CORRECT, EPS_KW, RESTORE, REVERT, SET, SHED, EventState, Op
from dr_ven_load_control.writes import RestoreChecks, refused

_log = logging.getLogger(__name__)

HOURS_WITHOUT_EVENT = 1.0  # horizon of the energy constraints when reporting capacity outside events
FAULT_HOLD_S = 60.0  # a load whose shed write failed is left out of planning this long


class ShedControl:
    """The VEN's actions on its loads and the loop that sizes them."""

    def __init__(self, cfg: VenConfig, site: SiteView, counters: Counter[str],
                 problem: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.site = site
        self.counters = counters
        self.problem = problem
        self.models: dict[str, LoadModel] = {load.name: build_model(load) for load in cfg.loads}
        self.actions: dict[str, Action] = {}
        self.restore_queue: list[tuple[float, str]] = []
        self.overrides: set[str] = set()
        self.config_overrides: set[str] = set()
        self.config_opt_out = False
        self.faulted: dict[str, float] = {}
        self.last_step: StepResult | None = None
        self.checks = RestoreChecks(counters, problem, cfg.late_write_window_s)

    # --- views --------------------------------------------------------------------------------------------
    def hours_left(self, event: EventState | None, now: float) -> float:
        """Time to the end of the event (the energy constraints' horizon)."""
        if event is None:
            return HOURS_WITHOUT_EVENT
        return max(1.0 / 3600.0, (event.until - max(now, event.start)) / 3600.0)

    def views(self, event: EventState | None, now: float, hours_left: float | None = None,
              fresh: bool = False) -> dict[str, LoadView]:
        """What every load can shed now (`fresh`: as if none were shed)."""
        hours = self.hours_left(event, now) if hours_left is None else hours_left
        out = {}
        for lid, model in self.models.items():
            action = None if fresh else self.actions.get(lid)
            out[lid] = model.view(self.site.reading(model.cfg.path), action, hours)
        return out

    def excluded_overrides(self) -> set[str]:
        """Loads the site owner took out (RPC and config store)."""
        return self.overrides | self.config_overrides

    def opted_out(self, event: EventState | None) -> bool:
        """Is the VEN opted out (standing, or of this event)?"""
        return self.config_opt_out or (event is not None and event.opted_out)

    def excluded(self, event: EventState | None, now: float | None = None) -> dict[str, str]:
        """Loads the loop may not use now, with why."""
        reasons: dict[str, str] = {}
        for lid in self.models:
            if lid in self.excluded_overrides():
                reasons[lid] = "override"
            elif event is not None and event.allowed is not None and lid not in event.allowed:
                reasons[lid] = "not named by the command"
            elif now is not None and self.faulted.get(lid, float("-inf")) > now:
                reasons[lid] = "its last write failed"
        if event is not None and (event.opted_out or self.config_opt_out):
            reasons = {lid: "opted out" for lid in self.models}
        return reasons

    def shed_total(self) -> float:
        """The reduction the actions held (not being restored) are expected to give."""
        return sum(a.shed_kw for a in self.actions.values() if not a.restoring)

    def available_kw(self, event: EventState | None, views: Mapping[str, LoadView]) -> float:
        """What the loads could still shed on top of what they shed now."""
        excluded = self.excluded(event)
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

    def violates(self, event: EventState | None, path: str, now: float) -> bool:
        """Does a fresh reading of `path` force a release (blocked load, capacity below its shed)?"""
        hours = self.hours_left(event, now)
        for lid, action in self.actions.items():
            model = self.models.get(lid)
            if model is None or model.cfg.path != path or action.restoring:
                continue
            view = model.view(self.site.reading(path), action, hours)
            if view.known and (view.blocked or (view.continuous and action.shed_kw > view.capacity_kw + EPS_KW)):
                return True
        return False

    def note_reading(self, path: str, values: Mapping[str, Any], shows: float) -> None:
        """Remember, as values of ours, what a reading that surely shows a shed write reads of its point: the
        device's rendering of it (a register's resolution) is what a driver's revert may go back to."""
        for action in self.actions.values():
            if action.path != path or action.restoring:
                continue
            for point in action.commanded:
                if point in values and self.site.shows_write(path, point, shows):
                    action.remember(point, values[point])

    # --- the closed loop ----------------------------------------------------------------------------------
    def step(self, event: EventState, now: float) -> list[Op]:
        """One closed-loop step toward `baseline - requestedKw` for an active event (for a capped one: toward
        an import of `capKw`, the reduction re-evaluated from the load at every step); the caller saves."""
        meter_kw = self.site.meter_now()
        if event.cap_kw is not None:
            event.requested_kw = round(cap_reduction(event.cap_kw, meter_kw, self.shed_total(), event.baseline_kw,
                                                     self.cfg.limits.max_requested_kw), 4)
            error = event.requested_kw - self.shed_total()
        elif event.baseline_kw is None or meter_kw is None:
            error = event.requested_kw - self.shed_total()
        else:
            error = event.requested_kw - (event.baseline_kw - meter_kw)
        views = self.views(event, now)
        queued = {lid for _, lid in self.restore_queue}
        excluded = self.excluded(event, now)
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
        return self._apply(targets, views, now)

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
                    releases += self.restore_ops(action, now)
                continue
            view = views[lid]
            values = self.site.reading(model.cfg.path)
            expected, points = model.command(kw, view, action, values)
            if not points:
                continue
            if action is None:
                action = self._new_action(lid, model, view, values, points, now)
                if action is None:
                    continue
            before = action.shed_kw
            action.shed_kw = expected
            self.site.effect(now, before - expected)
            for point, value in points.items():
                if action.commanded.get(point) != value:
                    self.checks.drop(model.cfg.path, point)
                    sheds.append(Op(SET, model.cfg.path, point, value, lid, SHED))
        if sheds or releases:
            self.site.sent(now)
        return sheds + releases

    def _new_action(self, lid: str, model: LoadModel, view: LoadView, values: Mapping[str, object] | None,
                    points: Mapping[str, object], now: float) -> Action | None:
        if self.site.revert_unseen(model.cfg.path, points):  # shed again at the next reading, not on a stale one
            self.counters["reshed_after_revert_deferred"] += 1
            return None
        originals = {}
        for point in points:
            checking, original = self.checks.original(model.cfg.path, point)
            if checking:  # restored after a late write, not confirmed yet: the reading may show the late value
                originals[point] = original
                continue
            if values is None or point not in values:
                self.problem(f"cannot shed {lid}: no reading of {model.cfg.path}/{point} to restore to")
                return None
            originals[point] = values[point]
        action = Action(load_id=lid, path=model.cfg.path, shed_kw=0.0, free_kw=view.free_kw, commanded={},
                        originals=originals, since=now)
        self.actions[lid] = action
        self.site.shed_started(now)
        return action

    # --- restores -----------------------------------------------------------------------------------------
    def restore_all(self, now: float, staggered: bool) -> list[Op]:
        """Give every load back, last in the shed order first; `staggered`: `restoreStaggerS` apart."""
        self.restore_queue = []
        pending = [a for a in self.actions.values() if not a.restoring]
        pending.sort(key=lambda a: (self.models[a.load_id].cfg.priority if a.load_id in self.models else 0,
                                    a.load_id), reverse=True)
        ops: list[Op] = []
        stagger = self.cfg.restore_stagger_s if staggered else 0.0
        for index, action in enumerate(pending):
            if index == 0 or stagger <= 0:
                ops += self.restore_ops(action, now)
            else:
                self.restore_queue.append((now + index * stagger, action.load_id))
        return ops

    def restore_ops(self, action: Action, now: float) -> list[Op]:
        """The writes that put one load's points back (pre-event value, or the driver's revert)."""
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

    def due_restores(self, now: float) -> list[Op]:
        """Staggered restores and restore retries that are due."""
        ops: list[Op] = []
        due = [lid for t, lid in self.restore_queue if t <= now]
        if due:
            self.restore_queue = [(t, lid) for t, lid in self.restore_queue if t > now]
            for lid in due:
                action = self.actions.get(lid)
                if action is not None:
                    ops += self.restore_ops(action, now)
        for action in list(self.actions.values()):
            if action.retry_at is not None and now >= action.retry_at:
                action.retry_at = None
                ops += self.restore_ops(action, now)
        return ops

    def deadlines(self) -> list[float]:
        """When staggered restores and retries fall due."""
        return [t for t, _ in self.restore_queue] + [a.retry_at for a in self.actions.values()
                                                     if a.retry_at is not None]

    # --- results of the writes ----------------------------------------------------------------------------
    def book(self, results: list[tuple[Op, str | None]], now: float) -> bool:
        """Record the results of sent ops; True when a shed write failed (the others should make up)."""
        restored: dict[str, bool] = {}
        shed_failed = False
        written: set[str] = set()
        for op, error in results:
            action = self.actions.get(op.load_id)
            if error is None:  # a revert goes back to the value recorded before the event
                self.site.wrote(op.path, op.point, op.value, now)
                if op.kind == REVERT:
                    self.site.was_reverted(op.path, op.point, now)
            if op.purpose == CORRECT:
                self.checks.booked(op, error, now)
                continue
            if error is None:
                written.add(op.load_id)
            if op.purpose == RESTORE:
                restored[op.load_id] = restored.get(op.load_id, True) and error is None
                if error is None and op.kind == REVERT and action is not None:
                    self.checks.watch(op.path, op.point, action.originals.get(op.point, op.value), op.load_id, now,
                                      ours=tuple(action.written.get(op.point, ())))
                if error is not None:
                    self.counters["restore_failures"] += 1
                    self.problem(f"restore of {op.load_id} ({op.path}/{op.point}) failed: {error}")
                continue
            if error is None:
                self.counters["writes"] += 1
                if action is not None:
                    action.commanded[op.point] = op.value
                    action.remember(op.point, op.value)
                continue
            self.counters["write_failures"] += 1
            shed_failed = True
            self.faulted[op.load_id] = now + FAULT_HOLD_S
            if not refused(error):  # no clear refusal: the device may apply it late, so it is restored too
                self.counters["writes_possibly_applied"] += 1
                self.problem(f"shed of {op.load_id} ({op.path}/{op.point} = {op.value!r}) got no clear answer: "
                             f"{error}; possibly written, restored like a written point; not used again for "
                             f"{FAULT_HOLD_S:g} s")
                if action is not None:
                    action.uncertain[op.point] = op.value
                    action.remember(op.point, op.value)
                continue
            self.problem(f"shed of {op.load_id} ({op.path}/{op.point} = {op.value!r}) failed: {error}; "
                         f"not used again for {FAULT_HOLD_S:g} s")
            if action is not None and not action.commanded and not action.uncertain:
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
        return shed_failed


def cap_reduction(cap_kw: float, meter_kw: float | None, shed_kw: float, baseline_kw: float | None,
                  max_kw: float) -> float:
    """The reduction an import cap asks for now: the site's uncurtailed load (the meter plus what the VEN sheds;
    the event's baseline while the meter is unknown) down to `cap_kw`, never below zero nor above `max_kw`
    (limits.maxRequestedKw)."""
    load = meter_kw + shed_kw if meter_kw is not None else baseline_kw
    if load is None:
        return 0.0
    return min(max_kw, max(0.0, load - cap_kw))
