"""Time helpers: every timestamp on the wire is an ISO 8601 string in UTC."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
_EPOCH_CHARS = frozenset("0123456789.+-eE_")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """Render a datetime as ISO 8601 in UTC with a 'Z' suffix (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object) -> datetime:
    """Parse an ISO 8601 string (with or without zone, 'Z' accepted) or epoch seconds/milliseconds.

    A value without a zone is taken as UTC. Raises ValueError with the offending value on anything else.
    """
    if isinstance(value, datetime):
        return _bounded(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, bool):
        raise ValueError(f"expected a time, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("expected a time, got an integer out of range") from None
        return _from_epoch(seconds)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("expected a time, got an empty string")
        if _EPOCH_CHARS.issuperset(text):
            try:
                return _from_epoch(float(text))
            except ValueError:
                pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 time, got {value!r}") from None
        return _bounded(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    raise ValueError(f"expected a time, got {type(value).__name__}")


MIN_YEAR, MAX_YEAR = 1970, 2999


def _bounded(value: datetime) -> datetime:
    """Refuse times outside 1970-2999 (UTC), so arithmetic on them (a duration added) cannot overflow."""
    try:
        year = value.astimezone(UTC).year
    except (OverflowError, ValueError):
        year = value.year
    if not MIN_YEAR <= year <= MAX_YEAR or not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"time {value.isoformat()} is outside the years {MIN_YEAR}-{MAX_YEAR}")
    return value


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError(f"expected a time, got {seconds!r}")
    if seconds > 1e11:  # milliseconds since the epoch
        seconds /= 1000.0
    try:
        parsed = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"expected a time, got {seconds!r} (out of range)") from None
    return _bounded(parsed)


def seconds_until(when: datetime, now: datetime | None = None) -> float:
    """Seconds from now (or the given instant) until `when`; negative when it is past."""
    return (when - (now or utcnow())).total_seconds()


__all__ = ["UTC", "utcnow", "to_iso", "parse_time", "seconds_until", "timedelta"]
