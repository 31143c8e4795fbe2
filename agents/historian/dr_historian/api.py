"""The historian's RPC surface without the platform: argument checks, limits, and what a caller may see of an error.

* Bad input raises `QueryError` naming the argument (`field 'count': must be at most 10000`); it is counted by
  argument and logged at most once a minute per RPC and argument.
* A database error never reaches the caller with its SQL, parameters or driver text: the caller gets
  `HistorianUnavailable` with an error id; the log line with that id carries the detail.
* Every answer is bounded: `count` defaults to `query.default_count` and may not exceed `query.max_count` rows per
  topic, a query names at most `query.max_topics` topics, topic listings and pattern searches return at most
  `query.max_topic_results` names, a baseline spans at most `MAX_BASELINE_DAYS`, an accuracy backcast at most
  `MAX_BACKCAST_DAYS` days of an event-hours window of at most a day.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dr_common.config import ConfigError
from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_common.schema import PayloadError, check_id, check_tree
from dr_common.timeutil import parse_time, utcnow
from dr_common.topics import DEVICES_PREFIX
from dr_historian.config import HistorianConfig
from dr_historian.mv.accuracy import MAX_BACKCAST_DAYS, chosen_accuracy, event_accuracy, site_accuracy
from dr_historian.mv.baselines import CAISO_10IN10, METHODS, VEN_REPORTED
from dr_historian.mv.presets import PRESETS, describe, preset
from dr_historian.mv.performance import MvOptions, UnknownEvent, event_performance, topic_baseline
from dr_historian.mv.series import MvError, Window
from dr_historian.reads import ORDER_FIRST_TO_LAST, ORDER_LAST_TO_FIRST
from dr_historian.schema import QueryError, StoreError
from dr_historian.store import Store

_log = logging.getLogger(__name__)

T = TypeVar("T")

TOPIC_MAX_CHARS = 512
MAX_SKIP = 10 ** 9
MAX_BASELINE_DAYS = 31
PLOT_MARGIN_MINUTES = 120
CHOSEN_ACCURACY_DAYS = 30  # event_performance's backcast of the chosen method (the status page shows it)
_RELATIVE_RE = re.compile(r"\A\s*now((?:\s*[-+]\s*\d{1,9}\s*[smhdw])*)\s*\Z", re.IGNORECASE)
_RELATIVE_PART_RE = re.compile(r"([-+])\s*(\d{1,9})\s*([smhdw])", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class HistorianUnavailable(RuntimeError):
    """The database failed; the message carries an error id to find the detail in the historian's log."""


