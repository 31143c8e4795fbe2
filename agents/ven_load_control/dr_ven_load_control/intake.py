"""Command-intake room of the VEN core: parse, check, dedupe and answer every command.

`CommandIntake.admit` turns a raw command (bus message, RPC argument, JSON text) into a `Command` this VEN
may carry out, or into the `ok: false` ack that says which field is wrong: malformed or unknown fields, a
command for another venId, a request outside the configured `limits` (duration, kW, start ahead). Every
refusal is counted by reason and logged at most once a minute per reason. A repeated delivery (same
correlationId and payload) gets the ack it got the first time. The ack builders read the shed-control room;
nothing here writes a point or the state file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping

from dr_common.payloads import COMMAND_FIELDS, OP_EVENT, OP_SHED_PANEL, Ack, Command
from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_common.schema import PayloadError, check_tree, decode_json, normalize_key
from dr_ven_load_control.config import VenConfig
from dr_ven_load_control.control import ShedControl
from dr_ven_load_control.controller import StepResult
from dr_ven_load_control.state import EventState, dt, iso

_log = logging.getLogger(__name__)

RECENT_ACKS = 64
START_NOW_S = 1.0  # an event starting less than this ahead starts at once


class Refused(Exception):
    """A command this VEN will not carry out; `ack` says why."""

    def __init__(self, ack: Ack) -> None:
        super().__init__(ack.error)
        self.ack = ack


class CommandIntake:
    """Parses and checks commands, remembers recent acks, builds every ack."""

    def __init__(self, cfg: VenConfig, control: ShedControl, counters: Counter[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.control = control
        self.counters = counters
        self.rejects = RejectCounter()
        self._rate_log = RateLimitedLog(_log, 60.0, clock)
        self._recent: OrderedDict[str, tuple[object, Ack]] = OrderedDict()

    # --- admission ----------------------------------------------------------------------------------------
    def admit(self, raw: object, now: float) -> tuple[Command, object]:
        """The command and its decoded payload; raises Refused with the `ok: false` ack."""
        try:
            payload = decode_json(raw) if isinstance(raw, (str, bytes, bytearray)) else raw
            _check_values(payload)
            cmd = Command.from_payload(_start_now_if_relative(payload, now))
        except PayloadError as exc:
            self.counters["bad_commands"] += 1
            raise Refused(self._refuse(exc.field, str(exc), raw_correlation(raw), raw_op(raw), None, now)) from None
        if cmd.ven_id is not None and cmd.ven_id != self.cfg.ven_id:
            self.counters["bad_commands"] += 1
            raise Refused(self.error(cmd, now, "venId", f"this VEN is {self.cfg.ven_id!r}, not {cmd.ven_id!r}"))
        if cmd.op in (OP_EVENT, OP_SHED_PANEL):
            self._check_limits(cmd, now)
        return cmd, payload

    def _check_limits(self, cmd: Command, now: float) -> None:
        limits = self.cfg.limits
        if cmd.requested_reduction_kw > limits.max_requested_kw:
            raise Refused(self.error(cmd, now, "requestedReductionKw",
                                     f"{cmd.requested_reduction_kw:g} kW is more than this VEN accepts "
                                     f"(limits.maxRequestedKw {limits.max_requested_kw:g})"))
        start = cmd.start_time.timestamp() if cmd.start_time else now
        if start - now > limits.max_start_ahead_s:
            raise Refused(self.error(cmd, now, "startTime",
                                     f"{iso(start)} is more than {limits.max_start_ahead_s:g} s ahead "
                                     f"(limits.maxStartAheadS)"))
        if cmd.until is not None:
            duration = cmd.until.timestamp() - max(start, now)
            if duration > limits.max_event_duration_s:
                raise Refused(self.error(cmd, now, "until",
                                         f"{iso(cmd.until.timestamp())} makes the event {duration:g} s long, more "
                                         f"than limits.maxEventDurationS {limits.max_event_duration_s:g}"))

    def cached(self, cmd: Command, payload: object) -> Ack | None:
        """The ack of an earlier delivery of this same command, if any."""
        cached = self._recent.get(cmd.correlation_id)
        if cached is not None and cached[0] == _identity_of(payload):
            self.counters["duplicate_commands"] += 1
            return cached[1]
        return None

    def remember(self, cmd: Command, payload: object, ack: Ack) -> None:
        """Keep a positive ack for repeated deliveries (the last RECENT_ACKS)."""
        if not ack.ok:
            return
        self._recent[cmd.correlation_id] = (_identity_of(payload), ack)
        while len(self._recent) > RECENT_ACKS:
            self._recent.popitem(last=False)

    # --- acks ---------------------------------------------------------------------------------------------
    def _refuse(self, field: str, message: str, correlation_id: str, op: str | None, event_id: str | None,
                now: float) -> Ack:
        self.counters["refused_commands"] += 1
        self.rejects.count(field)
        self._rate_log.warning(f"refused:{field}", "command %s (%s) refused: %s", correlation_id, op, message)
        return Ack(correlation_id=correlation_id, ok=False, op=op, ven_id=self.cfg.ven_id, event_id=event_id,
                   error=message, ts=dt(now))

    def error(self, cmd: Command, now: float, field: str, message: str) -> Ack:
        """An `ok: false` ack naming `field`, counted and logged (rate-limited)."""
        return self._refuse(field, f"field '{field}': {message}", cmd.correlation_id, cmd.op, cmd.event_id, now)

    def event_ack(self, cmd: Command, event: EventState, result: StepResult | None, now: float) -> Ack:
        """The ack of an event command: what the VEN accepts to shed, and why less when it is less."""
        control, cfg = self.control, self.cfg
        margin = cfg.margin_kw(event.requested_kw)
        notes: list[str] = []
        opted_out = event.opted_out or control.config_opt_out
        if opted_out:
            accepted = 0.0
            notes.append("opted out")
        elif result is not None:
            accepted = min(event.requested_kw + margin, max(0.0, event.requested_kw - max(0.0, result.residual_kw)))
        else:
            views = control.views(event, now, hours_left=(event.until - event.start) / 3600.0, fresh=True)
            excluded = control.excluded(event)
            capacity = sum(v.capacity_kw for lid, v in views.items()
                           if lid not in excluded and not v.blocked and not v.critical)
            accepted = min(event.requested_kw, capacity)
            notes.append(f"starts at {iso(event.start)}; figure from the loads' present capacity")
        if not opted_out and accepted < event.requested_kw - cfg.deadband_for(event.requested_kw):
            notes.append(f"can shed {accepted:.3f} of {event.requested_kw:.3f} kW")
            if result is not None:
                for lid, why in list(result.skipped.items())[:4]:
                    notes.append(f"{lid}: {why}")
            blocked = [f"{v.load_id}: {v.blocked}" for v in control.views(event, now).values()
                       if v.blocked and not v.critical]
            notes.extend(blocked[:4])
        return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=cfg.ven_id,
                   event_id=event.event_id, target_kw=event.requested_kw, accepted_reduce_kw=round(accepted, 3),
                   until=dt(event.until), ts=dt(now), opt_out=opted_out,
                   overrides=sorted(control.excluded_overrides()), detail="; ".join(notes) or None)

    def state_ack(self, cmd: Command, event: EventState | None, delivered: float, now: float) -> Ack:
        """The ack of a ping: the event held and what it delivers now."""
        control = self.control
        if event is None:
            return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id, target_kw=0.0,
                       accepted_reduce_kw=0.0, until=None, ts=dt(now), opt_out=control.config_opt_out,
                       overrides=sorted(control.excluded_overrides()))
        return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id,
                   event_id=event.event_id, target_kw=event.requested_kw, accepted_reduce_kw=round(delivered, 3),
                   until=dt(event.until), ts=dt(now), opt_out=control.opted_out(event),
                   overrides=sorted(control.excluded_overrides()))

    def restore_ack(self, cmd: Command, event_id: str | None, now: float) -> Ack:
        """The ack of a restore."""
        return Ack(correlation_id=cmd.correlation_id, ok=True, op=cmd.op, ven_id=self.cfg.ven_id, event_id=event_id,
                   target_kw=0.0, accepted_reduce_kw=0.0, until=None, ts=dt(now))

    def internal_error(self, raw: object, exc: Exception, now: float) -> Ack:
        """The `ok: false` ack of a command the engine could not handle (a defect)."""
        return self._refuse("<internal>", f"internal error: {type(exc).__name__}", raw_correlation(raw), raw_op(raw),
                            None, now)

    def match_loads(self, names: list[str]) -> list[str]:
        """Load ids named by a command (load id, circuit or kind); ValueError names the unknown ones."""
        index: dict[str, str] = {}
        for lid, model in self.control.models.items():
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
            raise ValueError(f"unknown load(s) {', '.join(map(repr, unknown))}; "
                             f"loads: {', '.join(self.control.models)}")
        return out


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


def _check_values(payload: object) -> None:
    """Refuse, naming the key, a value JSON cannot carry faithfully (an RPC or bus payload arrives decoded:
    integers beyond float range, non-finite numbers, oversized or deeply nested values)."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            check_tree(value, str(key)[:64])


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
    """The correlationId of a command that could not be parsed (for its ack), or 'unknown'."""
    return _raw_field(raw, "correlationId", "correlation", "cid", "requestId", "msgId", "commandId") or "unknown"


def raw_op(raw: object) -> str | None:
    """The op of a command that could not be parsed, if it names one."""
    return _raw_field(raw, "op", "operation", "command", "cmd", "type", "action")


def event_times(cmd: Command, now: float) -> tuple[float | None, float]:
    """(until, start) of an event command in epoch seconds; a start within START_NOW_S is now."""
    until = cmd.until.timestamp() if cmd.until else None
    start = cmd.start_time.timestamp() if cmd.start_time else now
    if start - now <= START_NOW_S:
        start = min(start, now)  # a start this close is now (clock skew, time-format rounding)
    return until, start


__all__ = ["CommandIntake", "Refused", "raw_correlation", "raw_op", "event_times", "RECENT_ACKS", "START_NOW_S"]
