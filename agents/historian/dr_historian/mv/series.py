"""A load series as fixed-width buckets of (sum, count) of readings, and the interval grid of an event.

The demand of an interval is the mean of the readings in it (meters and VENs report at a fixed rate). Buckets
come from the historian's SQL aggregation (`Store.interval_sums`) or from readings directly (tests, scripts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
MEAN_CACHE_SIZE = 200_000  # interval means kept per series (the presets of one event ask for the same ones)


class MvError(ValueError):
    """An M&V calculation that cannot be done (the message says why)."""


def bucket_seconds(interval_s: int) -> int:
    """A bucket width that fits every local interval boundary (UTC offsets are multiples of 15 minutes)."""
    return math.gcd(int(interval_s), 900)


@dataclass(frozen=True)
class Window:
    """A [start, end) time window."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MvError("window times must be timezone-aware")
        if self.end <= self.start:
            raise MvError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")

    @property
    def hours(self) -> float:
        """The window's length in hours."""
        return (self.end - self.start).total_seconds() / 3600.0


class LoadSeries:
    """Readings of one point summed per bucket of `bucket_s` seconds (bucket key: its start in epoch seconds)."""

    def __init__(self, buckets: Iterable[tuple[int, float, int]], bucket_s: int) -> None:
        self.bucket_s = int(bucket_s)
        self._sums: dict[int, tuple[float, int]] = {}
        self._means: dict[tuple[int, int], float | None] = {}  # the series never changes: means are reused
        for start, total, count in buckets:
            if count:
                if start % self.bucket_s:
                    raise MvError(f"bucket start {start} is not a multiple of {self.bucket_s} s")
                old = self._sums.get(start, (0.0, 0))
                self._sums[start] = (old[0] + total, old[1] + count)

    @classmethod
    def from_readings(cls, readings: Iterable[tuple[datetime, float]], bucket_s: int) -> LoadSeries:
        """A series from (time, kW) readings."""
        sums: dict[int, tuple[float, int]] = {}
        for ts, value in readings:
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = int(ts.timestamp()) // bucket_s * bucket_s
            old = sums.get(key, (0.0, 0))
            sums[key] = (old[0] + float(value), old[1] + 1)
        return cls(((k, s, n) for k, (s, n) in sums.items()), bucket_s)

    @classmethod
    def from_interval_means(cls, means: Mapping[datetime, float], bucket_s: int) -> LoadSeries:
        """One reading per given instant (hand-made cases: {interval start: kW})."""
        return cls.from_readings(means.items(), bucket_s)

    def __len__(self) -> int:
        return len(self._sums)

    def mean(self, start: datetime, end: datetime) -> float | None:
        """Mean of the readings of the buckets that start in [start, end), or None when there are none."""
        step = self.bucket_s
        first = -(-int(start.timestamp()) // step) * step
        last = int(end.timestamp())
        key = (first, last)
        cache = self._means
        if key in cache:
            return cache[key]
        if len(cache) >= MEAN_CACHE_SIZE:
            cache.clear()
        cache[key] = value = self._mean(first, last)
        return value

    def _mean(self, first: int, last: int) -> float | None:
        step = self.bucket_s
        total = 0.0
        count = 0
        get = self._sums.get
        for key in range(first, last, step):
            hit = get(key)
            if hit is not None:
                total += hit[0]
                count += hit[1]
        return total / count if count else None

    def means(self, grid: Sequence[Window]) -> list[float | None]:
        """The mean demand of each window (None where there is no data)."""
        return [self.mean(w.start, w.end) for w in grid]


def floor_local(ts: datetime, tz: ZoneInfo, interval_s: int) -> datetime:
    """`ts` floored to the interval grid of local wall-clock time (intervals divide a day)."""
    local = ts.astimezone(tz)
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    floored = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
        seconds=seconds - seconds % interval_s)
    return floored.astimezone(UTC)


def interval_grid(window: Window, tz: ZoneInfo, interval_s: int) -> list[Window]:
    """Intervals of `interval_s` aligned to local time that cover the window."""
    start = floor_local(window.start, tz, interval_s)
    grid = []
    while start < window.end:
        grid.append(Window(start, start + timedelta(seconds=interval_s)))
        start += timedelta(seconds=interval_s)
    return grid


def snap(ts: datetime, step_s: int) -> datetime:
    """`ts` rounded to the nearest multiple of step_s seconds (commands arrive a little after the minute)."""
    epoch = ts.timestamp()
    return datetime.fromtimestamp(round(epoch / step_s) * step_s, UTC)


def day_windows(span: Window, tz: ZoneInfo, days: int) -> list[tuple[datetime, datetime]]:
    """The same local wall-clock span on the event day and each of the `days` days before it (newest first):
    all that day-matching baselines read."""
    start_local, end_local = span.start.astimezone(tz), span.end.astimezone(tz)
    out = []
    for n in range(days + 1):
        shift = timedelta(days=n)
        start = datetime.combine(start_local.date() - shift, start_local.time().replace(tzinfo=None), tzinfo=tz)
        end = datetime.combine(end_local.date() - shift, end_local.time().replace(tzinfo=None), tzinfo=tz)
        out.append((start.astimezone(UTC), end.astimezone(UTC)))
    return out
