"""What the status page shows live: the latest telemetry of every VEN, a short series per VEN and the
site's power (the sum over VENs) against its baseline.

Fed from the bus by the agent (`dr/telemetry/<venId>` one payload, `dr/batch/telemetry` many); read by the
Flask handlers. Plain Python, no platform import. A bad item is counted and reported, never raised.

Bounded: only VENs dr.vtn has registered are held once its registry is known (`set_registered`; before
that, any VEN, under the same cap), at most `max_vens` of them, and a VEN not heard from for `evict_s` is
dropped. Refused items are counted by reason (`unregistered`, `capacity`, the field a payload got wrong).

Per-VEN series are in the VEN's own time (`ts`). The site series is as dr.web observes it: one point per
message at the time of receipt, summing the latest telemetry of every VEN heard within `stale_s`. So a VEN
whose clock is off, or a backfilled batch, cannot bend the site chart.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from dr_common import topics
from dr_common.payloads import Telemetry
from dr_common.rejects import RejectCounter
from dr_common.schema import PayloadError, normalize_key
from dr_common.timeutil import to_iso

_VEN_KEYS = {"venid", "ven"}

# one point of a VEN's series: (ts epoch s, usedPowerKw, baselinePowerKw, shedPowerKw, eventId)
Point = tuple[float, float, float | None, float, str | None]

UNREGISTERED = "unregistered"
CAPACITY = "capacity"
ADDED_KEEP_S = 60.0  # a VEN registered through this API is kept against registry reads older than this


@dataclass
class LiveState:
    history_len: int = 720          # site points
    ven_history_len: int = 180      # points per VEN
    stale_s: float = 30.0           # a VEN not heard from for longer leaves the site sum (and shows offline)
    site_resolution_s: float = 1.0  # site points closer than this are merged into one
    max_vens: int = 10_000          # VENs held at most; telemetry of one more is refused
    evict_s: float = 3600.0         # a VEN not heard from for this long is dropped
    clock: Callable[[], float] = time.time
    registered: set[str] | None = None   # dr.vtn's venIds; None until dr.vtn has answered
    trusted_bridges: frozenset[str] = frozenset({topics.MQTT_BRIDGE_IDENTITY})  # may publish for any VEN
    vtn_identity: str = topics.VTN_IDENTITY   # publishes the telemetry of its OpenADR VENs (their reports)
    oadr_vens: frozenset[str] = frozenset()   # dr.vtn's VENs of transport oadr
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, deque] = field(default_factory=dict)
    site: deque = field(default_factory=deque)
    received: int = 0
    rejected: int = 0
    last_error: str | None = None
    last_reason: str | None = None
    evicted: int = 0
    rejects: RejectCounter = field(default_factory=RejectCounter)
    _next_evict: float = float("-inf")
    _added: dict[str, float] = field(default_factory=dict)   # venId -> when add_registered named it
    _heard: dict[str, float] = field(default_factory=dict)   # venId -> receipt time of its latest telemetry
    _point: dict[str, Point] = field(default_factory=dict)   # venId -> its latest point

    def __post_init__(self) -> None:
        self.site = deque(self.site, maxlen=self.history_len)

    # --- input ----------------------------------------------------------------------------------
    def on_message(self, topic: str, message: Any, sender: str | None = None) -> int:
        """One bus message: a per-VEN payload or a batch. Returns how many items were refused.

        `sender` is the bus identity that published it (None for in-process callers): a batch must come from a
        trusted bridge, a per-VEN payload from that VEN's own agent (`dr.ven.<venId>`) or a trusted bridge."""
        if sender is not None and not self.sender_may_publish(topic, sender):
            self._refuse(f"sender {sender[:80]!r} may not publish on {topic[:120]}", "sender")
            return 1
        if topic == topics.BUS_TELEMETRY_BATCH:
            items = message.get("items") if isinstance(message, Mapping) else None
            if not isinstance(items, list):
                self._refuse("field 'items': expected a batch object {\"items\": [...]}", "field:items")
                return 1
            return self.on_items(items)
        ven_id = topics.ven_id_from_topic(topic, topics.BUS_TELEMETRY_PREFIX)
        return self.on_items([message], ven_id)

    def sender_may_publish(self, topic: str, sender: str) -> bool:
        """True when the bus identity `sender` may publish telemetry on `topic` (identity from the transport)."""
        if sender in self.trusted_bridges:
            return True
        ven_id = topics.ven_id_from_topic(topic, topics.BUS_TELEMETRY_PREFIX)
        if ven_id is not None and sender == self.vtn_identity and ven_id in self.oadr_vens:
            return True   # an OpenADR VEN reports to dr.vtn over HTTP; dr.vtn publishes its telemetry
        return ven_id is not None and sender == topics.ven_identity(ven_id)

    def on_telemetry(self, message: Any, ven_id: str | None = None) -> bool:
        """Record one telemetry payload; True when it was usable."""
        return self.on_items([message], ven_id) == 0

    def on_items(self, items: Iterable[Any], ven_id: str | None = None) -> int:
        """Record telemetry items (the topic's venId fills in a missing one); returns how many were refused."""
        refused = 0
        now = self.clock()
        if now >= self._next_evict:
            self.evict(now)
        recorded = False
        for raw in items:
            try:
                telemetry = Telemetry.from_payload(_with_ven_id(raw, ven_id))
            except PayloadError as exc:
                refused += 1
                self._refuse(str(exc), f"field:{exc.field}")
                continue
            except (OverflowError, ValueError) as exc:  # e.g. an integer time beyond float range
                refused += 1
                self._refuse(f"unusable payload ({exc.__class__.__name__})", "payload")
                continue
            vid = telemetry.ven_id
            if ven_id is not None and vid != ven_id:  # dr/telemetry/<B> speaks for B only
                refused += 1
                self._refuse(f"field 'venId': {vid!r} on the topic of VEN {ven_id!r}", "field:venId")
                continue
            if self.registered is not None and vid not in self.registered:
                refused += 1
                self._refuse(f"VEN {vid!r} is not registered with dr.vtn", UNREGISTERED)
                continue
            if vid not in self._heard and len(self._heard) >= self.max_vens:
                refused += 1
                self._refuse(f"VEN {vid!r} refused: {self.max_vens} VENs held already", CAPACITY)
                continue
            self._record(telemetry, now)
            recorded = True
        if recorded:
            self._add_site_point(now)
        return refused

    def set_registered(self, ven_ids: Iterable[str], asked_at: float | None = None) -> int:
        """dr.vtn's registry, as read at `asked_at`: from now on only these VENs (and those registered through
        this API since) are held; the others are dropped (returns how many)."""
        registered = set(ven_ids)
        if asked_at is not None:
            registered.update(vid for vid, at in self._added.items() if at >= asked_at)
        horizon = self.clock() - ADDED_KEEP_S
        self._added = {vid: at for vid, at in self._added.items() if at >= horizon}
        self.registered = registered
        gone = [vid for vid in self._heard if vid not in registered]
        for vid in gone:
            self._drop(vid)
        if gone:
            self._add_site_point(self.clock())  # the site total counts registered VENs only
        return len(gone)

    def add_registered(self, ven_id: str) -> None:
        """One VEN just registered (through this API)."""
        if self.registered is not None:
            self.registered.add(ven_id)
        if len(self._added) < self.max_vens:
            self._added[ven_id] = self.clock()

    def evict(self, now: float | None = None) -> int:
        """Drop every VEN not heard from for `evict_s`; returns how many."""
        now = self.clock() if now is None else now
        horizon = now - self.evict_s
        stale = [vid for vid, heard in self._heard.items() if heard < horizon]
        for vid in stale:
            self._drop(vid)
        self.evicted += len(stale)
        self._next_evict = now + min(60.0, self.evict_s / 10)
        return len(stale)

    def _drop(self, ven_id: str) -> None:
        for table in (self.latest, self.history, self._heard, self._point):
            table.pop(ven_id, None)

    def _refuse(self, error: str, reason: str) -> None:
        self.rejected += 1
        self.last_error = error
        self.last_reason = reason
        self.rejects.count(reason)

    def _record(self, telemetry: Telemetry, now: float) -> None:
        ven_id = telemetry.ven_id
        ts = telemetry.ts.timestamp()
        self.received += 1
        point: Point = (ts, telemetry.used_power_kw, telemetry.baseline_power_kw, telemetry.shed_power_kw,
                        telemetry.event_id)
        series = self.history.get(ven_id)
        if series is None:
            series = self.history[ven_id] = deque(maxlen=self.ven_history_len)
        if series and ts < series[-1][0]:  # late: into the series in time order; the latest stays
            index = bisect.bisect_right([p[0] for p in series], ts)
            if len(series) == series.maxlen:
                if index == 0:
                    return
                series.popleft()
                index -= 1
            series.insert(index, point)
            return
        series.append(point)
        self.latest[ven_id] = telemetry.to_payload()
        self._heard[ven_id] = now
        self._point[ven_id] = point

    def _add_site_point(self, now: float) -> None:
        used = baseline = shed = 0.0
        count = 0
        horizon = now - self.stale_s
        for ven_id, (_, v_used, v_base, v_shed, _) in self._point.items():
            if self._heard[ven_id] < horizon:
                continue
            count += 1
            used += v_used
            shed += v_shed
            baseline += v_base if v_base is not None else v_used + v_shed
        point = (now, round(used, 4), round(baseline, 4), round(shed, 4), count)
        if self.site and now - self.site[-1][0] < self.site_resolution_s:
            self.site[-1] = point
        else:
            self.site.append(point)

    # --- output ---------------------------------------------------------------------------------
    def series(self, ven_id: str, since: float | None = None) -> list[dict[str, Any]]:
        """One VEN's points, oldest first."""
        return [{"ts": to_iso_epoch(ts), "usedPowerKw": used, "baselinePowerKw": base, "shedPowerKw": shed,
                 "eventId": event} for ts, used, base, shed, event in self.history.get(ven_id, ())
                if since is None or ts >= since]

    def site_series(self, since: float | None = None) -> list[dict[str, Any]]:
        """The site's points, oldest first."""
        return [{"ts": to_iso_epoch(ts), "usedPowerKw": used, "baselinePowerKw": base, "shedPowerKw": shed,
                 "vens": count} for ts, used, base, shed, count in self.site if since is None or ts >= since]

    def is_fresh(self, ven_id: str, now: float | None = None) -> bool:
        """True when the VEN was heard from within `stale_s`."""
        heard = self._heard.get(ven_id)
        return heard is not None and (now if now is not None else self.clock()) - heard <= self.stale_s

    def counters(self) -> dict[str, Any]:
        """What health reports about the live state."""
        return {"telemetryReceived": self.received, "telemetryRejected": self.rejected,
                "telemetryRejectedByReason": self.rejects.snapshot()["byReason"], "lastError": self.last_error,
                "vensSeen": len(self.latest), "vensEvicted": self.evicted,
                "registryKnown": self.registered is not None}


def to_iso_epoch(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC."""
    return to_iso(datetime.fromtimestamp(ts, timezone.utc))


def _with_ven_id(raw: object, ven_id: str | None) -> object:
    """A per-VEN topic names the VEN; the payload may leave venId out."""
    if ven_id is None or not isinstance(raw, Mapping):
        return raw
    if any(isinstance(key, str) and normalize_key(key) in _VEN_KEYS for key in raw):
        return raw
    return {**raw, "venId": ven_id}