def check_topic(value: object, field: str = "topic") -> str:
    """A topic name: a non-empty string of at most TOPIC_MAX_CHARS without control characters."""
    if not isinstance(value, str) or not value.strip():
        raise QueryError(field, "must be a non-empty topic name")
    if len(value) > TOPIC_MAX_CHARS:
        raise QueryError(field, f"must be at most {TOPIC_MAX_CHARS} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise QueryError(field, "must not contain control characters")
    return value


def check_topics(value: object, limit: int, field: str = "topic") -> list[str]:
    """One topic name or a non-empty list of at most `limit` names."""
    if isinstance(value, str):
        return [check_topic(value, field)]
    if not isinstance(value, (list, tuple)) or not value:
        raise QueryError(field, "must be a topic name or a non-empty list of topic names")
    if len(value) > limit:
        raise QueryError(field, f"must name at most {limit} topics")
    return [check_topic(item, f"{field}[{index}]") for index, item in enumerate(value)]


def parse_query_time(value: object, field: str, now: datetime | None = None) -> datetime | None:
    """None, an ISO 8601 time, epoch seconds/milliseconds, or VOLTTRON's relative form `now -1h -20m`."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) > 64:
        raise QueryError(field, "must be a time of at most 64 characters")
    if isinstance(value, str) and (match := _RELATIVE_RE.match(value)):
        offset = timedelta()
        for sign, amount, unit in _RELATIVE_PART_RE.findall(match.group(1)):
            seconds = int(amount) * _UNIT_S[unit.lower()]
            offset += timedelta(seconds=seconds if sign == "+" else -seconds)
        try:
            return (now or utcnow()) + offset
        except OverflowError:
            raise QueryError(field, "relative time out of range") from None
    try:
        return parse_time(value)
    except (ValueError, TypeError, OverflowError):
        raise QueryError(field, "must be an ISO 8601 time, epoch seconds or 'now -1h'") from None


def _int_arg(value: object, field: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(field, "must be an integer")
    if not minimum <= value <= maximum:
        raise QueryError(field, f"must be between {minimum} and {maximum}")
    return value


def _zone(value: object, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 64:
        raise QueryError("timezone", "must be a time zone name")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError("timezone", "unknown time zone") from None
    return value


def _interval(value: object, default: int) -> int:
    if value is None:
        return default
    minutes = _int_arg(value, "interval_minutes", 1, 1440)
    if 60 % minutes and minutes % 60:
        raise QueryError("interval_minutes", "must divide an hour or be whole hours")
    return minutes


def _methods(value: object, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or len(value) > len(METHODS):
        raise QueryError("methods", f"must be a non-empty list of {', '.join(METHODS)}")
    for method in value:
        if method not in METHODS:
            raise QueryError("methods", f"unknown method; known: {', '.join(METHODS)}")
    return tuple(dict.fromkeys(value))


def _overrides(value: object) -> dict[str, dict[str, Any]]:
    """{preset: {parameter: value}} for one call, every parameter checked against the preset."""
    if value is None:
        return {}
    check_tree(value, "overrides")
    if not isinstance(value, dict) or len(value) > len(PRESETS):
        raise QueryError("overrides", "must be an object of preset names to parameter objects")
    for name, params in value.items():
        if name not in PRESETS:
            raise QueryError("overrides", f"unknown preset; known: {', '.join(PRESETS)}")
        try:
            preset(name, params)
        except MvError as exc:
            raise QueryError("overrides", f"{name}.{exc}") from None
    return {name: dict(params) for name, params in value.items()}


def parse_mv_presets(value: object) -> dict[str, dict[str, Any]]:
    """The site's preset parameters (config key `mv_presets`, {preset: {parameter: value}}), or ConfigError
    naming the key."""
    if value is None:
        return {}
    try:
        return _overrides(value)
    except (QueryError, PayloadError) as exc:
        reason = getattr(exc, "reason", str(exc))
        raise ConfigError("mv_presets", reason) from None


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class HistorianApi:
    """Checks and runs the historian's RPCs against one store and configuration (both may be swapped)."""

    def __init__(self, store: Callable[[], Store | None], config: Callable[[], HistorianConfig | None],
                 clock: Callable[[], float] = time.monotonic,
                 mv_presets: Callable[[], dict[str, dict[str, Any]]] = dict) -> None:
        self._store = store
        self._config = config
        self._mv_presets = mv_presets  # the site's preset parameters (config key mv_presets)
        self.rejects = RejectCounter()
        self.db_errors = 0
        self._rate_log = RateLimitedLog(_log, interval_s=60.0, clock=clock)

    # --- the guard every RPC goes through -------------------------------------------------------------
    def guarded(self, rpc: str, fn: Callable[[], T]) -> T:
        """Run one RPC: count and log bad input, and hide database detail behind an error id."""
        try:
            return fn()
        except PayloadError as exc:
            self.rejects.count(f"{rpc}.{exc.field}")
            self._rate_log.warning(f"{rpc}.{exc.field}", "historian RPC %s refused: %s", rpc, exc)
            raise QueryError(exc.field, exc.reason) from None
        except (StoreError, HistorianUnavailable) as exc:
            raise self._unavailable(rpc, exc) from None
        except MvError:
            raise
        except Exception as exc:  # a bug must not show internals either; the agent keeps serving
            raise self._unavailable(rpc, exc, traceback=True) from None

    def _unavailable(self, rpc: str, exc: BaseException, traceback: bool = False) -> HistorianUnavailable:
        self.db_errors += 1
        error_id = uuid.uuid4().hex[:12]
        self._rate_log.log(logging.ERROR, f"{rpc}.failed.{type(exc).__name__}",
                           "historian RPC %s failed (error id %s): %s: %s", rpc, error_id, type(exc).__name__, exc)
        if traceback:
            _log.debug("historian RPC %s error id %s", rpc, error_id, exc_info=exc)
        return HistorianUnavailable(f"the historian could not answer {rpc} (error id {error_id}); "
                                    "the detail is in the historian's log")

    def _ready(self) -> tuple[Store, HistorianConfig]:
        store, config = self._store(), self._config()
        if store is None or config is None:
            raise HistorianUnavailable("historian is not configured")
        return store, config

    # --- VOLTTRON's historian API ------------------------------------------------------------------------
    def query(self, topic: object, start: object = None, end: object = None, agg_type: object = None,
              agg_period: object = None, skip: object = 0, count: object = None,
              order: object = ORDER_FIRST_TO_LAST) -> dict[str, Any]:
        """VOLTTRON's query with every argument checked and the row count bounded."""
        store, config = self._ready()
        limits = config.query
        names = check_topics(topic, limits.max_topics)
        start_dt, end_dt = parse_query_time(start, "start"), parse_query_time(end, "end")
        if start_dt is not None and end_dt is not None and end_dt < start_dt:
            raise QueryError("end", "must not be before start")
        rows = limits.default_count if count is None else _int_arg(count, "count", 0, limits.max_count)
        offset = 0 if skip is None else _int_arg(skip, "skip", 0, MAX_SKIP)
        order = ORDER_FIRST_TO_LAST if order is None else order
        if order not in (ORDER_FIRST_TO_LAST, ORDER_LAST_TO_FIRST):
            raise QueryError("order", f"must be {ORDER_FIRST_TO_LAST} or {ORDER_LAST_TO_FIRST}")
        if agg_type is not None and (not isinstance(agg_type, str) or len(agg_type) > 16):
            raise QueryError("agg_type", "must be one of avg, min, max, sum, count")
        return store.query(topic if isinstance(topic, str) else names, start_dt, end_dt, offset, rows, str(order),
                           agg_type or None, agg_period if agg_period not in ("", None) else None)

    def topic_list(self) -> list[str]:
        """At most query.max_topic_results topic names."""
        store, config = self._ready()
        return store.topic_list(config.query.max_topic_results)

    def topics_by_pattern(self, pattern: object) -> dict[str, int]:
        """{topic: id} of the topics matching a glob (not a regular expression), at most max_topic_results."""
        store, config = self._ready()
        return store.topics_by_pattern(pattern, config.query.max_topic_results)

    def topics_metadata(self, topics: object) -> dict[str, Any]:
        """{topic: metadata} of at most query.max_topics topics."""
        store, config = self._ready()
        names = check_topics(topics, config.query.max_topics, "topics")
        return store.topics_metadata(names)

    # --- M&V ------------------------------------------------------------------------------------------
    def mv_options(self, methods: object = None, interval_minutes: object = None, timezone: object = None,
                   include_plot: object = False, overrides: object = None) -> MvOptions:
        """The M&V options of one call: the configured defaults with the call's checked overrides."""
        _, config = self._ready()
        mv = config.mv
        if not isinstance(include_plot, bool):
            raise QueryError("include_plot", "must be true or false")
        return MvOptions(methods=_methods(methods, mv.methods), timezone=_zone(timezone, mv.timezone),
                         interval_minutes=_interval(interval_minutes, mv.interval_minutes),
                         meter_before_minutes=mv.meter_before_minutes, lookback_days=mv.lookback_days,
                         holidays=mv.holidays, meter_topics=mv.meter_topics,
                         plot_margin_minutes=PLOT_MARGIN_MINUTES if include_plot else None,
                         overrides=_merged(self._mv_presets(), _overrides(overrides)))

    def event_performance(self, event_id: object, methods: object = None, interval_minutes: object = None,
                          timezone: object = None, include_plot: object = False,
                          overrides: object = None, accuracy_days: object = CHOSEN_ACCURACY_DAYS) -> dict[str, Any]:
        """M&V of one event (see mv.performance), with the chosen method's accuracy backcast on `accuracy_days`
        non-event days (0: none); an unknown event is a not_found answer, not an exception."""
        store, _ = self._ready()
        event = check_id(event_id, "eventId")
        n_days = _int_arg(accuracy_days, "accuracy_days", 0, MAX_BACKCAST_DAYS)
        options = self.mv_options(methods, interval_minutes, timezone, include_plot, overrides)
        try:
            report = event_performance(store, event, options)
        except UnknownEvent as exc:
            return {"error": f"eventId: {exc}", "field": "eventId", "code": "not_found"}
        if n_days:
            report["accuracy"] = chosen_accuracy(store, event, options, n_days)
        return report

    def baseline(self, topic: object, start: object, end: object, baseline_method: object = CAISO_10IN10,
                 interval_minutes: object = None, timezone: object = None,
                 overrides: object = None) -> dict[str, Any]:
        """One method's baseline of a stored numeric topic over [start, end), at most MAX_BASELINE_DAYS long."""
        store, _ = self._ready()
        name = check_topic(topic).removeprefix(DEVICES_PREFIX)
        start_dt, end_dt = parse_query_time(start, "start"), parse_query_time(end, "end")
        if start_dt is None or end_dt is None:
            raise QueryError("start" if start_dt is None else "end", "is required")
        if not start_dt < end_dt <= start_dt + timedelta(days=MAX_BASELINE_DAYS):
            raise QueryError("end", f"must be after start and at most {MAX_BASELINE_DAYS} days after it")
        if baseline_method not in METHODS or baseline_method == VEN_REPORTED:
            raise QueryError("baseline_method", f"must be one of {', '.join(m for m in METHODS if m != VEN_REPORTED)}")
        options = self.mv_options(None, interval_minutes, timezone, False, overrides)
        return topic_baseline(store, name, start_dt, end_dt, str(baseline_method), options)

    def baseline_accuracy(self, event_id: object = None, topic: object = None, start: object = None,
                          end: object = None, days: object = 60, methods: object = None,
                          interval_minutes: object = None, timezone: object = None,
                          overrides: object = None) -> dict[str, Any]:
        """Backcast of the methods on non-event days at an event's hours (or start/end's), ranked by relative RMSE."""
        store, _ = self._ready()
        n_days = _int_arg(days, "days", 1, MAX_BACKCAST_DAYS)
        names = None if methods is None else [m for m in _methods(methods, ()) if m != VEN_REPORTED]
        if names is not None and not names:
            raise QueryError("methods", "must name a meter-data method")
        name = None if topic is None else check_topic(topic).removeprefix(DEVICES_PREFIX)
        options = self.mv_options(None, interval_minutes, timezone, False, overrides)
        if event_id is not None:
            if start is not None or end is not None:
                raise QueryError("start", "give an eventId or a start and end, not both")
            event = check_id(event_id, "eventId")
            try:
                return event_accuracy(store, event, options, n_days, names, name)
            except UnknownEvent as exc:
                return {"error": f"eventId: {exc}", "field": "eventId", "code": "not_found"}
        if name is None:
            raise QueryError("topic", "is required without an eventId")
        start_dt, end_dt = parse_query_time(start, "start"), parse_query_time(end, "end")
        if start_dt is None or end_dt is None:
            raise QueryError("start" if start_dt is None else "end", "is required without an eventId")
        if not start_dt < end_dt <= start_dt + timedelta(hours=24):
            raise QueryError("end", "must be after start and at most 24 hours after it")
        return site_accuracy(store, name, Window(start_dt, end_dt), options, n_days, names)

    def baseline_presets(self) -> dict[str, Any]:
        """Every baseline preset's parameters and source."""
        return {name: describe(spec) for name, spec in PRESETS.items()}

    def snapshot(self) -> dict[str, Any]:
        """Counts for health(): refused RPC arguments by RPC and argument, and failed RPCs."""
        return {"rpcRejects": self.rejects.snapshot(), "rpcFailures": self.db_errors}
