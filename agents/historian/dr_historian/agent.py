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

from dr_common.config import ConfigError
from dr_common.rejects import RateLimitedLog
from dr_common.timeutil import utcnow
from dr_common.topics import DR_PREFIX, HistorianRpc
from dr_common.vip_repr import bound_message_repr
from dr_historian import __version__
from dr_historian.api import CHOSEN_ACCURACY_DAYS, HistorianApi, parse_mv_presets
from dr_historian.config import HistorianConfig, parse_config
from dr_historian.dr_records import convert
from dr_historian.mv.baselines import CAISO_10IN10
from dr_historian.schema import StoreError
from dr_historian.store import Store
from dr_historian.writer import Writer

_log = logging.getLogger(__name__)

BASE_KEYS = ("retry_period", "submit_size_limit", "max_time_publishing", "backup_storage_limit_gb",
             "backup_storage_report", "topic_replace_list", "gather_timing_data", "readonly", "capture_device_data",
             "capture_log_data", "capture_analysis_data", "capture_record_data", "message_publish_count",
             "storage_limit_gb", "sync_timestamp", "custom_topics", "device_data_filter", "all_platforms",
             "time_tolerance", "time_tolerance_topics", "cache_only_enabled")
BASE_DEFAULTS = {"retry_period": 5.0, "submit_size_limit": 2000, "max_time_publishing": 10.0,
                 "capture_log_data": False}
OWN_DEFAULTS: dict[str, Any] = {"connection": None, "connect_timeout_s": 5.0, "record_dr": True, "mv": {},
                                "query": {}, "mv_presets": {}}
_BAD_TEXT_MAX = 200


