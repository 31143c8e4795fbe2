"""platform.historian: VOLTTRON's base historian (subscriptions, backup cache, query RPC) on our SQLAlchemy store,
plus DR traffic recording and the M&V RPCs. Logic lives in the plain modules next to this one."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import gevent
from historian.base import BaseHistorian
from historian.base.base_historian import (
    STATUS_KEY_BACKLOGGED,
    STATUS_KEY_CACHE_COUNT,
    STATUS_KEY_CACHE_FULL,
    STATUS_KEY_PUBLISHING,
)
from volttron.client.vip.agent import RPC
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common.timeutil import parse_time, utcnow
from dr_common.vip_repr import bound_message_repr
from dr_historian import __version__
from dr_historian.config import ConfigError, HistorianConfig, parse_config
from dr_historian.dr_records import convert
from dr_historian.mv.baselines import CAISO_10IN10
from dr_historian.mv.performance import MvOptions, UnknownEvent, event_performance, topic_baseline
from dr_historian.mv.series import MvError
from dr_historian.store import QueryError, Store, StoreError
from dr_historian.writer import Writer

_log = logging.getLogger(__name__)

DR_PREFIX = "dr/"
BASE_KEYS = ("retry_period", "submit_size_limit", "max_time_publishing", "backup_storage_limit_gb",
             "backup_storage_report", "topic_replace_list", "gather_timing_data", "readonly", "capture_device_data",
             "capture_log_data", "capture_analysis_data", "capture_record_data", "message_publish_count",
             "storage_limit_gb", "sync_timestamp", "custom_topics", "device_data_filter", "all_platforms",
             "time_tolerance", "time_tolerance_topics", "cache_only_enabled")
BASE_DEFAULTS = {"retry_period": 5.0, "submit_size_limit": 2000, "max_time_publishing": 10.0,
                 "capture_log_data": False}
OWN_DEFAULTS: dict[str, Any] = {"connection": None, "connect_timeout_s": 5.0, "record_dr": True, "mv": {}}
_LOG_EVERY = 100


class HistorianAgent(BaseHistorian):
    def __init__(self, config_path: Any = None, **kwargs: Any) -> None:
        install = load_config(config_path) if config_path else {}
        base = {k: install[k] for k in BASE_KEYS if k in install}
        for key, value in BASE_DEFAULTS.items():
            base.setdefault(key, value)
        self._config: HistorianConfig | None = None
        self._config_error: str | None = None
        self._setup_error: str | None = None
        self._store: Store | None = None
        self._writer: Writer | None = None
        self._dr_subscribed = False
        self._bad_messages = 0
        self._last_bad: str | None = None
        self._dr_messages = 0
        super().__init__(**base, **kwargs)
        self.update_default_config({k: install.get(k, v) for k, v in OWN_DEFAULTS.items()})

    # --- configuration -------------------------------------------------------------------------------
    def configure(self, configuration: Mapping[str, Any]) -> None:
        """Called by the base class with the process thread stopped; it restarts the thread afterwards."""
        if configuration.get("history_limit_days") or configuration.get("storage_limit_gb"):
            _log.error("history_limit_days and storage_limit_gb are not supported by this historian; ignored")
            self._history_limit_days = None
            self._storage_limit_gb = None
        try:
            config = parse_config(configuration)
        except ConfigError as exc:
            self._config_error = str(exc)
            _log.error("historian configuration rejected, keeping the previous one (readings stay in the backup "
                       "cache until a valid configuration arrives): %s", exc)
            return
        self._config_error = None
        old = self._store
        if old is None or self._config is None or self._config.url != config.url \
                or self._config.connect_timeout_s != config.connect_timeout_s:
            self._store = Store(config.url, config.connect_timeout_s)
            self._writer = Writer(self._store)
            if old is not None:
                old.dispose()
        self._config = config
        _log.info("historian storing to %s", config.display_url)
        self._update_dr_subscription(config.record_dr)

    def _update_dr_subscription(self, wanted: bool) -> None:
        try:
            if wanted and not self._dr_subscribed:
                self.vip.pubsub.subscribe("pubsub", DR_PREFIX, self._capture_dr).get(timeout=5.0)
                self._dr_subscribed = True
            elif not wanted and self._dr_subscribed:
                self.vip.pubsub.unsubscribe("pubsub", DR_PREFIX, self._capture_dr).get(timeout=5.0)
                self._dr_subscribed = False
        except (gevent.Timeout, Exception) as exc:  # noqa: B014 - gevent.Timeout is a BaseException
            _log.error("cannot change the subscription to %s: %r", DR_PREFIX, exc)

    # --- capture (main greenlet) ---------------------------------------------------------------------
    def _capture_dr(self, peer: str, sender: str, bus: str, topic: str, headers: Mapping[str, Any],
                    message: Any) -> None:
        self._dr_messages += 1
        conversion = convert(topic, headers, message, utcnow())
        for error in conversion.errors:
            self._bad_messages += 1
            self._last_bad = error
            if self._bad_messages <= 10 or self._bad_messages % _LOG_EVERY == 0:
                _log.warning("bad DR message from %s (%d so far): %s", sender, self._bad_messages, error)
        for point in conversion.points:
            self._event_queue.put({"source": "dr", "topic": point.topic, "readings": [(point.ts, point.value)],
                                   "meta": dict(point.meta or {}), "headers": dict(headers or {})})

    # --- storage (process thread) --------------------------------------------------------------------
    def historian_setup(self) -> None:
        """Create the schema and load the topics (the base class retries every retry_period while this raises)."""
        if self._store is None:
            raise StoreError(f"no valid configuration: {self._config_error or 'not configured yet'}")
        try:
            self._store.setup()
        except StoreError as exc:
            self._setup_error = str(exc)
            raise
        self._setup_error = None

    def publish_to_historian(self, to_publish_list: list[dict[str, Any]]) -> None:
        if self._writer is None:
            return
        if self._writer.publish(to_publish_list):
            self.report_all_handled()

    def manage_db_size(self, history_limit_timestamp: Any, storage_limit_gb: Any) -> None:
        """Retention is not managed by this historian (see README)."""

    # --- queries (VOLTTRON historian API; run off the gevent hub) -------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._store is None:
            raise StoreError(f"historian is not configured: {self._config_error or 'no configuration yet'}")
        return gevent.get_hub().threadpool.apply(fn, args, kwargs)

    def version(self) -> str:
        return __version__

    def query_topic_list(self) -> list[str]:
        return self._call(lambda: self._store.topic_list())  # type: ignore[union-attr]

    def query_topics_by_pattern(self, topic_pattern: str) -> dict[str, int]:
        return self._call(lambda: self._store.topics_by_pattern(topic_pattern))  # type: ignore[union-attr]

    def query_topics_metadata(self, topics: Any) -> dict[str, Any]:
        return self._call(lambda: self._store.topics_metadata(topics))  # type: ignore[union-attr]

    def query_aggregate_topics(self) -> list[Any]:
        """No aggregate tables: `query` aggregates on the fly with agg_type and agg_period."""
        return []

    def query_historian(self, topic: Any, start: datetime | None = None, end: datetime | None = None,
                        agg_type: str | None = None, agg_period: Any = None, skip: int = 0, count: int | None = None,
                        order: str | None = "FIRST_TO_LAST") -> dict[str, Any]:
        store = self._store
        return self._call(lambda: store.query(topic, start, end, skip or 0, count,  # type: ignore[union-attr]
                                              order or "FIRST_TO_LAST", agg_type, agg_period))

    # --- M&V ------------------------------------------------------------------------------------------
    def _mv_options(self, methods: Any = None, interval_minutes: Any = None, timezone: Any = None,
                    include_plot: bool = False) -> MvOptions:
        mv = self._config.mv if self._config else None
        if mv is None:
            raise MvError("historian is not configured")
        if isinstance(methods, str):
            methods = [methods]
        return MvOptions(methods=tuple(methods or mv.methods), timezone=str(timezone or mv.timezone),
                         interval_minutes=int(interval_minutes or mv.interval_minutes),
                         meter_before_minutes=mv.meter_before_minutes, lookback_days=mv.lookback_days,
                         holidays=mv.holidays, meter_topics=mv.meter_topics,
                         plot_margin_minutes=120 if include_plot else None)

    @RPC.export
    def event_performance(self, event_id: str, methods: Any = None, interval_minutes: Any = None,
                          timezone: Any = None, include_plot: bool = False) -> dict[str, Any]:
        """Baseline and actual energy, average and peak reduction and percent of requested, per VEN, total and
        site meter, for each method (see dr_historian.mv.performance)."""
        options = self._mv_options(methods, interval_minutes, timezone, include_plot)
        try:
            return self._call(event_performance, self._store, str(event_id), options)
        except UnknownEvent as exc:
            return {"error": f"eventId: {exc}", "field": "eventId", "code": "not_found"}

    @RPC.export
    def baseline(self, topic: str, start: Any, end: Any, baseline_method: str = CAISO_10IN10,
                 interval_minutes: Any = None, timezone: Any = None) -> dict[str, Any]:
        """One method's baseline of a stored numeric topic over [start, end), every recorded event day excluded.

        (The method argument is not called `method`: VOLTTRON's rpc.call(peer, method, ...) takes that name.)"""
        options = self._mv_options(None, interval_minutes, timezone)
        try:
            start_dt, end_dt = parse_time(start), parse_time(end)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        return self._call(topic_baseline, self._store, str(topic).removeprefix("devices/"), start_dt, end_dt,
                          str(baseline_method), options)

    @RPC.export
    def health(self) -> dict[str, Any]:
        context = dict(self._current_status_context)
        stats = self._writer.stats if self._writer else None
        failing_since = stats.failing_since_monotonic if stats else None
        ok = (self._config_error is None and self._setup_error is None and self._store is not None
              and context.get(STATUS_KEY_PUBLISHING, False) and not context.get(STATUS_KEY_CACHE_FULL)
              and failing_since is None)
        return {
            "identity": self.core.identity, "version": __version__, "ok": bool(ok),
            "backend": self._config.backend if self._config else None,
            "database": self._config.display_url if self._config else None,
            "configError": self._config_error,
            "backlog": int(context.get(STATUS_KEY_CACHE_COUNT, 0)),
            "backlogged": bool(context.get(STATUS_KEY_BACKLOGGED, False)),
            "publishing": bool(context.get(STATUS_KEY_PUBLISHING, False)),
            "cacheFull": bool(context.get(STATUS_KEY_CACHE_FULL, False)),
            "readingsWritten": stats.readings if stats else 0,
            "batchesWritten": stats.batches if stats else 0,
            "writeFailures": stats.failures if stats else 0,
            "dbUnavailableForS": round(time.monotonic() - failing_since, 1) if failing_since else None,
            "lastDbError": (stats.last_error if stats else None) or self._setup_error,
            "setupError": self._setup_error,
            "drMessages": self._dr_messages, "badMessages": self._bad_messages, "lastBadMessage": self._last_bad,
        }


def main() -> None:
    bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
    vip_main(HistorianAgent, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