class HistorianAgent(BaseHistorian):
    """platform.historian: base-historian capture and cache, our store, checked and bounded RPCs."""

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
        self._bad_log = RateLimitedLog(_log, interval_s=60.0)
        self._mv_presets: dict[str, dict[str, Any]] = {}
        self._api = HistorianApi(lambda: self._store, lambda: self._config, mv_presets=lambda: self._mv_presets)
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
            presets = parse_mv_presets(configuration.get("mv_presets"))
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
        self._mv_presets = presets
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
            self._last_bad = error[:_BAD_TEXT_MAX]
            self._bad_log.warning(topic.split("/", 2)[1] if topic.count("/") else topic,
                                  "bad DR message from %s (%d so far): %s", sender[:_BAD_TEXT_MAX],
                                  self._bad_messages, error[:_BAD_TEXT_MAX])
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
        """Store one batch from the backup cache; the cache drops it only once committed."""
        if self._writer is None:
            return
        if self._writer.publish(to_publish_list):
            self.report_all_handled()

    def manage_db_size(self, history_limit_timestamp: Any, storage_limit_gb: Any) -> None:
        """Retention is not managed by this historian (see README)."""

    # --- queries (VOLTTRON historian API; checked in the greenlet, run off the gevent hub) -------------
    def _run(self, rpc: str, fn: Callable[[], Any]) -> Any:
        """One RPC through the API's guard, its database work in the hub's thread pool."""
        return self._api.guarded(rpc, lambda: gevent.get_hub().threadpool.apply(fn))

    def version(self) -> str:
        """The historian's version."""
        return __version__

    @RPC.export(HistorianRpc.QUERY)
    def query(self, topic: Any = None, start: Any = None, end: Any = None, agg_type: Any = None,
              agg_period: Any = None, skip: Any = 0, count: Any = None, order: Any = "FIRST_TO_LAST") -> dict[str, Any]:
        """VOLTTRON's historian query; `count` defaults to query.default_count, at most query.max_count."""
        return self._run(HistorianRpc.QUERY, lambda: self._api.query(topic, start, end, agg_type, agg_period, skip,
                                                                     count, order))

    @RPC.export(HistorianRpc.GET_TOPIC_LIST)
    def get_topic_list(self) -> list[str]:
        """Stored topic names (at most query.max_topic_results)."""
        return self._run(HistorianRpc.GET_TOPIC_LIST, self._api.topic_list)

    @RPC.export(HistorianRpc.GET_TOPICS_BY_PATTERN)
    def get_topics_by_pattern(self, topic_pattern: Any) -> dict[str, int]:
        """{topic: id} of the topics matching a glob pattern (`*`, `?`, `[AB]`; plain text: contains)."""
        return self._run(HistorianRpc.GET_TOPICS_BY_PATTERN, lambda: self._api.topics_by_pattern(topic_pattern))

    @RPC.export(HistorianRpc.GET_TOPICS_METADATA)
    def get_topics_metadata(self, topics: Any) -> dict[str, Any]:
        """{topic: metadata} of one topic or a list of topics."""
        return self._run(HistorianRpc.GET_TOPICS_METADATA, lambda: self._api.topics_metadata(topics))

    # the base class's abstract query hooks (its RPCs above are replaced, so only direct callers use these)
    def query_topic_list(self) -> list[str]:
        """See get_topic_list."""
        return self._api.topic_list()

    def query_topics_by_pattern(self, topic_pattern: str) -> dict[str, int]:
        """See get_topics_by_pattern."""
        return self._api.topics_by_pattern(topic_pattern)

    def query_topics_metadata(self, topics: Any) -> dict[str, Any]:
        """See get_topics_metadata."""
        return self._api.topics_metadata(topics)

    def query_aggregate_topics(self) -> list[Any]:
        """No aggregate tables: `query` aggregates on the fly with agg_type and agg_period."""
        return []

    def query_historian(self, topic: Any, start: datetime | None = None, end: datetime | None = None,
                        agg_type: str | None = None, agg_period: Any = None, skip: int = 0, count: int | None = None,
                        order: str | None = "FIRST_TO_LAST") -> dict[str, Any]:
        """See query."""
        return self._api.query(topic, start, end, agg_type, agg_period, skip, count, order)

    # --- M&V ------------------------------------------------------------------------------------------
    @RPC.export(HistorianRpc.EVENT_PERFORMANCE)
    def event_performance(self, event_id: Any, methods: Any = None, interval_minutes: Any = None,
                          timezone: Any = None, include_plot: Any = False, overrides: Any = None,
                          accuracy_days: Any = CHOSEN_ACCURACY_DAYS) -> dict[str, Any]:
        """Baseline and actual energy, average and peak reduction and percent of requested, per VEN, total and
        site meter, for each method (see dr_historian.mv.performance), and the chosen method's accuracy backcast
        on `accuracy_days` non-event days (`accuracy`; 0: none)."""
        return self._run(HistorianRpc.EVENT_PERFORMANCE, lambda: self._api.event_performance(
            event_id, methods, interval_minutes, timezone, include_plot, overrides, accuracy_days))

    @RPC.export(HistorianRpc.BASELINE)
    def baseline(self, topic: Any, start: Any, end: Any, baseline_method: Any = CAISO_10IN10,
                 interval_minutes: Any = None, timezone: Any = None, overrides: Any = None) -> dict[str, Any]:
        """One method's baseline of a stored numeric topic over [start, end), every recorded event day excluded.

        (The method argument is not called `method`: VOLTTRON's rpc.call(peer, method, ...) takes that name.)"""
        return self._run(HistorianRpc.BASELINE, lambda: self._api.baseline(topic, start, end, baseline_method,
                                                                           interval_minutes, timezone, overrides))

    @RPC.export(HistorianRpc.BASELINE_ACCURACY)
    def baseline_accuracy(self, event_id: Any = None, topic: Any = None, start: Any = None, end: Any = None,
                          days: Any = 60, methods: Any = None, interval_minutes: Any = None,
                          timezone: Any = None, overrides: Any = None) -> dict[str, Any]:
        """Accuracy of every baseline preset backcast on the non-event days before an event (or start/end), ranked
        by relative RMSE, with the configured method's figures (see dr_historian.mv.accuracy)."""
        return self._run(HistorianRpc.BASELINE_ACCURACY, lambda: self._api.baseline_accuracy(
            event_id, topic, start, end, days, methods, interval_minutes, timezone, overrides))

    @RPC.export(HistorianRpc.BASELINE_PRESETS)
    def baseline_presets(self) -> dict[str, Any]:
        """Every baseline preset's parameters and the program document it follows."""
        return self._run(HistorianRpc.BASELINE_PRESETS, self._api.baseline_presets)

    @RPC.export(HistorianRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        """Configuration, database and backlog state, write and refusal counts."""
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
            "unstorableReadings": stats.unstorable if stats else 0,
            "dbUnavailableForS": round(time.monotonic() - failing_since, 1) if failing_since else None,
            "lastDbError": (stats.last_error if stats else None) or self._setup_error,
            "setupError": self._setup_error,
            "drMessages": self._dr_messages, "badMessages": self._bad_messages, "lastBadMessage": self._last_bad,
            "cachedTopics": len(self._store.topics) if self._store else 0,
            **self._api.snapshot(),
        }


def main() -> None:
    """Start the historian agent (the console script of the distribution)."""
    bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
    vip_main(HistorianAgent, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
